# The comparison table and plots, compiled from the eval JSONs (never from MLflow).


rule compile_table:
    input:
        evals=all_evals,
        meta=expand("results/{{study}}/models/{model}/meta.json", model=MODELS),
    output:
        csv=report("results/{study}/tables/comparison.csv", caption="../workflow/report/comparison.rst",
                   category="Comparison"),
        md="results/{study}/tables/comparison.md",
        html="results/{study}/tables/comparison.html",
    params:
        models_dir=models_dir,
        roles=eval_roles(),
    log:
        "logs/{study}/report/table.log",
    conda:
        "../envs/tracking.yaml"
    shell:
        "clipmerge table --evals {input.evals} --models-dir {params.models_dir} {params.roles}"
        " --out-csv {output.csv} --out-md {output.md} --out-html {output.html} > {log} 2>&1"


rule plot_results:
    input:
        evals=all_evals,
        meta=expand("results/{{study}}/models/{model}/meta.json", model=MODELS),
    output:
        plots=report(expand("results/{{study}}/plots/{plot}.png", plot=PLOTS),
                     caption="../workflow/report/plots.rst", category="Plots"),
    params:
        models_dir=models_dir,
        roles=eval_roles(),
        plots=" ".join(PLOTS),
    log:
        "logs/{study}/report/plots.log",
    conda:
        "../envs/tracking.yaml"
    shell:
        "clipmerge plots --evals {input.evals} --models-dir {params.models_dir} {params.roles}"
        " --plots {params.plots} --out-dir results/{wildcards.study}/plots > {log} 2>&1"
