# Merges of finished fine-tunes (streamed tensor by tensor), greedy soup on the held-out split, and
# Model Stock during training (its own fine-tuning run).


rule merge_model_stock:
    input:
        anchor="results/{study}/models/zeroshot/model.safetensors",
        finetuned=finetuned(STOCK_SEEDS),
        impl=impl("src/clipmerge/merging/model_stock.py"),
    output:
        weights="results/{study}/models/model_stock/model.safetensors",
        meta="results/{study}/models/model_stock/meta.json",
        diagnostics="results/{study}/models/model_stock/merge.json",
    resources:
        mem_mb=4000,
    log:
        "logs/{study}/merge/model_stock.log",
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge merge --method model_stock --anchor {input.anchor} --inputs {input.finetuned}"
        " --out {output.weights} > {log} 2>&1"


rule merge_uniform_soup:
    input:
        finetuned=finetuned(SEEDS),
        impl=impl("src/clipmerge/merging/uniform_soup.py"),
    output:
        weights="results/{study}/models/uniform_soup/model.safetensors",
        meta="results/{study}/models/uniform_soup/meta.json",
    resources:
        mem_mb=4000,
    log:
        "logs/{study}/merge/uniform_soup.log",
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge merge --method uniform_soup --inputs {input.finetuned} --out {output.weights} > {log} 2>&1"


rule merge_wise_ft:
    input:
        zeroshot="results/{study}/models/zeroshot/model.safetensors",
        finetuned=finetuned([WISE_FT["seed"]]),
        impl=impl("src/clipmerge/merging/wise_ft.py"),
    output:
        weights="results/{study}/models/wise_ft_a{alpha}/model.safetensors",
        meta="results/{study}/models/wise_ft_a{alpha}/meta.json",
    resources:
        mem_mb=4000,
    log:
        "logs/{study}/merge/wise_ft_a{alpha}.log",
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge merge --method wise_ft --anchor {input.zeroshot} --inputs {input.finetuned}"
        " --alpha {wildcards.alpha} --out {output.weights} > {log} 2>&1"


rule greedy_soup:
    input:
        finetuned=finetuned(SEEDS),
        heldout="results/{study}/splits/heldout.txt",
        world=world_manifest,
        impl=impl("src/clipmerge/merging/greedy_soup.py", "src/clipmerge/merging/greedy_cli.py"),
    output:
        weights="results/{study}/models/greedy_soup/model.safetensors",
        meta="results/{study}/models/greedy_soup/meta.json",
        diagnostics="results/{study}/models/greedy_soup/greedy.json",
    params:
        root=train_root,
        accept=config["merge"].get("greedy_soup", {}).get("accept", "strict"),
    resources:
        gpu=1,
        runtime=12 * 60,
        mem_mb=16000,
    log:
        "logs/{study}/merge/greedy_soup.log",
    conda:
        "../envs/torch.yaml"
    shell:
        "clipmerge greedy-soup --inputs {input.finetuned} --train-root {params.root}"
        # The decoded held-out cache (3.9 GB at paper scale) outlives the job: a rerun after adding
        # a seed reuses it. It is rebuilt when the held-out files or the transform change.
        " --heldout {input.heldout} --accept {params.accept} --workers {threads}"
        " --cache results/{wildcards.study}/cache/heldout.safetensors"
        " --out {output.weights} > {log} 2>&1"


rule model_stock_periodic:
    input:
        init="results/{study}/models/zeroshot/model.safetensors",
        heldout="results/{study}/splits/heldout.txt",
        world=world_manifest,
        impl=impl("src/clipmerge/periodic.py", "src/clipmerge/finetune", "src/clipmerge/merging/model_stock.py"),
    output:
        weights="results/{study}/models/model_stock_periodic/model.safetensors",
        meta="results/{study}/models/model_stock_periodic/meta.json",
        history="results/{study}/models/model_stock_periodic/history.jsonl",
    params:
        root=train_root,
        seeds=" ".join(map(str, PERIODIC_SEEDS)),
        flags=plan.cli_flags(config["finetune"], exclude={"seeds"}),
        periodic=plan.cli_flags(config["merge"].get("model_stock_periodic", {}), exclude={"seeds"}),
    resources:
        gpu=1,
        runtime=48 * 60,
    log:
        "logs/{study}/merge/model_stock_periodic.log",
    conda:
        "../envs/torch.yaml"
    shell:
        # exec: see rules/finetune.smk.
        "exec clipmerge periodic --init {input.init} --train-root {params.root} --heldout {input.heldout}"
        " --seeds {params.seeds} {params.flags} {params.periodic} --workers {threads}"
        " --out {output.weights} --history {output.history} > {log} 2>&1"
