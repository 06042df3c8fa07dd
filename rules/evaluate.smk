# One job per (model, evaluation set): adding a set or a model evaluates only what is new.


rule evaluate:
    input:
        model=layout.model_weights(),
        world=world_manifest,
        code=code("evaluate"),
    output:
        layout.eval_result(),
    params:
        adapter=eval_adapter,
        root=eval_root,
        classnames=classnames_spec,
        batch_size=config["eval"]["batch_size"],
    resources:
        gpu=1,
        runtime=60,
    log:
        layout.log("evaluate", "{model}/{eval_set}"),
    benchmark:
        layout.benchmark("evaluate", "{model}/{eval_set}")
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge evaluate --model {input.model} --model-id {wildcards.model} --eval-set {wildcards.eval_set}"
        " --adapter {params.adapter} --root {params.root} --classnames {params.classnames}"
        " --batch-size {params.batch_size} --workers {threads} --out {output} > {log} 2>&1"
