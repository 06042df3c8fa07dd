# End-to-end fine-tuning, one job per seed. Params exclude the seed list, so adding a seed trains
# only the new seed; any other fine-tuning key retrains every seed and what depends on them, except
# checkpoint_every, which is a resource (how often the resumable state is saved changes no result).
# {threads} = DataLoader workers: 1 by default (small CPU jobs run best side by side); the SLURM
# profile raises it for GPU nodes.


rule finetune:
    input:
        init=layout.model_weights(layout.ZEROSHOT),
        init_meta=layout.model_meta(layout.ZEROSHOT),
        heldout=layout.heldout_split(),
        world=world_manifest,
        code=code("finetune"),
    output:
        weights=layout.model_weights("finetune_seed{seed}"),
        meta=layout.model_meta("finetune_seed{seed}"),
        history=layout.model_history("finetune_seed{seed}"),
    params:
        root=train_root,
        flags=plan.result_flags(config, "finetune"),
    resources:
        gpu=1,
        runtime=24 * 60,
        checkpoint_every=config["finetune"]["checkpoint_every"],
    log:
        layout.log("finetune", "seed{seed}"),
    benchmark:
        layout.model_benchmark("finetune_seed{seed}")
    conda:
        "../envs/torch.yaml"
    shell:
        # exec: the trainer replaces the shell, so a SLURM signal reaches it and Snakemake waits
        # until its resumable state is saved.
        "exec clipmerge finetune --init {input.init} --train-root {params.root} --heldout {input.heldout}"
        " --seed {wildcards.seed} {params.flags} --checkpoint-every {resources.checkpoint_every}"
        " --workers {threads} --out {output.weights} --history {output.history} > {log} 2>&1"
