# Demo world generation and the held-out split of the training set.


rule make_world:
    input:
        code=code("make-world"),
    output:
        manifest=layout.world_manifest(),
        templates=layout.world_templates(),
    params:
        out=layout.world_dir(),
        flags=plan.cli_flags(config.get("world", {})),
    log:
        layout.log("make_world"),
    benchmark:
        layout.benchmark("make_world")
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge make-world --out {params.out} {params.flags} > {log} 2>&1"


rule split_heldout:
    input:
        world=world_manifest,
        mask=heldout_inputs,
        code=code("split-heldout"),
    output:
        layout.heldout_split(),
    params:
        root=train_root,
        how=heldout_flags(),
    log:
        layout.log("split_heldout"),
    benchmark:
        layout.benchmark("split_heldout")
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge split-heldout --train-root {params.root} {params.how} --out {output} > {log} 2>&1"
