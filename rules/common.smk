# Config validation, constants, wildcard constraints and input functions. Logic lives in
# clipmerge.plan (unit-tested); this file only wires it into Snakemake.
import os
from pathlib import Path

from snakemake.utils import validate

from clipmerge import plan

validate(config, schema="../workflow/schemas/config.schema.yaml")
plan.check_methods(config)
plan.check_roots(config)

STUDY = config["study"]
SEEDS = config["finetune"]["seeds"]
MODELS = plan.model_ids(config)
EVAL_SETS = list(config["eval"]["sets"])
METHODS = config["merge"]["methods"]
STOCK_SEEDS = plan.method_seeds(config, "model_stock") if "model_stock" in METHODS else []
PERIODIC_SEEDS = plan.method_seeds(config, "model_stock_periodic") if "model_stock_periodic" in METHODS else []
WISE_FT = plan.wise_ft_cfg(config)
PLOTS = plan.plot_names(config)
WORLD = plan.uses_world(config)
MLFLOW_URI = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///results/{STUDY}/mlflow.db"


wildcard_constraints:
    study=STUDY,
    seed=r"\d+",
    model="|".join(MODELS),
    eval_set="|".join(EVAL_SETS),
    alpha=r"[0-9.]+",


localrules:
    all,
    init_mlflow,
    log_mlflow,
    log_summary,
    compile_table,
    plot_results,


def world_manifest(wildcards):
    """Generated data depends on the world; external datasets depend on nothing in the DAG."""
    return [f"results/{STUDY}/data/world.json"] if WORLD else []


def train_root(wildcards):
    return plan.dataset_root(config["train"]["data"], STUDY)


def eval_adapter(wildcards):
    return config["eval"]["sets"][wildcards.eval_set]["adapter"]


def eval_root(wildcards):
    return plan.dataset_root(config["eval"]["sets"][wildcards.eval_set], STUDY)


def classnames_spec(wildcards):
    spec = config["zeroshot"]["classnames"]
    return f"results/{STUDY}/data/world.json" if spec == "world" else spec


def templates_flag():
    """'world' = the generated world's templates file (worded like its captions)."""
    templates = config["zeroshot"]["templates"]
    if templates == "world":
        templates = f"results/{STUDY}/data/templates.txt"
    values = [templates] if isinstance(templates, str) else templates
    return " ".join(f"'{t}'" for t in values)


def impl(*paths):
    """Source files implementing a stage: listed as inputs so editing them reruns that stage only."""
    files = []
    for path in (Path(workflow.basedir) / p for p in paths):
        files += sorted(map(str, path.glob("*.py"))) if path.is_dir() else [str(path)]
    return files


def model_weights(model):
    return f"results/{STUDY}/models/{model}/model.safetensors"


def finetuned(seeds):
    return [model_weights(f"finetune_seed{s}") for s in seeds]


def model_evals(wildcards):
    return [f"results/{STUDY}/eval/{wildcards.model}/{s}.json" for s in EVAL_SETS]


def all_evals(wildcards):
    return [f"results/{STUDY}/eval/{m}/{s}.json" for m in MODELS for s in EVAL_SETS]


def eval_roles():
    """--id/--shifts flags shared by the table, plots and tracking commands."""
    return f"--id {config['eval']['id']} --shifts {' '.join(config['eval']['shifts'])}"


def model_dir(wildcards, input):
    """The folder of a model's files, derived from its meta.json input."""
    return os.path.dirname(input.meta)


def models_dir(wildcards, input):
    """results/<study>/models, derived from the first meta.json input."""
    return os.path.dirname(os.path.dirname(input.meta[0]))


def config_hash(wildcards):
    return plan.config_hash(config, wildcards.model)


def get_final_output():
    return [
        f"results/{STUDY}/tables/comparison.csv",
        f"results/{STUDY}/plots/id_vs_shifts.png",
        f"results/{STUDY}/tracking/summary.json",
    ]
