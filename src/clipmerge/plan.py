"""What the workflow builds, derived from the validated config. Pure Python: no torch, so the
Snakemake DAG builds fast. rules/common.smk calls these; tests/unit/test_plan.py checks them."""

from __future__ import annotations

from pathlib import Path

from clipmerge.errors import ClipmergeError

FINETUNE_ONLY_SEEDS = {"seeds"}

# What each adapter expects under its root (shown when a root is missing).
EXPECTED_LAYOUT = {
    "imagefolder": "<root>/<class name>/<image>",
    "imagenet": "<root> = ImageNet val: <root>/n01440764/*.JPEG ... (1000 wnid folders)",
    "imagenet_v2": "<root>/ImageNetV2-matched-frequency/<0..999>/*.jpeg",
    "imagenet_r": "<root>/n01443537/*.jpg ... (200 wnid folders)",
    "imagenet_sketch": "<root>/n01440764/*.JPEG ... (1000 wnid folders; the 'sketch' folder)",
    "objectnet": "<root>/images/<313 object folders>/*.png (ObjectNet 1.0)",
    "imagenet_a": "<root>/n01498041/*.jpg ... (200 wnid folders)",
    "train": "<root>/<class>/<image> (ImageNet train: <root>/n01440764/*.JPEG ...)",
}


def uses_world(config: dict) -> bool:
    """The embedded demo pre-trains on its own generated world."""
    return config["model"]["pretrained"] == "demo"


def alpha_id(alpha: float) -> str:
    """WiSE-FT model id: 0.5 -> wise_ft_a0.5, 1.0 -> wise_ft_a1 (shortest exact form)."""
    return f"wise_ft_a{float(alpha):g}"


def finetune_ids(config: dict) -> list[str]:
    return [f"finetune_seed{s}" for s in config["finetune"]["seeds"]]


def merged_ids(config: dict) -> list[str]:
    ids = []
    for method in config["merge"]["methods"]:
        if method == "wise_ft":
            ids += [alpha_id(a) for a in wise_ft_cfg(config)["alphas"]]
        else:
            ids.append(method)
    return ids


def model_ids(config: dict) -> list[str]:
    """Every model the study evaluates, in table order."""
    return ["zeroshot", *finetune_ids(config), *merged_ids(config)]


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
    if "wise_ft" in methods:
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


def dataset_root(spec: dict, study: str) -> str:
    """Root folder of a dataset entry: an external root or a split of the demo world."""
    return spec["root"] if "root" in spec else f"results/{study}/data/{spec['world_split']}"


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
            raise ClipmergeError(
                f"{key}.root: {spec['root']!r} does not exist; expected layout {EXPECTED_LAYOUT[adapter]}"
            )
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
    import hashlib
    import json

    sections = {key: config.get(key) for key in ("model", "world", "pretrain", "zeroshot")}
    if model != "zeroshot":
        sections["train"] = config["train"]
        sections["finetune"] = {k: v for k, v in config["finetune"].items() if k != "seeds"}
    if model.startswith("finetune_seed"):
        sections["seed"] = int(model.removeprefix("finetune_seed"))
    elif model.startswith("wise_ft_a"):
        sections["merge"] = {"alpha": float(model.removeprefix("wise_ft_a")), "seed": wise_ft_cfg(config)["seed"]}
    elif model != "zeroshot":
        sections["merge"] = {"method": model, **config["merge"].get(model, {})}
        if model in ("uniform_soup", "greedy_soup"):
            sections["merge"]["seeds"] = config["finetune"]["seeds"]
    blob = json.dumps(sections, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
