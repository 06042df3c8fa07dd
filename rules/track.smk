# MLflow is a view of results/: local rules log one run per model from its files, so a tracking
# server outage never kills a GPU job. The store and experiment are created once, before parallel
# writers (concurrent first-time sqlite migrations corrupt the store).


rule init_mlflow:
    output:
        "results/{study}/tracking/mlflow.json",
    params:
        uri=MLFLOW_URI,
        experiment=config.get("mlflow", {}).get("experiment", f"clipmerge/{STUDY}"),
    log:
        "logs/{study}/track/init_mlflow.log",
    conda:
        "../envs/tracking.yaml"
    shell:
        "clipmerge init-mlflow --tracking-uri {params.uri} --experiment {params.experiment}"
        " --out {output} > {log} 2>&1"


rule log_mlflow:
    input:
        receipt="results/{study}/tracking/mlflow.json",
        meta="results/{study}/models/{model}/meta.json",
        evals=model_evals,
    output:
        "results/{study}/tracking/{model}.json",
    params:
        model_dir=model_dir,
        roles=eval_roles(),
        config_hash=config_hash,
    log:
        "logs/{study}/track/{model}.log",
    conda:
        "../envs/tracking.yaml"
    shell:
        "clipmerge log-mlflow --receipt {input.receipt} --model-dir {params.model_dir} --evals {input.evals}"
        " {params.roles} --config-hash {params.config_hash} --out {output} > {log} 2>&1"


rule log_summary:
    input:
        receipt="results/{study}/tracking/mlflow.json",
        runs=expand("results/{{study}}/tracking/{model}.json", model=MODELS),
        table="results/{study}/tables/comparison.csv",
        plots=expand("results/{{study}}/plots/{plot}.png", plot=PLOTS),
    output:
        "results/{study}/tracking/summary.json",
    log:
        "logs/{study}/track/summary.log",
    conda:
        "../envs/tracking.yaml"
    shell:
        "clipmerge log-mlflow --summary --receipt {input.receipt} --artifacts {input.table} {input.plots}"
        " --out {output} > {log} 2>&1"
