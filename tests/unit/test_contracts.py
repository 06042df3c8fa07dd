"""Contracts with one owner: defaults, method and adapter names, the package's import graph, commands."""

import ast
import dataclasses
import importlib
import inspect
import sys
from pathlib import Path

import pytest
import yaml

import clipmerge
from clipmerge import layout
from clipmerge.cli import COMMANDS, build_parser, command_module
from clipmerge.data.eval_sets import ADAPTERS
from clipmerge.data.layouts import LAYOUTS
from clipmerge.merging.registry import REGISTRY
from clipmerge.training.recipe import Recipe
from clipmerge.workflow import code_inputs
from clipmerge.workflow.plan import PICK_KEYS

REPO = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())["properties"]
PACKAGE = Path(clipmerge.__file__).resolve().parent


def schema_section(*keys):
    node = SCHEMA
    for key in keys:
        node = node[key] if key in node else node["properties"][key]
    return node["properties"]


def command_defaults(command):
    """``{dest: default}`` of a subcommand's parser."""
    parser = build_parser([command])
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    return {a.dest: a.default for a in sub._actions if a.dest != "help"}


# (schema section, command, schema keys that are not flags of the command)
SECTIONS = [
    (("world",), "make-world", set()),
    (("pretrain",), "pretrain", set()),
    (("finetune",), "finetune", {"seeds"}),
    (("finetune",), "periodic", {"seeds", "gpus"}),  # periodic's ranks are its own section's gpus
    (("merge", "model_stock_periodic"), "periodic", {"seeds"}),
    (("merge", "greedy_soup"), "greedy-soup", set(PICK_KEYS)),  # its fine-tunes are the job's --inputs
    (("eval",), "evaluate", {"id", "shifts", "sets", "jobs", "cache"}),  # jobs, cache: the DAG's shape
    (("train",), "split-heldout", {"data", "heldout_per_class"}),
    (("uncertainty",), "table", set()),
    (("uncertainty",), "plots", set()),
    (("uncertainty",), "log-mlflow", set()),
]


@pytest.mark.parametrize(("section", "command", "not_flags"), SECTIONS, ids=lambda v: str(v))
def test_schema_defaults_are_the_commands_defaults(section, command, not_flags):
    defaults = command_defaults(command)
    # train.heldout_* are split-heldout's --seed, --mask; a training section's gpus is the job's --ranks
    renamed = {"heldout_seed": "seed", "heldout_mask": "mask", "gpus": "ranks"}
    for key, spec in schema_section(*section).items():
        if key in not_flags:
            continue
        dest = renamed.get(key, key)
        assert dest in defaults, f"{'.'.join(section)}.{key} is no flag of `clipmerge {command}`"
        if "default" in spec:
            assert defaults[dest] == spec["default"], f"{'.'.join(section)}.{key}"


def test_every_recipe_field_is_a_finetune_key_with_the_same_default():
    keys = schema_section("finetune")
    for field in dataclasses.fields(Recipe):
        assert field.name in keys, f"finetune.{field.name} missing from the schema"
        assert keys[field.name].get("default") == field.default, field.name


def test_wise_ft_alpha_default_is_the_schemas():
    from clipmerge.commands.merge import WISE_FT_ALPHA
    from clipmerge.workflow import plan

    assert schema_section("merge", "wise_ft")["alphas"]["default"] == [WISE_FT_ALPHA]
    assert plan.wise_ft_cfg({"merge": {}, "finetune": {"seeds": [3]}})["alphas"] == [WISE_FT_ALPHA]


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare", "dare_ties", "slerp"])
def test_task_vector_merge_defaults_are_the_schemas(method):
    # One flag (--scale) serves methods whose defaults differ, so the flags default to None and
    # `clipmerge merge` fills a missing one from METHOD_DEFAULTS (as --alpha from WISE_FT_ALPHA): every
    # schema key but the input pickers is a flag, and schema, command and the method's function agree.
    from clipmerge.commands.merge import METHOD_DEFAULTS

    keys = {k: spec for k, spec in schema_section("merge", method).items() if k not in PICK_KEYS}
    flags = command_defaults("merge")
    assert all(key in flags for key in keys), f"merge.{method}: {set(keys) - set(flags)} are no flags"
    assert all("default" in spec for spec in keys.values()), f"merge.{method}: a key without a default"
    defaults = {k: spec["default"] for k, spec in keys.items()}
    assert METHOD_DEFAULTS[method] == defaults
    for function in (REGISTRY[method].function, REGISTRY[method].merge_tensor):
        parameters = inspect.signature(function).parameters
        assert {k: parameters[k].default for k in defaults} == defaults, function


def test_method_names_have_one_source():
    assert SCHEMA["merge"]["properties"]["methods"]["items"]["enum"] == layout.METHOD_NAMES
    assert set(REGISTRY) == set(layout.METHOD_NAMES) - {"model_stock_periodic"}
    for method in REGISTRY.values():
        assert method.module.startswith("clipmerge.merging.") and code_inputs.module_file(method.module)


def test_adapter_names_have_one_source():
    schema_adapters = SCHEMA["eval"]["properties"]["sets"]["additionalProperties"]["properties"]["adapter"]["enum"]
    assert sorted(schema_adapters) == sorted(ADAPTERS) == sorted(set(LAYOUTS) - {"train"})


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


MODULES = sorted(module_name(p) for p in PACKAGE.rglob("*.py"))


def test_the_package_has_no_import_cycle():
    # Every import (function-level ones too), parent packages left out: they run first, not in a circle.
    graph = {m: {d for d in code_inputs.direct_imports(m) if d in MODULES and not m.startswith(d + ".")}
             for m in MODULES}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in MODULES:
        if module not in index:
            visit(module)
    assert cycles == []


def test_packages_import_none_of_their_modules():
    # A package __init__ that imported its modules would make every importer depend on all of them.
    for init in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        assert not [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)], init


def test_every_command_is_a_thin_module_in_commands():
    shared = {"training_args", "result_args"}  # argument groups two commands share
    names = {p.stem for p in (PACKAGE / "commands").glob("*.py")} - {"__init__"}
    assert names == {c.replace("-", "_") for c in COMMANDS} | shared
    for command in COMMANDS:
        module = importlib.import_module(command_module(command))
        assert callable(module.configure) and callable(module.run), command
    # Library modules know nothing about argparse: no parser is configured outside commands/.
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name != "commands" and path.name != "cli.py":
            assert "add_argument(" not in path.read_text(), path


def test_static_imports_cover_what_each_loaded_module_refers_to():
    # Independent of the AST reading: after importing every command, each clipmerge module's globals
    # may only refer to clipmerge modules (or their functions and classes) that it imports statically.
    for command in COMMANDS:
        importlib.import_module(command_module(command))
    loaded = {name: m for name, m in sys.modules.items() if name.split(".")[0] == "clipmerge" and m is not None}
    for name, module in loaded.items():
        referred = set()
        for value in vars(module).values():
            if inspect.ismodule(value) and not value.__name__.startswith(name + "."):  # not a package's own
                referred.add(value.__name__)
            elif inspect.isfunction(value) or inspect.isclass(value):
                referred.add(value.__module__)
        referred = {r for r in referred if r.split(".")[0] == "clipmerge"} - {name}
        assert referred <= code_inputs.direct_imports(name), (name, referred - code_inputs.direct_imports(name))
    assert {command_module(c) for c in COMMANDS} <= set(loaded)


def test_code_inputs_of_a_merge_hold_only_its_own_method():
    stock = code_inputs.code_inputs("merge", REGISTRY["model_stock"].module)
    names = {Path(p).relative_to(PACKAGE).as_posix() for p in stock}
    assert {"merging/model_stock.py", "merging/driver.py", "weights/streaming.py", "layout.py"} <= names
    assert not {"merging/uniform_soup.py", "merging/wise_ft.py", "merging/greedy_soup.py", "cli.py"} & names
    assert not any(n.startswith(("models/", "training/", "data/")) for n in names)  # no torch model code


def test_code_inputs_include_the_package_data_a_module_reads():
    names = {Path(p).relative_to(PACKAGE).as_posix() for p in code_inputs.code_inputs("evaluate")}
    assert "data/metadata/imagenet_r_class_sublist.txt" in names
    assert "models/model_configs/clipmerge-tiny.json" in names
    assert "data/metadata/PROVENANCE.md" not in names  # notes are not code
    assert not any(n.startswith(("training/", "merging/", "tracking/", "reporting/")) for n in names)


def test_layout_parses_the_ids_it_builds():
    for model in ["zeroshot", layout.finetune_id(12), layout.wise_ft_id(0.25), *layout.METHOD_NAMES[:-1]]:
        parsed = layout.parse_model_id(model)
        assert parsed.model == model
    assert layout.parse_model_id(layout.finetune_id(12)).seed == 12
    assert layout.parse_model_id(layout.wise_ft_id(0.25)).alpha == 0.25
    assert layout.parse_eval_result(layout.eval_result("model_stock", "v2", "demo")) == ("model_stock", "v2")
    assert layout.benchmarked_model(layout.model_benchmark("greedy_soup", "demo")) == "greedy_soup"
    assert layout.benchmarked_model(layout.benchmark("evaluate", "zeroshot/v2", "demo")) is None
    assert layout.benchmarked_rule(layout.benchmark("evaluate", "zeroshot/v2", "demo")) == "evaluate"
    with pytest.raises(clipmerge.errors.ClipmergeError, match="model id 'seed0'"):
        layout.parse_model_id("seed0")
