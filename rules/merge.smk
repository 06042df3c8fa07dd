# Merges of finished fine-tunes, the workflow's own and imported ones alike (streamed tensor by
# tensor), greedy soup on the held-out split, and Model Stock during training (its own fine-tuning
# run). A streamed merge's code inputs are the merge command's and its own method's module, so editing
# one method reruns only its merge.


rule merge_model_stock:
    input:
        anchor=layout.model_weights(layout.ZEROSHOT),
        finetuned=weights_of(MERGE_INPUTS["model_stock"]),
        metas=model_metas([layout.ZEROSHOT, *MERGE_INPUTS["model_stock"]]),
        code=merge_code("model_stock"),
    output:
        weights=layout.model_weights("model_stock"),
        meta=layout.model_meta("model_stock"),
        diagnostics=layout.model_diagnostics("model_stock"),
    resources:
        mem_mb=4000,
    log:
        layout.log("merge", "model_stock"),
    benchmark:
        layout.model_benchmark("model_stock")
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge merge --method model_stock --anchor {input.anchor} --inputs {input.finetuned}"
        " --out {output.weights} > {log} 2>&1"


rule merge_uniform_soup:
    input:
        finetuned=weights_of(MERGE_INPUTS["uniform_soup"]),
        metas=model_metas(MERGE_INPUTS["uniform_soup"]),
        code=merge_code("uniform_soup"),
    output:
        weights=layout.model_weights("uniform_soup"),
        meta=layout.model_meta("uniform_soup"),
        diagnostics=layout.model_diagnostics("uniform_soup"),
    resources:
        mem_mb=4000,
    log:
        layout.log("merge", "uniform_soup"),
    benchmark:
        layout.model_benchmark("uniform_soup")
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge merge --method uniform_soup --inputs {input.finetuned} --out {output.weights} > {log} 2>&1"


rule merge_wise_ft:
    input:
        zeroshot=layout.model_weights(layout.ZEROSHOT),
        finetuned=weights_of([WISE_FT["model"]]),
        metas=model_metas([layout.ZEROSHOT, WISE_FT["model"]]),
        code=merge_code("wise_ft"),
    output:
        weights=layout.model_weights("wise_ft_a{alpha}"),
        meta=layout.model_meta("wise_ft_a{alpha}"),
        diagnostics=layout.model_diagnostics("wise_ft_a{alpha}", kind=layout.WISE_FT),
    resources:
        mem_mb=4000,
    log:
        layout.log("merge", "wise_ft_a{alpha}"),
    benchmark:
        layout.model_benchmark("wise_ft_a{alpha}")
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge merge --method wise_ft --anchor {input.zeroshot} --inputs {input.finetuned}"
        " --alpha {wildcards.alpha} --model-id wise_ft_a{wildcards.alpha} --out {output.weights} > {log} 2>&1"


# The task-vector merges around the zero-shot model (task arithmetic, TIES, DARE, DARE-TIES) and SLERP:
# streamed like Model Stock; their inputs are plan.merge_inputs (merge.<method>.models/.seeds, default
# every fine-tune; SLERP the first two), their options merge.<method>'s keys as flags (plan.result_flags).


for METHOD in (*plan.TASK_VECTOR_MERGES, "slerp"):

    rule:
        name:
            f"merge_{METHOD}"
        input:
            anchor=layout.model_weights(layout.ZEROSHOT),
            finetuned=weights_of(MERGE_INPUTS[METHOD]),
            metas=model_metas([layout.ZEROSHOT, *MERGE_INPUTS[METHOD]]),
            code=merge_code(METHOD),
        output:
            weights=layout.model_weights(METHOD),
            meta=layout.model_meta(METHOD),
            diagnostics=layout.model_diagnostics(METHOD),
        params:
            method=METHOD,
            flags=plan.result_flags(config, METHOD),
        resources:
            mem_mb=4000,
        log:
            layout.log("merge", METHOD),
        benchmark:
            layout.model_benchmark(METHOD)
        conda:
            "../envs/torch.yaml"
        shell:
            "clipmerge merge --method {params.method} --anchor {input.anchor} --inputs {input.finetuned}"
            " {params.flags} --out {output.weights} > {log} 2>&1"


rule greedy_soup:
    input:
        finetuned=weights_of(MERGE_INPUTS["greedy_soup"]),
        metas=model_metas(MERGE_INPUTS["greedy_soup"]),
        heldout=layout.heldout_split(),
        world=world_manifest,
        code=code("greedy-soup"),
    output:
        weights=layout.model_weights("greedy_soup"),
        meta=layout.model_meta("greedy_soup"),
        diagnostics=layout.model_diagnostics("greedy_soup"),
    params:
        root=train_root,
        accept=config["merge"].get("greedy_soup", {}).get("accept", "strict"),
        precision=config["eval"]["precision"],
        # The decoded held-out cache (3.9 GB at paper scale) outlives the job: a rerun after adding
        # a seed reuses it. It is rebuilt when the held-out files or the transform change.
        cache=layout.heldout_cache(),
    resources:
        gpu=1,
        runtime=12 * 60,
        mem_mb=16000,
    log:
        layout.log("merge", "greedy_soup"),
    benchmark:
        layout.model_benchmark("greedy_soup")
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge greedy-soup --inputs {input.finetuned} --train-root {params.root}"
        " --heldout {input.heldout} --accept {params.accept} --precision {params.precision} --workers {threads}"
        " --cache {params.cache} --out {output.weights} > {log} 2>&1"


rule model_stock_periodic:
    input:
        init=layout.model_weights(layout.ZEROSHOT),
        init_meta=layout.model_meta(layout.ZEROSHOT),
        heldout=layout.heldout_split(),
        world=world_manifest,
        code=code("periodic"),
    output:
        weights=layout.model_weights("model_stock_periodic"),
        meta=layout.model_meta("model_stock_periodic"),
        history=layout.model_history("model_stock_periodic"),
        diagnostics=layout.model_diagnostics("model_stock_periodic"),
    params:
        root=train_root,
        seeds=" ".join(map(str, PERIODIC_SEEDS)),
        flags=plan.result_flags(config, "finetune"),
        periodic=plan.result_flags(config, "model_stock_periodic"),
    resources:
        gpu=PERIODIC_GPUS,
        runtime=48 * 60,
        checkpoint_every=config["finetune"]["checkpoint_every"],
    log:
        layout.log("merge", "model_stock_periodic"),
    benchmark:
        layout.model_benchmark("model_stock_periodic")
    conda:
        "../envs/torch.yaml"
    shell:
        # exec: see rules/finetune.smk.
        "exec clipmerge periodic --init {input.init} --train-root {params.root} --heldout {input.heldout}"
        " --seeds {params.seeds} {params.flags} {params.periodic} --checkpoint-every {resources.checkpoint_every}"
        " --workers {threads} --ranks {resources.gpu} --out {output.weights} --history {output.history}"
        " > {log} 2>&1"
