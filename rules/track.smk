# MLflow is a view of results/: local rules log one run per model from its files, so a tracking
# server outage never kills a GPU job. The store and experiment are created once, before parallel
# writers (concurrent first-time sqlite migrations corrupt the store).


rule init_mlflow:
    input:
        code=code("init-mlflow"),
    output:
        layout.tracking_receipt(),
    params:
        uri=MLFLOW_URI,
        experiment=config.get("mlflow", {}).get("experiment", f"clipmerge/{STUDY}"),
    log:
        layout.log("track", "init_mlflow"),
    benchmark:
        layout.benchmark("init_mlflow")
    conda:
        "../envs/tracking.yaml"
    shell:
        "clipmerge init-mlflow --tracking-uri {params.uri} --experiment {params.experiment}"
        " --out {output} > {log} 2>&1"


if config["mlflow"]["jobs"] == "per_model":

    localrules:
        log_summary,

    rule log_mlflow:
        input:
            receipt=layout.tracking_receipt(),
            meta=layout.model_meta(),
            history=training_history,
            diagnostics=model_diagnostics,
            evals=model_evals,
            predictions=model_predictions,
            code=code("log-mlflow"),
        output:
            layout.tracking_run(),
        params:
            history=lambda wildcards, input: f"--history {input.history}" if input.history else "",
            diagnostics=lambda wildcards, input: f"--diagnostics {input.diagnostics}" if input.diagnostics else "",
            roles=eval_roles(),
            uncertainty=UNCERTAINTY_FLAGS,
            config_hash=config_hash,
        log:
            layout.log("track", "{model}"),
        benchmark:
            layout.benchmark("log_mlflow", "{model}")
        conda:
            "../envs/tracking.yaml"
        shell:
            "clipmerge log-mlflow --receipt {input.receipt} --study {wildcards.study} --meta {input.meta}"
            " {params.history} {params.diagnostics} --evals {input.evals} {params.roles}"
            " --predictions {input.predictions} {params.uncertainty}"
            " --config-hash {params.config_hash} --out {output} > {log} 2>&1"

    rule log_summary:
        input:
            receipt=layout.tracking_receipt(),
            runs=[layout.tracking_run(m) for m in MODELS],
            table=layout.table("csv"),
            paired=layout.table("csv", "paired"),
            costs=layout.table("csv", "costs"),
            recipes=layout.table("csv", "recipes"),
            plots=plot_files(),
            code=code("log-mlflow"),
        output:
            layout.tracking_summary(),
        log:
            layout.log("track", "summary"),
        benchmark:
            layout.benchmark("log_summary")
        conda:
            "../envs/tracking.yaml"
        shell:
            "clipmerge log-mlflow --summary --receipt {input.receipt} --artifacts {input.table} {input.paired} {input.recipes} {input.costs}"
            " {input.plots} --out {output} > {log} 2>&1"

else:

    # Every model's run, then the summary run, in one process; the same runs and receipts as per_model.
    rule log_mlflow:
        input:
            receipt=layout.tracking_receipt(),
            runs=[tracking_inputs(m) for m in MODELS],
            table=layout.table("csv"),
            paired=layout.table("csv", "paired"),
            costs=layout.table("csv", "costs"),
            recipes=layout.table("csv", "recipes"),
            plots=plot_files(),
            code=code("log-mlflow"),
        output:
            runs=[layout.tracking_run(m) for m in MODELS],
            summary=layout.tracking_summary(),
        params:
            runs=lambda wildcards: tracking_runs_json(),
            roles=eval_roles(),
            uncertainty=UNCERTAINTY_FLAGS,
        log:
            layout.log("track", "study"),
        benchmark:
            layout.benchmark("log_mlflow")
        conda:
            "../envs/tracking.yaml"
        shell:
            "clipmerge log-mlflow --receipt {input.receipt} --study {wildcards.study} --runs {params.runs:q}"
            " {params.roles} {params.uncertainty} --artifacts {input.table} {input.paired} {input.recipes} {input.costs} {input.plots} --out {output.summary} > {log} 2>&1"
