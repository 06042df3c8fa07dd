# clipmerge: zero-shot -> fine-tune (seeds) -> merge -> evaluate on ImageNet + 5 shifts -> MLflow + table.
#
# results/<study>/ (every path is owned by clipmerge.layout)
#   data/world.json, data/<split>/...           demo only: the generated world (make_world)
#   pretrained/model.safetensors (+ meta.json)  pretrain_demo | fetch_pretrained
#   splits/heldout.txt                          split_heldout (read only by greedy soup)
#   models/<model>/model.safetensors + meta.json  zeroshot, finetune_seed<k>, uniform_soup, greedy_soup,
#                                               model_stock, model_stock_periodic, wise_ft_a<alpha>
#   models/<model>/history.jsonl                per-step training metrics (fine-tunes, periodic)
#   models/<model>/{merge,greedy,merge_history}.json   merge diagnostics
#   eval/<model>/<eval_set>.json                top1/top5/n per model and evaluation set
#   tracking/<model>.json                       MLflow receipts (run ids)
#   tables/comparison.{csv,md,html}, tables/recipes.{csv,md}, tables/costs.{csv,md}, plots/*.png
#   benchmarks/models/<model>.tsv, benchmarks/<rule>[/<job>].tsv   Snakemake benchmark: per job
# logs/<study>/<rule>[/<job>].log

from snakemake.utils import min_version

min_version("9.0")


# The demo config is the default; a --configfile replaces it instead of being merged into it
# (Snakemake merges nested keys, which would mix the demo's eval sets into a real run).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"



include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/pretrained.smk"
include: "rules/finetune.smk"
include: "rules/merge.smk"
include: "rules/evaluate.smk"
include: "rules/track.smk"
include: "rules/report.smk"


rule all:
    input:
        get_final_output(),
