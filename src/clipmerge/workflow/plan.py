"""What the workflow builds, derived from the validated config. Pure Python: no torch, so the
Snakemake DAG builds fast. rules/common.smk calls these; tests/unit/test_plan.py checks them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from clipmerge import layout
from clipmerge.data.layouts import LAYOUTS
from clipmerge.errors import ClipmergeError

# Config keys that never change a result, so they are kept out of a rule's params (a params change
# reruns the job): fine-tuning's seeds are the {seed} wildcard, checkpoint_every reaches the trainer
# as a resource.
NOT_PARAMS = {"finetune": {"seeds", "checkpoint_every"}, "model_stock_periodic": {"seeds"}}


def uses_world(config: dict) -> bool:
    """The embedded demo pre-trains on its own generated world."""
    return config["model"]["pretrained"] == "demo"


def finetune_ids(config: dict) -> list[str]:
    return [layout.finetune_id(s) for s in config["finetune"]["seeds"]]


def merged_ids(config: dict) -> list[str]:
    ids = []
    for method in config["merge"]["methods"]:
        if method == layout.WISE_FT:
            ids += [layout.wise_ft_id(a) for a in wise_ft_cfg(config)["alphas"]]
        else:
            ids.append(method)
    return ids


def model_ids(config: dict) -> list[str]:
    """Every model the study evaluates, in table order."""
    return [layout.ZEROSHOT, *finetune_ids(config), *merged_ids(config)]


def method_seeds(config: dict, method: str) -> list[int]:
    """Seeds feeding a merge; default the first two fine-tunes (as in the paper). Must be fine-tuned."""
    all_seeds = config["finetune"]["seeds"]
    seeds = config["merge"].get(method, {}).get("seeds", all_seeds[:2])
    missing = [s for s in seeds if s not in all_seeds]
    if missing:
        raise ClipmergeError(f"merge.{method}.seeds: {missing} are not in finetune.seeds {all_seeds}")
    if len(seeds) < 2:
        raise ClipmergeError(f"merge.{method}: needs at least 2 fine-tuned seeds, got {seeds}")
    return seeds


def wise_ft_cfg(config: dict) -> dict:
    cfg = dict(config["merge"].get("wise_ft", {}))
    cfg.setdefault("alphas", [0.5])
    cfg.setdefault("seed", config["finetune"]["seeds"][0])
    if cfg["seed"] not in config["finetune"]["seeds"]:
        raise ClipmergeError(f"merge.wise_ft.seed: {cfg['seed']} is not in finetune.seeds")
    return cfg


def check_methods(config: dict) -> None:
    """Reject a seed list a chosen merge cannot use (before any job runs)."""
    methods = config["merge"]["methods"]
    if {"uniform_soup", "greedy_soup"} & set(methods) and len(config["finetune"]["seeds"]) < 2:
        raise ClipmergeError("merge.methods: uniform_soup/greedy_soup need at least 2 finetune.seeds")
    for method in ("model_stock", "model_stock_periodic"):
        if method in methods:
            method_seeds(config, method)
    if layout.WISE_FT in methods:
        wise_ft_cfg(config)


def cli_flags(section: dict, exclude=frozenset()) -> str:
    """A config section as CLI flags: {"lr": 1e-4, "reset_optimizer": true} -> "--lr 0.0001 --reset-optimizer"."""
    flags = []
    for key in sorted(section):
        if key in exclude:
            continue
        value, flag = section[key], "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags += [flag] if value else []
        elif isinstance(value, (list, tuple)):
            flags += [flag, *map(str, value)]
        else:
            flags += [flag, str(value)]
    return " ".join(flags)


def result_flags(config: dict, section: str) -> str:
    """The flags of a config section that define a result (a rule's params): NOT_PARAMS left out."""
    values = config["merge"].get(section, {}) if section in layout.METHOD_NAMES else config.get(section, {})
    return cli_flags(values, exclude=NOT_PARAMS.get(section, frozenset()))


def dataset_root(spec: dict, study: str) -> str:
    """Root folder of a dataset entry: an external root or a split of the demo world."""
    return spec["root"] if "root" in spec else layout.world_split(spec["world_split"], study)


def loader_workers(threads: int) -> int:
    """DataLoader workers of an evaluation job given its ``threads`` cores. With one core the images are
    decoded in the job's own process: a worker would compete with the model for that core and cost a
    fork per set (2.4 of the 9.7 CPU-seconds of a demo job). Workers never change a result."""
    return threads if threads > 1 else 0


def eval_set_flags(config: dict, study: str, model: str, sets: list[str], cache: bool) -> str:
    """`clipmerge evaluate` flags for ``model`` on ``sets``: a ``--set`` per set (name, adapter, root, the
    result file) and, with the cache on, a ``--cache`` per set."""
    flags = []
    for name in sets:
        spec = config["eval"]["sets"][name]
        root, out = dataset_root(spec, study), layout.eval_result(model, name, study)
        flags.append(f"--set {name} {spec['adapter']} {root} {out}")
        if cache:
            flags.append(f"--cache {name} {layout.eval_cache(name, study)}")
    return " ".join(flags)


def check_roots(config: dict) -> None:
    """External dataset roots must exist before anything runs; the error names the key and layout."""
    entries = [("train.data", "train", config["train"]["data"])]
    entries += [(f"eval.sets.{n}", s["adapter"], s) for n, s in config["eval"]["sets"].items()]
    for key, adapter, spec in entries:
        if "world_split" in spec:
            if not uses_world(config):
                raise ClipmergeError(f"{key}.world_split: only the demo (model.pretrained: demo) has a world")
            continue
        if not Path(spec["root"]).is_dir():
            raise ClipmergeError(f"{key}.root: {spec['root']!r} does not exist; expected layout {LAYOUTS[adapter]}")
    sets = config["eval"]["sets"]
    for key in [config["eval"]["id"], *config["eval"]["shifts"]]:
        if key not in sets:
            raise ClipmergeError(f"eval: {key!r} is named in eval.id/eval.shifts but not defined in eval.sets")


def plot_names(config: dict) -> list[str]:
    """The plots that apply to the chosen methods (the ID-vs-shifts scatter always does)."""
    methods = config["merge"]["methods"]
    optional = {"wise_ft": "wise_ft_curve", "model_stock": "model_stock_ratios", "greedy_soup": "greedy_soup"}
    return ["id_vs_shifts", *(plot for method, plot in optional.items() if method in methods)]


def config_hash(config: dict, model: str) -> str:
    """Short hash of exactly the config sections that define ``model`` (its MLflow provenance tag), so
    changing one stage's keys changes only the hashes of the models that depend on it."""
    parsed = layout.parse_model_id(model)
    sections = {key: config.get(key) for key in ("model", "world", "pretrain", "zeroshot")}
    if parsed.kind != layout.ZEROSHOT:
        sections["train"] = config["train"]
        sections["finetune"] = {k: v for k, v in config["finetune"].items() if k not in NOT_PARAMS["finetune"]}
    if parsed.kind == layout.FINETUNE:
        sections["seed"] = parsed.seed
    elif parsed.kind == layout.WISE_FT:
        sections["merge"] = {"alpha": parsed.alpha, "seed": wise_ft_cfg(config)["seed"]}
    elif parsed.kind != layout.ZEROSHOT:
        sections["merge"] = {"method": model, **config["merge"].get(model, {})}
        if model in ("uniform_soup", "greedy_soup"):
            sections["merge"]["seeds"] = config["finetune"]["seeds"]
    blob = json.dumps(sections, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
