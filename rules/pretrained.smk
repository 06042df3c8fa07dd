# The pre-trained CLIP (the demo pre-trains its own; a real run fetches an open_clip tag or file)
# and the zero-shot classifier built from it.

if WORLD:

    rule pretrain_demo:
        input:
            world="results/{study}/data/world.json",
            impl=impl("src/clipmerge/pretrain.py"),
        output:
            weights="results/{study}/pretrained/model.safetensors",
            meta="results/{study}/pretrained/meta.json",
        params:
            arch=config["model"]["arch"],
            flags=plan.cli_flags(config.get("pretrain", {})),
        threads: 2
        resources:
            runtime=60,
        log:
            "logs/{study}/pretrain_demo.log",
        conda:
            "../envs/torch.yaml"
        shell:
            "clipmerge pretrain --world results/{wildcards.study}/data --arch {params.arch} {params.flags}"
            " --out {output.weights} > {log} 2>&1"

else:

    # Local: login nodes have network, compute nodes may not.
    localrules:
        fetch_pretrained,

    rule fetch_pretrained:
        output:
            weights="results/{study}/pretrained/model.safetensors",
            meta="results/{study}/pretrained/meta.json",
        params:
            arch=config["model"]["arch"],
            pretrained=config["model"]["pretrained"],
        log:
            "logs/{study}/fetch_pretrained.log",
        conda:
            "../envs/torch.yaml"
        shell:
            "clipmerge fetch-pretrained --arch {params.arch} --pretrained {params.pretrained}"
            " --out {output.weights} > {log} 2>&1"


rule build_zeroshot:
    input:
        pretrained="results/{study}/pretrained/model.safetensors",
        classnames=world_manifest,
        impl=impl("src/clipmerge/zeroshot.py"),
    output:
        weights="results/{study}/models/zeroshot/model.safetensors",
        meta="results/{study}/models/zeroshot/meta.json",
    params:
        classnames=classnames_spec,
        templates=templates_flag(),
    log:
        "logs/{study}/build_zeroshot.log",
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge zeroshot --pretrained {input.pretrained} --classnames {params.classnames}"
        " --templates {params.templates} --out {output.weights} > {log} 2>&1"
