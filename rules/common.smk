# Config validation, constants, wildcard constraints and input functions. Logic lives in
# clipmerge.workflow.plan (unit-tested), paths and ids in clipmerge.layout, each rule's code inputs
# in clipmerge.workflow.code_inputs; this file only wires them into Snakemake.
import json
import os
import shlex

from snakemake.utils import validate

from clipmerge import layout
from clipmerge.merging.registry import get as merge_method
from clipmerge.workflow import plan
from clipmerge.workflow.code_inputs import code_inputs

validate(config, schema="../workflow/schemas/config.schema.yaml")
plan.check_methods(config)
plan.check_roots(config)

STUDY = config["study"]
IMPORTS = plan.import_names(config)
IMPORT_HPARAMS = plan.import_hparams(config)
TRAINED = plan.trained_ids(config)  # trained by the finetune rule: one per seed, then one per sweep variant
FINETUNED = plan.finetuned_ids(config)  # own fine-tunes, then imported ones: what the merges draw from
MODELS = plan.model_ids(config)  # every row of the table
EVALUATED = plan.evaluated_ids(config)  # the models with weights, which rule evaluate runs
ENSEMBLE_MEMBERS = plan.ensemble_members(config)
UNCERTAINTY_FLAGS = plan.cli_flags(config["uncertainty"])  # the bootstrap of the intervals (views only)
EVAL_SETS = list(config["eval"]["sets"])
EVAL_JOBS = config["eval"]["jobs"]
EVAL_JOB = "{model}" if EVAL_JOBS == "per_model" else "{model}/{eval_set}"  # an evaluation job's name
EVAL_CACHE = config["eval"]["cache"]
METHODS = config["merge"]["methods"]
# The fine-tunes of each post-training merge ([] for a method not chosen: its rule is never run)
MERGE_INPUTS = {m: plan.merge_inputs(config, m) if m in METHODS else [] for m in plan.PICKED_INPUTS}
PERIODIC = "model_stock_periodic" in METHODS
PERIODIC_SEEDS = plan.method_seeds(config, "model_stock_periodic") if PERIODIC else []
# GPUs (= ranks) of each training job: resources, not params (plan.training_gpus)
FINETUNE_GPUS = plan.training_gpus(config, "finetune")
PERIODIC_GPUS = plan.training_gpus(config, "model_stock_periodic") if PERIODIC else 1
WISE_FT = plan.wise_ft_cfg(config) if FINETUNED else {}
PLOTS = plan.plot_names(config)
WORLD = plan.uses_world(config)
MLFLOW_URI = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{layout.mlflow_db(STUDY)}"


wildcard_constraints:
    study=STUDY,
    finetune="|".join(TRAINED) or "(?!)",
    name="|".join(IMPORTS) or "(?!)",
    model="|".join(MODELS),
    eval_set="|".join(EVAL_SETS),
    alpha=r"[0-9.]+",


localrules:
    all,
    init_mlflow,
    log_mlflow,
    compile_table,
    plot_results,


def code(command, *extra):
    """The source files behind a `clipmerge <command>` job: editing one reruns that job."""
    return code_inputs(command, *extra)


def merge_code(method):
    """A streamed merge's code: the merge command and its method's module (the registry loads it by name)."""
    return code("merge", merge_method(method).module)


def world_manifest(wildcards):
    """Generated data depends on the world; external datasets depend on nothing in the DAG."""
    return [layout.world_manifest()] if WORLD else []


def world_templates(wildcards):
    """The world's templates file, when the zero-shot head uses it."""
    return [layout.world_templates()] if config["zeroshot"]["templates"] == "world" else []


def training_seed(wildcards):
    return plan.training_seed(config, wildcards.finetune)


def recipe_flags(wildcards):
    """A trained fine-tune's own recipe (a seed's: the finetune section; a sweep variant's: with its
    overrides), a param: a changed variant retrains only itself."""
    return plan.recipe_flags(config, wildcards.finetune)


def train_root(wildcards):
    return plan.dataset_root(config["train"]["data"], STUDY)


def eval_adapter(wildcards):
    return config["eval"]["sets"][wildcards.eval_set]["adapter"]


def eval_root(wildcards):
    return plan.dataset_root(config["eval"]["sets"][wildcards.eval_set], STUDY)


def classnames_spec(wildcards):
    spec = config["zeroshot"]["classnames"]
    return layout.world_manifest(STUDY) if spec == "world" else spec


def templates_flag():
    """'world' = the generated world's templates file (worded like its captions)."""
    templates = config["zeroshot"]["templates"]
    if templates == "world":
        templates = layout.world_templates(STUDY)
    values = [templates] if isinstance(templates, str) else templates
    return " ".join(f"'{t}'" for t in values)


def model_metas(models):
    """The meta.json of each model: a job that reads a model's weights reads its meta.json too."""
    return [layout.model_meta(m) for m in models]


def weights_of(models):
    return [layout.model_weights(m) for m in models]


def import_source(wildcards):
    return plan.import_source(config, wildcards.name)


def import_hparams_flag(wildcards):
    """The model's hparam_info.json entry, a param: editing one entry re-converts that model only."""
    return shlex.quote(json.dumps(IMPORT_HPARAMS.get(wildcards.name, {}), sort_keys=True))


def heldout_inputs(wildcards):
    """The held-out mask, when the split comes from one (train.heldout_mask)."""
    return [config["train"]["heldout_mask"]] if "heldout_mask" in config["train"] else []


def heldout_flags():
    train = config["train"]
    if "heldout_mask" in train:
        return f"--mask {train['heldout_mask']}"
    return f"--per-class {train['heldout_per_class']} --seed {train['heldout_seed']}"


def evaluated_sets(wildcards):
    """The sets one evaluation job covers: every set (eval.jobs per_model) or its own (per_set)."""
    return EVAL_SETS if EVAL_JOBS == "per_model" else [wildcards.eval_set]


def evaluation_outputs():
    """An evaluation job's result files: the eval JSON and the predictions of each set it covers."""
    sets = EVAL_SETS if EVAL_JOBS == "per_model" else ["{eval_set}"]
    return [path for s in sets for path in (layout.eval_result("{model}", s), layout.eval_predictions("{model}", s))]


def eval_caches(sets):
    """The preprocessed-image caches an evaluation reads (none with eval.cache off)."""
    return [layout.eval_cache(s, STUDY) for s in sets] if EVAL_CACHE else []


def eval_set_flags(model, sets):
    return plan.eval_set_flags(config, STUDY, model, sets, EVAL_CACHE)


def eval_benchmarks():
    """The benchmark files of the evaluation jobs (one per model, or per model and set) and caches."""
    jobs = EVALUATED if EVAL_JOBS == "per_model" else [f"{m}/{s}" for m in EVALUATED for s in EVAL_SETS]
    caches = [layout.benchmark("cache_eval_set", s) for s in EVAL_SETS] if EVAL_CACHE else []
    return [layout.benchmark("evaluate", job) for job in jobs] + caches


def evals_of(model):
    return [layout.eval_result(model, s, STUDY) for s in EVAL_SETS]


def predictions_of(model):
    return [layout.eval_predictions(model, s, STUDY) for s in EVAL_SETS]


def model_evals(wildcards):
    return evals_of(wildcards.model)


def model_predictions(wildcards):
    return predictions_of(wildcards.model)


def all_predictions(wildcards):
    return [path for m in MODELS for path in predictions_of(m)]


def all_evals(wildcards):
    return [path for m in MODELS for path in evals_of(m)]


def all_metas(wildcards):
    return [layout.model_meta(m) for m in MODELS]


def upstream_benchmarks(wildcards):
    """The benchmark of every job the table depends on: the per-stage cost table and the cost column."""
    first = ["make_world", "pretrain_demo"] if WORLD else ["fetch_pretrained"]
    return ([layout.benchmark(rule) for rule in (*first, "split_heldout")]
            + [layout.model_benchmark(m) for m in MODELS]
            + eval_benchmarks())


def history_of(model):
    """A training run's history.jsonl (its curves in MLflow); other models have none."""
    trained = {*TRAINED, "model_stock_periodic"}
    return [layout.model_history(model, STUDY)] if model in trained else []


def diagnostics_of(model):
    """The diagnostics a model's job writes beside it (attached to its MLflow run)."""
    path = layout.model_diagnostics(model, STUDY)
    return [path] if path else []


def training_history(wildcards):
    return history_of(wildcards.model)


def model_diagnostics(wildcards):
    return diagnostics_of(wildcards.model)


def tracking_inputs(model):
    """The files one model's MLflow run is built from."""
    return [layout.model_meta(model, STUDY), *history_of(model), *diagnostics_of(model), *evals_of(model),
            *predictions_of(model)]


def tracking_runs_json():
    """log-mlflow --runs: every model's run, from the same files as its per-model job would read."""
    runs = [{"meta": layout.model_meta(m, STUDY), "history": next(iter(history_of(m)), None),
             "diagnostics": diagnostics_of(m), "evals": evals_of(m), "predictions": predictions_of(m),
             "config_hash": plan.config_hash(config, m), "out": layout.tracking_run(m, STUDY)} for m in MODELS]
    return json.dumps(runs)


def plot_diagnostics():
    """Model Stock's merge.json, periodic Model Stock's merge_history.json and greedy soup's greedy.json,
    for their plots when the study has them."""
    files = {}
    if "model_stock_geometry" in PLOTS:
        files["merge"] = layout.model_diagnostics("model_stock")
    if "model_stock_periodic_geometry" in PLOTS:
        files["merge_history"] = layout.model_diagnostics("model_stock_periodic")
    if "greedy_soup" in PLOTS:
        files["greedy"] = layout.model_diagnostics("greedy_soup")
    return files


def plot_diagnostics_flags(wildcards, input):
    flags = {"merge": "--merge-diagnostics", "merge_history": "--merge-history", "greedy": "--greedy-diagnostics"}
    return " ".join(f"{flags[k]} {input[k]}" for k in plot_diagnostics())


def plot_outputs():
    """One report()-annotated PNG per plot, each with its own caption, and the JSON of the numbers
    beside the plots that write one (layout.PLOTS_WITH_DATA)."""
    pngs = {name: report(layout.plot(name), caption=f"../workflow/report/{name}.rst", category="Plots")
            for name in PLOTS}
    return pngs | {f"{name}_data": layout.plot_data(name) for name in PLOTS if name in layout.PLOTS_WITH_DATA}


def plot_files(study="{study}"):
    """Every file plot_results writes (PNGs, then the geometry plots' JSON): the summary run's artifacts."""
    return [layout.plot(name, study) for name in PLOTS] + [
        layout.plot_data(name, study) for name in PLOTS if name in layout.PLOTS_WITH_DATA]


def eval_roles():
    """--id/--shifts flags shared by the table, plots and tracking commands."""
    return f"--id {config['eval']['id']} --shifts {' '.join(config['eval']['shifts'])}"


def config_hash(wildcards):
    return plan.config_hash(config, wildcards.model)


def get_final_output():
    return [layout.table("csv", study=STUDY), layout.plot("id_vs_shifts", STUDY), layout.tracking_summary(STUDY)]
