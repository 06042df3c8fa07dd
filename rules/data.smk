# Demo world generation and the held-out split of the training set.


rule make_world:
    input:
        impl=impl("src/clipmerge/world"),
    output:
        manifest="results/{study}/data/world.json",
    params:
        flags=plan.cli_flags(config.get("world", {})),
    log:
        "logs/{study}/make_world.log",
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge make-world --out results/{wildcards.study}/data {params.flags} > {log} 2>&1"


rule split_heldout:
    input:
        world=world_manifest,
    output:
        "results/{study}/splits/heldout.txt",
    params:
        root=train_root,
        per_class=config["train"]["heldout_per_class"],
        seed=config["train"]["heldout_seed"],
    log:
        "logs/{study}/split_heldout.log",
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge split-heldout --train-root {params.root} --per-class {params.per_class}"
        " --seed {params.seed} --out {output} > {log} 2>&1"
