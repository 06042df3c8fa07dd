"""The results layout: the path of every artifact under ``results/<study>/``, the model ids, and the
``meta.json`` record beside every model. The one owner of these contracts; torch-free, so Snakemake
imports it when it builds the DAG.

Path functions take their parts as arguments whose defaults are Snakemake wildcards
(``model_weights()`` is ``results/{study}/models/{model}/model.safetensors``), so one function serves
as a rule's output pattern, an input of another rule and a concrete path in a command or test.

Model ids are flat snake_case, the same as directory name, MLflow run name and table row:
``zeroshot``, ``finetune_seed<k>``, ``finetune_hp<k>`` (variant k of a hyper-parameter sweep, config
``sweep``), ``imported_<name>`` (a fine-tune made elsewhere, config ``imports``), one id per merge method
(its name), and ``wise_ft_a<alpha>``.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from clipmerge.errors import ClipmergeError
from clipmerge.files import read_object, write_json

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Model ids

PRETRAINED = "pretrained"  # the pre-trained CLIP (both towers): not a classifier, never a table row
ZEROSHOT = "zeroshot"
FINETUNE = "finetune"
SWEEP = "sweep"  # a fine-tune of a hyper-parameter sweep's variant (clipmerge.training.sweep)
IMPORTED = "imported"  # a fine-tune made elsewhere, converted by rule import_model
WISE_FT = "wise_ft"
# The output-space ensemble of the fine-tunes: computed from their saved predictions, it has eval
# results and a meta.json but no weights (one forward pass per member at inference).
ENSEMBLE = "ensemble"
# The merge methods, in table order: the config schema's enum, the merge registry (plus the training
# procedure model_stock_periodic) and the rules use exactly these names. A method's model id is its
# name, except WiSE-FT, which makes one model per alpha.
METHOD_NAMES = ["uniform_soup", "greedy_soup", "model_stock", "model_stock_periodic",
                "task_arithmetic", "ties", "dare", "dare_ties", "slerp", WISE_FT]
# Table/plot row order of the model kinds.
KIND_ORDER = (ZEROSHOT, FINETUNE, SWEEP, IMPORTED, *METHOD_NAMES, ENSEMBLE, PRETRAINED)
# The kinds of the fine-tunes, the models every merge and the ensemble draw from.
FINETUNE_KINDS = (FINETUNE, SWEEP, IMPORTED)

_FINETUNE_RE = re.compile(r"finetune_seed(\d+)")
_SWEEP_RE = re.compile(r"finetune_hp(\d+)")
IMPORT_NAME = r"[a-z0-9][a-z0-9_]*"  # an imported model's name (config imports.names)
_IMPORTED_RE = re.compile(rf"{IMPORTED}_({IMPORT_NAME})")
_WISE_RE = re.compile(r"wise_ft_a(.+)")


def finetune_id(seed: int) -> str:
    return f"finetune_seed{int(seed)}"


def sweep_id(index: int) -> str:
    """Variant ``index`` of the hyper-parameter sweep: ``finetune_hp<index>``."""
    return f"finetune_hp{int(index)}"


def imported_id(name: str) -> str:
    """``model_43`` -> ``imported_model_43``; the name must be snake_case (a wildcard may pass ``{name}``)."""
    if not (name == "{name}" or re.fullmatch(IMPORT_NAME, name)):
        raise ClipmergeError(f"imported model name {name!r} must match {IMPORT_NAME}")
    return f"{IMPORTED}_{name}"


def wise_ft_id(alpha: float) -> str:
    """0.5 -> wise_ft_a0.5, 1.0 -> wise_ft_a1 (shortest exact form)."""
    return f"wise_ft_a{float(alpha):g}"


@dataclass(frozen=True)
class ModelId:
    """A parsed model id: its kind (zeroshot, finetune, sweep, imported or a method name) and its seed,
    sweep variant, alpha or imported name."""

    model: str
    kind: str
    seed: int | None = None
    alpha: float | None = None
    name: str | None = None
    variant: int | None = None


def parse_model_id(model: str) -> ModelId:
    """The kind, seed and alpha a model id encodes; an id of no known kind raises an error naming it."""
    if model in (PRETRAINED, ZEROSHOT, ENSEMBLE):
        return ModelId(model, model)
    if m := _FINETUNE_RE.fullmatch(model):
        return ModelId(model, FINETUNE, seed=int(m.group(1)))
    if m := _SWEEP_RE.fullmatch(model):
        return ModelId(model, SWEEP, variant=int(m.group(1)))
    if m := _IMPORTED_RE.fullmatch(model):
        return ModelId(model, IMPORTED, name=m.group(1))
    if m := _WISE_RE.fullmatch(model):
        try:
            return ModelId(model, WISE_FT, alpha=float(m.group(1)))
        except ValueError as e:
            raise ClipmergeError(f"model id {model!r}: cannot read alpha from {m.group(1)!r}") from e
    if model in METHOD_NAMES:
        return ModelId(model, model)
    methods = ", ".join(m for m in METHOD_NAMES if m != WISE_FT)
    raise ClipmergeError(f"model id {model!r} is none of {ZEROSHOT}, finetune_seed<k>, finetune_hp<k>, "
                         f"imported_<name>, wise_ft_a<alpha>, {methods}, {ENSEMBLE}")


def alpha_of(model: str) -> float | None:
    """The interpolation weight of a WiSE-FT model id (``wise_ft_a0.5`` -> 0.5), None for other ids."""
    return parse_model_id(model).alpha if _WISE_RE.fullmatch(model) else None


def model_sort_key(model: str) -> tuple:
    """Canonical row order: zeroshot, fine-tunes by seed, sweep variants by index, imported fine-tunes,
    merges, WiSE-FT by alpha; unknown ids last."""
    try:
        parsed = parse_model_id(model)
    except ClipmergeError:
        return (len(KIND_ORDER), 0, model)
    return (KIND_ORDER.index(parsed.kind), parsed.seed or parsed.variant or parsed.alpha or 0, _natural(model))


def _natural(model: str) -> tuple:
    """``imported_model_9`` before ``imported_model_10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", model))


# ---------------------------------------------------------------------------------------------
# Paths

RESULTS = "results"
WEIGHTS_NAME = "model.safetensors"
META_NAME = "meta.json"
HISTORY_NAME = "history.jsonl"
MERGE_DIAGNOSTICS = "merge.json"  # Model Stock and the other streamed merges
GREEDY_DIAGNOSTICS = "greedy.json"  # greedy soup's ranking and steps
MERGE_HISTORY = "merge_history.json"  # periodic Model Stock's merges during training
PREDICTIONS_SUFFIX = ".predictions.safetensors"  # beside each eval JSON
WORLD_MANIFEST = "world.json"  # the demo world's manifest, written last (marks it complete)
WORLD_TEMPLATES = "templates.txt"  # the demo world's prompt templates, worded like its captions
# The diagnostics file a model's job writes beside it, by model kind.
DIAGNOSTICS = {"uniform_soup": MERGE_DIAGNOSTICS, "model_stock": MERGE_DIAGNOSTICS, WISE_FT: MERGE_DIAGNOSTICS,
               **dict.fromkeys(("task_arithmetic", "ties", "dare", "dare_ties", "slerp"), MERGE_DIAGNOSTICS),
               "greedy_soup": GREEDY_DIAGNOSTICS, "model_stock_periodic": MERGE_HISTORY}


def study_dir(study: str = "{study}") -> str:
    return f"{RESULTS}/{study}"


def world_dir(study: str = "{study}") -> str:
    """The generated demo world (image folders, captions, templates)."""
    return f"{study_dir(study)}/data"


def world_manifest(study: str = "{study}") -> str:
    return f"{world_dir(study)}/{WORLD_MANIFEST}"


def world_split(split: str, study: str = "{study}") -> str:
    return f"{world_dir(study)}/{split}"


def world_templates(study: str = "{study}") -> str:
    return f"{world_dir(study)}/{WORLD_TEMPLATES}"


def pretrained_weights(study: str = "{study}") -> str:
    return f"{study_dir(study)}/pretrained/{WEIGHTS_NAME}"


def pretrained_meta(study: str = "{study}") -> str:
    return f"{study_dir(study)}/pretrained/{META_NAME}"


def heldout_split(study: str = "{study}") -> str:
    return f"{study_dir(study)}/splits/heldout.txt"


def heldout_cache(study: str = "{study}") -> str:
    """Greedy soup's decoded held-out images: a persistent cache, deliberately not a declared output."""
    return f"{study_dir(study)}/cache/heldout.safetensors"


def eval_cache(eval_set: str = "{eval_set}", study: str = "{study}") -> str:
    """An evaluation set decoded and preprocessed once for every model (rule cache_eval_set)."""
    return f"{study_dir(study)}/cache/eval/{eval_set}.safetensors"


def model_dir(model: str = "{model}", study: str = "{study}") -> str:
    return f"{study_dir(study)}/models/{model}"


def model_weights(model: str = "{model}", study: str = "{study}") -> str:
    return f"{model_dir(model, study)}/{WEIGHTS_NAME}"


def model_meta(model: str = "{model}", study: str = "{study}") -> str:
    return f"{model_dir(model, study)}/{META_NAME}"


def model_history(model: str = "{model}", study: str = "{study}") -> str:
    return f"{model_dir(model, study)}/{HISTORY_NAME}"


def model_file(name: str, model: str = "{model}", study: str = "{study}") -> str:
    """Another file beside a model's weights (its diagnostics)."""
    return f"{model_dir(model, study)}/{name}"


def model_diagnostics(model: str = "{model}", study: str = "{study}", kind: str | None = None) -> str | None:
    """The diagnostics file of a model (merge.json, greedy.json, merge_history.json), None if its kind
    has none. ``kind`` names the model kind when ``model`` is a wildcard pattern."""
    name = DIAGNOSTICS.get(kind or parse_model_id(model).kind)
    return model_file(name, model, study) if name else None


def eval_result(model: str = "{model}", eval_set: str = "{eval_set}", study: str = "{study}") -> str:
    return f"{study_dir(study)}/eval/{model}/{eval_set}.json"


def eval_predictions(model: str = "{model}", eval_set: str = "{eval_set}", study: str = "{study}") -> str:
    """A model's per-image predictions on a set, beside its eval JSON (clipmerge.evaluation.predictions)."""
    return predictions_beside(eval_result(model, eval_set, study))


def predictions_beside(eval_json: str | os.PathLike) -> str:
    """The predictions file of an eval JSON: ``eval/<model>/<eval_set>.predictions.safetensors``."""
    text = str(eval_json)
    if not text.endswith(".json"):
        raise ClipmergeError(f"{text}: not an eval JSON (eval/<model>/<eval_set>.json)")
    return text.removesuffix(".json") + PREDICTIONS_SUFFIX


def parse_predictions(path: str | os.PathLike) -> tuple[str, str]:
    """``(model, eval_set)`` of an ``eval/<model>/<eval_set>.predictions.safetensors`` path."""
    path = Path(path)
    if not path.name.endswith(PREDICTIONS_SUFFIX):
        raise ClipmergeError(f"{path}: not a predictions file (eval/<model>/<eval_set>{PREDICTIONS_SUFFIX})")
    return path.parent.name, path.name.removesuffix(PREDICTIONS_SUFFIX)


def parse_eval_result(path: str | os.PathLike) -> tuple[str, str]:
    """``(model, eval_set)`` of an ``eval/<model>/<eval_set>.json`` path."""
    path = Path(path)
    return path.parent.name, path.stem


def mlflow_db(study: str = "{study}") -> str:
    return f"{study_dir(study)}/mlflow.db"


def tracking_receipt(study: str = "{study}") -> str:
    """init-mlflow's receipt: the store and the experiment id."""
    return f"{study_dir(study)}/tracking/mlflow.json"


def tracking_run(model: str = "{model}", study: str = "{study}") -> str:
    return f"{study_dir(study)}/tracking/{model}.json"


def tracking_summary(study: str = "{study}") -> str:
    return f"{study_dir(study)}/tracking/summary.json"


def table(fmt: str, name: str = "comparison", study: str = "{study}") -> str:
    return f"{study_dir(study)}/tables/{name}.{fmt}"


def plots_dir(study: str = "{study}") -> str:
    return f"{study_dir(study)}/plots"


def plot(name: str, study: str = "{study}") -> str:
    return f"{plots_dir(study)}/{name}.png"


# The plots that write the numbers they draw beside their PNG (plot_data).
PLOTS_WITH_DATA = ("model_stock_geometry", "model_stock_periodic_geometry")


def plot_data(name: str, study: str = "{study}") -> str:
    """The JSON of the numbers a plot draws, beside its PNG (the plots in ``PLOTS_WITH_DATA``)."""
    return f"{plots_dir(study)}/{name}.json"


def benchmark(rule: str, job: str | None = None, study: str = "{study}") -> str:
    """Snakemake's per-job benchmark TSV (wall s, max RSS, CPU time) of ``rule`` (and one job of it)."""
    return f"{study_dir(study)}/benchmarks/{rule}{'/' + job if job else ''}.tsv"


def model_benchmark(model: str = "{model}", study: str = "{study}") -> str:
    """The benchmark of the job that made a model (whichever rule): the table's cost column reads it."""
    return benchmark("models", model, study)


def benchmarked_model(path: str | os.PathLike) -> str | None:
    """The model id of a :func:`model_benchmark` path, None for another benchmark file."""
    path = Path(path)
    return path.stem if path.parent.name == "models" and path.parent.parent.name == "benchmarks" else None


def benchmarked_rule(path: str | os.PathLike) -> str:
    """The rule of a :func:`benchmark` path (``benchmarks/<rule>[/<job>].tsv``)."""
    parts = Path(path).parts
    if "benchmarks" not in parts[:-1]:
        raise ClipmergeError(f"{path}: not a benchmark file (expected .../benchmarks/<rule>[/<job>].tsv)")
    first = parts[len(parts) - 1 - parts[::-1].index("benchmarks") + 1]
    return Path(first).stem


def log(rule: str, job: str | None = None, study: str = "{study}") -> str:
    return f"logs/{study}/{rule}{'/' + job if job else ''}.log"


# ---------------------------------------------------------------------------------------------
# meta.json: {"model", "method", "arch", "pretrained", "seed", "ingredients", "hparams", "git_sha"}


def meta_beside(weights: str | os.PathLike) -> Path:
    """The meta.json of a model's weights file."""
    return Path(weights).with_name(META_NAME)


def model_meta_record(model: str, method: str, arch: str, pretrained: str | None, *, seed: int | None = None,
                      ingredients: list[str] | tuple[str, ...] = (), hparams: dict | None = None) -> dict:
    """The meta.json of a model; ``ingredients`` are the model ids it was made from."""
    return {"model": model, "method": method, "arch": arch, "pretrained": pretrained,
            "seed": seed, "ingredients": list(ingredients), "hparams": dict(hparams or {}), "git_sha": git_sha()}


def write_meta(weights: str | os.PathLike, record: dict) -> None:
    """Write ``record`` as the meta.json beside ``weights``, atomically."""
    write_json(meta_beside(weights), record)


def read_meta(path: str | os.PathLike, model: str | None = None) -> dict:
    """A meta.json (or the one beside a weights file), checked to be an object (describing ``model``)."""
    path = Path(path)
    if path.name != META_NAME:
        path = meta_beside(path)
    meta = read_object(path)
    if model is not None and meta.get("model") != model:
        raise ClipmergeError(f"{path}: 'model' is {meta.get('model')!r}, expected {model!r}")
    return meta


def pretrained_of(metas: dict[str, dict]) -> str | None:
    """The ``pretrained`` the given models descend from, from their meta.json records (keyed by where
    they were read); the first one (with a warning) if they disagree."""
    values = {source: meta.get("pretrained") for source, meta in metas.items()}
    if len(set(values.values())) > 1:
        logger.warning("inputs disagree on 'pretrained' (%s); recording the first", values)
    return next(iter(values.values()), None)


def git_sha() -> str:
    """The commit of the clipmerge source tree, or "unknown" outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
