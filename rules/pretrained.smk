# The pre-trained CLIP (the demo pre-trains its own; a real run fetches an open_clip tag or file)
# and the zero-shot classifier built from it.

if WORLD:

    rule pretrain_demo:
        input:
            world=layout.world_manifest(),
            code=code("pretrain"),
        output:
            weights=layout.pretrained_weights(),
            meta=layout.pretrained_meta(),
        params:
            arch=config["model"]["arch"],
            flags=plan.cli_flags(config.get("pretrain", {})),
        threads: 2
        resources:
            runtime=60,
        log:
            layout.log("pretrain_demo"),
        benchmark:
            layout.benchmark("pretrain_demo")
        conda:
            "../envs/torch.yaml"
        shell:
            "clipmerge pretrain --world {input.world} --arch {params.arch} {params.flags}"
            " --out {output.weights} > {log} 2>&1"

else:

    # Local: login nodes have network, compute nodes may not.
    localrules:
        fetch_pretrained,

    rule fetch_pretrained:
        input:
            code=code("fetch-pretrained"),
        output:
            weights=layout.pretrained_weights(),
            meta=layout.pretrained_meta(),
        params:
            arch=config["model"]["arch"],
            pretrained=config["model"]["pretrained"],
        log:
            layout.log("fetch_pretrained"),
        benchmark:
            layout.benchmark("fetch_pretrained")
        conda:
            "../envs/torch.yaml"
        shell:
            "clipmerge fetch-pretrained --arch {params.arch} --pretrained {params.pretrained}"
            " --out {output.weights} > {log} 2>&1"


rule build_zeroshot:
    input:
        pretrained=layout.pretrained_weights(),
        pretrained_meta=layout.pretrained_meta(),
        world=world_manifest,
        templates=world_templates,
        code=code("zeroshot"),
    output:
        weights=layout.model_weights(layout.ZEROSHOT),
        meta=layout.model_meta(layout.ZEROSHOT),
    params:
        classnames=classnames_spec,
        templates=templates_flag(),
    log:
        layout.log("build_zeroshot"),
    benchmark:
        layout.model_benchmark(layout.ZEROSHOT)
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge zeroshot --pretrained {input.pretrained} --classnames {params.classnames}"
        " --templates {params.templates} --out {output.weights} > {log} 2>&1"
