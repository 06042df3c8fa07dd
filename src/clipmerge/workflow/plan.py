"""What the workflow builds, derived from the validated config. Pure Python: no torch, so the
Snakemake DAG builds fast. rules/common.smk calls these; tests/unit/test_plan.py checks them."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from clipmerge import layout
from clipmerge.data.layouts import LAYOUTS
from clipmerge.errors import ClipmergeError
from clipmerge.training import sweep
from clipmerge.training.recipe import Recipe

# Config keys that change no result: how often the resumable state is saved, and the GPUs (ranks) of a
# training job, whose results agree to rounding. They reach the trainer as resources.
RESOURCE_KEYS = {"finetune": {"checkpoint_every", "gpus"}, "model_stock_periodic": {"gpus"}}
# Keys kept out of a rule's params (a params change reruns the job): those, and the seeds, which make a
# fine-tune's model id (the {finetune} wildcard) and are a param of their own for periodic Model Stock.
NOT_PARAMS = {section: keys | {"seeds"} for section, keys in RESOURCE_KEYS.items()}
# The task-vector merges around the zero-shot model (clipmerge.merging.task_arithmetic, ties, dare,
# dare_ties): they combine every fine-tune unless their section picks some. SLERP takes exactly two.
TASK_VECTOR_MERGES = ("task_arithmetic", "ties", "dare", "dare_ties")
SOUPS = ("uniform_soup", "greedy_soup")
PICKED_INPUTS = (*SOUPS, "model_stock", *TASK_VECTOR_MERGES, "slerp")  # merges whose section may pick fine-tunes
# How a section picks its fine-tunes (pick_ingredients); they are the rule's inputs, not params.
PICK_KEYS = ("models", "seeds", "variants", "ingredients")
NOT_PARAMS.update({method: set(PICK_KEYS) for method in PICKED_INPUTS})


def uses_world(config: dict) -> bool:
    """The embedded demo pre-trains on its own generated world."""
    return config["model"]["pretrained"] == "demo"


def finetune_ids(config: dict) -> list[str]:
    """The fine-tunes this workflow trains with the ``finetune`` recipe, one per seed."""
    return [layout.finetune_id(s) for s in config["finetune"]["seeds"]]


def sweep_variants(config: dict) -> list[dict]:
    """The recipe overrides of each variant of the hyper-parameter sweep (config ``sweep``; none without
    one), in index order: explicit, or drawn from the space by (sweep seed, index)."""
    if "sweep" not in config:
        return []
    return [dict(v) for v in _variants(json.dumps(config["sweep"], sort_keys=True))]


@functools.lru_cache(maxsize=8)
def _variants(sweep_json: str) -> tuple[dict, ...]:
    """sweep.variants of a sweep section, drawn once per section: every job's params and every model's
    config hash ask for them while Snakemake builds the DAG (N variants would draw N² times)."""
    return tuple(sweep.variants(json.loads(sweep_json)))


def sweep_ids(config: dict) -> list[str]:
    """The sweep's fine-tunes, ``finetune_hp<k>``."""
    return [layout.sweep_id(k) for k in range(len(sweep_variants(config)))]


def trained_ids(config: dict) -> list[str]:
    """The fine-tunes rule finetune trains: one per seed, then one per sweep variant."""
    return [*finetune_ids(config), *sweep_ids(config)]


def training_seed(config: dict, model: str) -> int:
    """The seed (data order, augmentation and mixup draws) of a trained fine-tune: ``finetune_seed<k>``'s
    k; a sweep variant's own index, unless an explicit variant sets ``seed``."""
    parsed = layout.parse_model_id(model)
    if parsed.kind == layout.FINETUNE:
        return parsed.seed
    return sweep_variants(config)[parsed.variant].get(sweep.SEED_KEY, parsed.variant)


def base_recipe(config: dict) -> dict:
    """The ``finetune`` keys that define a fine-tune (NOT_PARAMS left out): the seeds' recipe."""
    return {k: v for k, v in config["finetune"].items() if k not in NOT_PARAMS["finetune"]}


def recipe_section(config: dict, model: str) -> dict:
    """The recipe keys of a trained fine-tune: the seeds' recipe, a sweep variant's overrides applied
    (its rule's flags and its provenance)."""
    section = base_recipe(config)
    parsed = layout.parse_model_id(model)
    if parsed.kind == layout.SWEEP:
        overrides = sweep_variants(config)[parsed.variant]
        section |= {k: v for k, v in overrides.items() if k != sweep.SEED_KEY}
    return section


def recipe_flags(config: dict, model: str) -> str:
    """`clipmerge finetune` recipe flags of a trained fine-tune (seed or sweep variant)."""
    return cli_flags(recipe_section(config, model))


def check_sweep(config: dict) -> None:
    """Every variant's recipe is valid and means what it says, before any job runs.

    Raises:
        ClipmergeError: naming the variant or the space key.
    """
    if "sweep" not in config:
        return
    cfg = config["sweep"]
    searched = set(cfg.get("space", sweep.MODEL_SOUPS_SPACE)) if isinstance(cfg["variants"], int) else set()
    if "steps" in config["finetune"] and "epochs" in searched:
        raise ClipmergeError("sweep.space.epochs: finetune.steps is set and overrides epochs; remove one of them")
    for model in sweep_ids(config):
        sweep.check_recipe(recipe_section(config, model), f"sweep variant {model}")


def import_names(config: dict) -> list[str]:
    """The names of the fine-tunes made elsewhere (config ``imports``), in config order."""
    return list(config.get("imports", {}).get("names", []))


def imported_ids(config: dict) -> list[str]:
    return [layout.imported_id(name) for name in import_names(config)]


def import_source(config: dict, name: str) -> str:
    """The file an imported model is converted from: ``imports.files`` with ``{name}`` filled in."""
    return config["imports"]["files"].format(name=name)


def import_hparams(config: dict) -> dict[str, dict]:
    """``imports.hparams`` (model-soups' hparam_info.json: name -> its hyper-parameters), read once at
    parse time so each model's entry is that model's param: editing one entry re-converts one model."""
    path = config.get("imports", {}).get("hparams")
    if path is None:
        return {}
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ClipmergeError(f"imports.hparams: {path}: not a readable JSON file ({e})") from e
    if not isinstance(table, dict) or not all(isinstance(v, dict) for v in table.values()):
        raise ClipmergeError(f"imports.hparams: {path}: expected an object of objects (name -> hyper-parameters)")
    missing = [name for name in import_names(config) if name not in table]
    if missing:
        raise ClipmergeError(f"imports.hparams: {path} has no entry for {missing[:3]}")
    return {name: table[name] for name in import_names(config)}


def finetuned_ids(config: dict) -> list[str]:
    """Every fine-tune the merges draw from: the workflow's own (seeds, then sweep variants), then the
    imported models."""
    return [*trained_ids(config), *imported_ids(config)]


# The named sets of fine-tunes a section may pick with ``ingredients``.
INGREDIENT_SETS = {"all": finetuned_ids, "seeds": finetune_ids, "sweep": sweep_ids, "imported": imported_ids}


def pick_ingredients(config: dict, key: str, cfg: dict) -> list[str] | None:
    """The fine-tunes a config section ``cfg`` (at ``key``, for errors) names, or None when it names none:
    ``models`` (any fine-tunes by id), ``ingredients`` (a set of INGREDIENT_SETS), or ``seeds`` and/or
    ``variants`` (the seeds' fine-tunes, then the sweep variants').

    Raises:
        ClipmergeError: more than one way given, or a fine-tune the study does not have.
    """
    given = [k for k in PICK_KEYS if k in cfg]
    if not given:
        return None
    if len(given) > 1 and set(given) != {"seeds", "variants"}:
        raise ClipmergeError(f"{key}: give models, ingredients, or seeds and/or variants, not {' and '.join(given)}")
    if "models" in cfg:
        chosen = list(cfg["models"])
    elif "ingredients" in cfg:
        chosen = INGREDIENT_SETS[cfg["ingredients"]](config)
    else:
        chosen = [*map(layout.finetune_id, cfg.get("seeds", [])), *map(layout.sweep_id, cfg.get("variants", []))]
    pool = finetuned_ids(config)
    missing = [m for m in chosen if m not in pool]
    if missing:
        raise ClipmergeError(f"{key}.{'/'.join(given)}: {missing} are not fine-tunes of this study ({', '.join(pool)})")
    return chosen


def merged_ids(config: dict) -> list[str]:
    ids = []
    for method in config["merge"]["methods"]:
        if method == layout.WISE_FT:
            ids += [layout.wise_ft_id(a) for a in wise_ft_cfg(config)["alphas"]]
        else:
            ids.append(method)
    return ids


def model_ids(config: dict) -> list[str]:
    """Every model of the study's table, in table order: the evaluated ones and the ensemble."""
    return [*evaluated_ids(config), *([layout.ENSEMBLE] if ensemble_members(config) else [])]


def evaluated_ids(config: dict) -> list[str]:
    """The models with weights, which rule evaluate runs on every set."""
    return [layout.ZEROSHOT, *finetuned_ids(config), *merged_ids(config)]


def ensemble_members(config: dict) -> list[str]:
    """The fine-tunes the output-space ensemble (row ``ensemble``) averages: those its section picks
    (pick_ingredients), else every fine-tune, own and imported (as the soups); none with
    ``ensemble.enabled: false`` or when it would have fewer than 2."""
    cfg = config.get("ensemble", {})
    if not cfg.get("enabled", True):
        return []
    chosen = pick_ingredients(config, "ensemble", cfg)
    if chosen is None:
        pool = finetuned_ids(config)
        return pool if len(pool) >= 2 else []
    if len(chosen) < 2:
        raise ClipmergeError(f"ensemble: needs at least 2 fine-tunes, got {chosen}")
    return chosen


def merge_inputs(config: dict, method: str) -> list[str]:
    """The fine-tunes (model ids) a post-training merge combines: those ``merge.<method>`` picks
    (pick_ingredients), else by default: for the soups and the task-vector merges every fine-tune, own
    and imported (model-soups' uniform soup averages all 72 files, its LP-initialised model_0
    included); for Model Stock and SLERP the first two (the paper merges two; SLERP takes exactly two).
    """
    pool = finetuned_ids(config)
    chosen = pick_ingredients(config, f"merge.{method}", config["merge"].get(method, {}))
    if chosen is None:
        chosen = pool if method in (*SOUPS, *TASK_VECTOR_MERGES) else pool[:2]
    if len(chosen) < 2:
        raise ClipmergeError(f"merge.{method}: {method} needs at least 2 fine-tunes (finetune.seeds, sweep, "
                             f"imports), got {chosen}")
    if method == "slerp" and len(chosen) != 2:
        raise ClipmergeError(f"merge.slerp: interpolates exactly 2 fine-tunes, got {chosen}")
    return chosen


def method_seeds(config: dict, method: str) -> list[int]:
    """Seeds a lockstep training run (model_stock_periodic) trains; default the first two fine-tuning seeds."""
    all_seeds = config["finetune"]["seeds"]
    seeds = config["merge"].get(method, {}).get("seeds", all_seeds[:2])
    missing = [s for s in seeds if s not in all_seeds]
    if missing:
        raise ClipmergeError(f"merge.{method}.seeds: {missing} are not in finetune.seeds {all_seeds}")
    if len(seeds) < 2:
        raise ClipmergeError(f"merge.{method}: needs at least 2 fine-tuned seeds, got {seeds}")
    return seeds


def training_gpus(config: dict, rule: str) -> int:
    """GPUs of a training job, one rank each (the rule's ``gpu`` resource and ``--ranks``).

    ``finetune.gpus`` (default 1): N > 1 trains each fine-tune data-parallel over N ranks, which share
    each step's ``accum_steps`` micro-batches. ``merge.model_stock_periodic.gpus`` (default: one per
    seed) trains each seed on its own rank; 1 steps the seeds in turn in one process (one GPU).
    """
    if rule == "finetune":
        gpus = config["finetune"].get("gpus", 1)
        for model in trained_ids(config):  # a sweep variant may set its own batch split
            recipe_split(recipe_section(config, model), gpus)
        return gpus
    seeds = method_seeds(config, "model_stock_periodic")
    gpus = config["merge"].get("model_stock_periodic", {}).get("gpus", len(seeds))
    if gpus not in (1, len(seeds)):
        raise ClipmergeError(f"merge.model_stock_periodic.gpus: {gpus}; 1 (the seeds in turn on one GPU) or "
                             f"{len(seeds)} (one per seed)")
    return gpus


def recipe_split(section: dict, ranks: int) -> None:
    """A fine-tuning recipe's micro-batches must split over ``ranks`` (Recipe.check_split)."""
    try:
        Recipe(**{k: section[k] for k in ("batch_size", "accum_steps") if k in section}).check_split(ranks)
    except ClipmergeError as e:
        raise ClipmergeError(f"finetune.gpus {ranks}: {e}") from None


def wise_ft_cfg(config: dict) -> dict:
    """WiSE-FT's ``alphas`` and the fine-tune it interpolates with the zero-shot model: ``model`` (any
    fine-tune), the fine-tune of ``seed`` or of sweep ``variant``, else the first fine-tune."""
    cfg = dict(config["merge"].get("wise_ft", {}))
    cfg.setdefault("alphas", [0.5])
    pool = finetuned_ids(config)
    ways = {"model": lambda m: m, "seed": layout.finetune_id, "variant": layout.sweep_id}
    given = [k for k in ways if k in cfg]
    if len(given) > 1:
        raise ClipmergeError(f"merge.wise_ft: give one of model, seed or variant, not {' and '.join(given)}")
    model = ways[given[0]](cfg.pop(given[0])) if given else next(iter(pool), None)
    if model not in pool:
        raise ClipmergeError(f"merge.wise_ft: {model!r} is not a fine-tune of this study ({', '.join(pool)})")
    return {**cfg, "model": model}


def check_methods(config: dict) -> None:
    """Reject sweeps and fine-tune lists the chosen merges cannot use (before any job runs)."""
    check_sweep(config)
    methods = config["merge"]["methods"]
    for method in PICKED_INPUTS:
        if method in methods:
            merge_inputs(config, method)
    if "model_stock_periodic" in methods:
        training_gpus(config, "model_stock_periodic")
    if trained_ids(config):
        training_gpus(config, "finetune")
    if layout.WISE_FT in methods:
        wise_ft_cfg(config)
    ensemble_members(config)


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
    optional = {"wise_ft": "wise_ft_curve", "model_stock": "model_stock_geometry",
                "model_stock_periodic": "model_stock_periodic_geometry", "greedy_soup": "greedy_soup"}
    return ["id_vs_shifts", *(plot for method, plot in optional.items() if method in methods)]


def config_hash(config: dict, model: str) -> str:
    """Short hash of exactly the config that defines ``model`` (its MLflow provenance tag), so changing
    one stage's keys changes only the hashes of the models that depend on it: a merge's hash covers its
    own keys and its ingredients' hashes."""
    blob = json.dumps(_definition(config, model), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _definition(config: dict, model: str) -> dict:
    parsed = layout.parse_model_id(model)
    sections = {key: config.get(key) for key in ("model", "world", "pretrain", "zeroshot")}
    if parsed.kind == layout.ZEROSHOT:
        return sections
    if parsed.kind == layout.IMPORTED:
        return {**sections, "import": {"file": import_source(config, parsed.name),
                                       "hparams": import_hparams(config).get(parsed.name)}}
    if parsed.kind in (layout.FINETUNE, layout.SWEEP):
        return {**sections, "train": config["train"], "finetune": recipe_section(config, model),
                "seed": training_seed(config, model)}
    if parsed.kind == "model_stock_periodic":  # a training run of its own, the seeds in lockstep
        method_cfg = {k: v for k, v in config["merge"].get(model, {}).items() if k not in RESOURCE_KEYS[model]}
        return {**sections, "train": config["train"], "finetune": base_recipe(config),
                "merge": {"method": model, **method_cfg, "seeds": method_seeds(config, model)}}
    if parsed.kind == layout.WISE_FT:
        merge, inputs = {"alpha": parsed.alpha}, [wise_ft_cfg(config)["model"]]
    elif parsed.kind == layout.ENSEMBLE:
        merge, inputs = {"method": model}, ensemble_members(config)
    else:
        method_cfg = config["merge"].get(model, {})
        merge = {"method": model, **{k: v for k, v in method_cfg.items() if k not in PICK_KEYS}}
        inputs = merge_inputs(config, model)
        if model == "greedy_soup":  # ranks its candidates on the held-out split
            merge["train"] = config["train"]
    return {**sections, "merge": merge, "inputs": {m: config_hash(config, m) for m in inputs}}
