# Fine-tunes: trained here (one job per seed or sweep variant) or made elsewhere and imported (one
# conversion per file).
#
# End-to-end fine-tuning, one job per seed and one per sweep variant ({finetune} is the model id:
# finetune_seed<k>, finetune_hp<k>). Params are the model's own recipe and seed, so adding a seed or a
# variant trains only it, and a changed variant retrains only itself; any other fine-tuning key
# retrains every fine-tune and what depends on them, except checkpoint_every and gpus, which are
# resources (how often the resumable state is saved changes no result; N GPUs train data-parallel,
# `--ranks N` starting N torchrun ranks, equal to rounding).
# {threads} = DataLoader workers per rank: 1 by default (small CPU jobs run best side by side); the
# SLURM profile raises it for GPU nodes.


rule finetune:
    input:
        init=layout.model_weights(layout.ZEROSHOT),
        init_meta=layout.model_meta(layout.ZEROSHOT),
        heldout=layout.heldout_split(),
        world=world_manifest,
        code=code("finetune"),
    output:
        weights=layout.model_weights("{finetune}"),
        meta=layout.model_meta("{finetune}"),
        history=layout.model_history("{finetune}"),
    params:
        root=train_root,
        seed=training_seed,
        flags=recipe_flags,
    resources:
        gpu=FINETUNE_GPUS,
        runtime=24 * 60,
        checkpoint_every=config["finetune"]["checkpoint_every"],
    log:
        layout.log("finetune", "{finetune}"),
    benchmark:
        layout.model_benchmark("{finetune}")
    conda:
        "../envs/torch.yaml"
    shell:
        # exec: the trainer (or torchrun, which it becomes for --ranks > 1) replaces the shell, so a
        # SLURM signal reaches it and Snakemake waits until the resumable state is saved.
        "exec clipmerge finetune --init {input.init} --train-root {params.root} --heldout {input.heldout}"
        " --seed {params.seed} --model-id {wildcards.finetune} {params.flags}"
        " --checkpoint-every {resources.checkpoint_every} --workers {threads} --ranks {resources.gpu}"
        " --out {output.weights} --history {output.history} > {log} 2>&1"


if IMPORTS:

    # Each external file is converted once into a classifier checkpoint with the study's architecture
    # and header (the zero-shot model is the template; a file without a head gets its head). A changed
    # file or hparams entry re-converts that model only, and what depends on it.
    rule import_model:
        input:
            source=import_source,
            template=layout.model_weights(layout.ZEROSHOT),
            template_meta=layout.model_meta(layout.ZEROSHOT),
            code=code("import-model"),
        output:
            weights=layout.model_weights(layout.imported_id("{name}")),
            meta=layout.model_meta(layout.imported_id("{name}")),
        params:
            model_id=lambda wildcards: layout.imported_id(wildcards.name),
            hparams=import_hparams_flag,
            require_head="--require-head" if config["imports"].get("require_head") else "",
        resources:
            mem_mb=4000,
        log:
            layout.log("import_model", "{name}"),
        benchmark:
            layout.model_benchmark(layout.imported_id("{name}"))
        conda:
            "../envs/torch.yaml"
        shell:
            "clipmerge import-model --source {input.source} --template {input.template}"
            " --model-id {params.model_id} --hparams-json {params.hparams} {params.require_head}"
            " --out {output.weights} > {log} 2>&1"
