# eval.jobs = per_set: one job per (model, evaluation set), so adding a set or a model evaluates only
# what is new (the real run: each job is minutes of GPU). per_model: one job per model for all its sets,
# each result still its own file (the demo: each job is a second of work after seconds of imports).
# eval.cache: every set is decoded once (cache_eval_set) and every model reads the cached pixels.


if EVAL_CACHE:

    rule cache_eval_set:
        input:
            # Its header records the preprocess config (the transform that is cached).
            pretrained=layout.pretrained_weights(),
            world=world_manifest,
            code=code("cache-eval-set"),
        output:
            layout.eval_cache(),
        params:
            adapter=eval_adapter,
            root=eval_root,
            classnames=classnames_spec,
        resources:
            runtime=120,
        log:
            layout.log("cache_eval_set", "{eval_set}"),
        benchmark:
            layout.benchmark("cache_eval_set", "{eval_set}")
        conda:
            "../envs/torch.yaml"
        shell:
            "clipmerge cache-eval-set --weights {input.pretrained} --adapter {params.adapter} --root {params.root}"
            " --classnames {params.classnames} --workers {threads} --out {output} > {log} 2>&1"


rule evaluate:
    wildcard_constraints:
        model="|".join(EVALUATED),  # the ensemble has no weights: rule ensemble makes its results
    input:
        model=layout.model_weights(),
        world=world_manifest,
        caches=lambda wildcards: eval_caches(evaluated_sets(wildcards)),
        code=code("evaluate"),
    output:
        evaluation_outputs(),
    params:
        sets=lambda wildcards: eval_set_flags(wildcards.model, evaluated_sets(wildcards)),
        classnames=classnames_spec,
        batch_size=config["eval"]["batch_size"],
        precision=config["eval"]["precision"],
    resources:
        gpu=1,
        runtime=60,
        loader_workers=lambda wildcards, threads: plan.loader_workers(threads),
    log:
        layout.log("evaluate", EVAL_JOB),
    benchmark:
        layout.benchmark("evaluate", EVAL_JOB)
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge evaluate --model {input.model} --model-id {wildcards.model} {params.sets}"
        " --classnames {params.classnames} --batch-size {params.batch_size} --precision {params.precision}"
        " --workers {resources.loader_workers} > {log} 2>&1"


if ENSEMBLE_MEMBERS:

    localrules:
        ensemble,

    # The output-space ensemble of the fine-tunes, from their saved predictions: no model runs again.
    rule ensemble:
        input:
            evals=[path for m in ENSEMBLE_MEMBERS for path in evals_of(m)],
            predictions=[path for m in ENSEMBLE_MEMBERS for path in predictions_of(m)],
            metas=model_metas(ENSEMBLE_MEMBERS),
            code=code("ensemble"),
        output:
            evals=[layout.eval_result(layout.ENSEMBLE, s) for s in EVAL_SETS],
            predictions=[layout.eval_predictions(layout.ENSEMBLE, s) for s in EVAL_SETS],
            meta=layout.model_meta(layout.ENSEMBLE),
        log:
            layout.log("ensemble"),
        benchmark:
            layout.model_benchmark(layout.ENSEMBLE)
        conda:
            "../envs/tracking.yaml"
        shell:
            "clipmerge ensemble --members {input.evals} --metas {input.metas} --out {output.evals}"
            " --out-meta {output.meta} > {log} 2>&1"
