# One job per (model, evaluation set): adding a set or a model evaluates only what is new.


rule evaluate:
    input:
        model="results/{study}/models/{model}/model.safetensors",
        world=world_manifest,
        impl=impl("src/clipmerge/evaluate.py", "src/clipmerge/data/eval_sets.py"),
    output:
        "results/{study}/eval/{model}/{eval_set}.json",
    params:
        adapter=eval_adapter,
        root=eval_root,
        classnames=classnames_spec,
        batch_size=config["eval"]["batch_size"],
    resources:
        gpu=1,
        runtime=60,
    log:
        "logs/{study}/evaluate/{model}/{eval_set}.log",
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge evaluate --model {input.model} --model-id {wildcards.model} --eval-set {wildcards.eval_set}"
        " --adapter {params.adapter} --root {params.root} --classnames {params.classnames}"
        " --batch-size {params.batch_size} --workers {threads} --out {output} > {log} 2>&1"
