# End-to-end fine-tuning, one job per seed. Params exclude the seed list, so adding a seed trains
# only the new seed; any other fine-tuning key retrains every seed and what depends on them.
# {threads} = DataLoader workers: 1 by default (small CPU jobs run best side by side); the SLURM
# profile raises it for GPU nodes.


rule finetune:
    input:
        init="results/{study}/models/zeroshot/model.safetensors",
        heldout="results/{study}/splits/heldout.txt",
        world=world_manifest,
        impl=impl("src/clipmerge/finetune"),
    output:
        weights="results/{study}/models/finetune_seed{seed}/model.safetensors",
        meta="results/{study}/models/finetune_seed{seed}/meta.json",
        history="results/{study}/models/finetune_seed{seed}/history.jsonl",
    params:
        root=train_root,
        flags=plan.cli_flags(config["finetune"], exclude={"seeds"}),
    resources:
        gpu=1,
        runtime=24 * 60,
    log:
        "logs/{study}/finetune/seed{seed}.log",
    conda:
        "../envs/torch.yaml"
    shell:
        # exec: the trainer replaces the shell, so a SLURM signal reaches it and Snakemake waits
        # until its resumable state is saved.
        "exec clipmerge finetune --init {input.init} --train-root {params.root} --heldout {input.heldout}"
        " --seed {wildcards.seed} {params.flags} --workers {threads}"
        " --out {output.weights} --history {output.history} > {log} 2>&1"
