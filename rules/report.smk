# The comparison table, the per-stage cost table and the plots, compiled from the result files
# (never from MLflow).


rule compile_table:
    input:
        evals=all_evals,
        predictions=all_predictions,
        metas=all_metas,
        benchmarks=upstream_benchmarks,
        code=code("table"),
    output:
        csv=report(layout.table("csv"), caption="../workflow/report/comparison.rst", category="Comparison"),
        md=layout.table("md"),
        html=layout.table("html"),
        intervals_md=layout.table("md", "intervals"),
        paired=report(layout.table("csv", "paired"), caption="../workflow/report/paired.rst", category="Comparison"),
        paired_md=layout.table("md", "paired"),
        recipes=report(layout.table("csv", "recipes"), caption="../workflow/report/recipes.rst", category="Comparison"),
        recipes_md=layout.table("md", "recipes"),
        costs=report(layout.table("csv", "costs"), caption="../workflow/report/costs.rst", category="Comparison"),
        costs_md=layout.table("md", "costs"),
    params:
        roles=eval_roles(),
        uncertainty=UNCERTAINTY_FLAGS,
    log:
        layout.log("report", "table"),
    benchmark:
        layout.benchmark("compile_table")
    conda:
        "../envs/tracking.yaml"
    shell:
        "clipmerge table --evals {input.evals} --metas {input.metas} --benchmarks {input.benchmarks} {params.roles}"
        " --predictions {input.predictions} {params.uncertainty}"
        " --out-csv {output.csv} --out-md {output.md} --out-html {output.html}"
        " --out-intervals-md {output.intervals_md} --out-paired-csv {output.paired} --out-paired-md {output.paired_md}"
        " --out-recipes-csv {output.recipes} --out-recipes-md {output.recipes_md}"
        " --out-costs-csv {output.costs} --out-costs-md {output.costs_md} > {log} 2>&1"


rule plot_results:
    input:
        evals=all_evals,
        predictions=all_predictions,
        metas=all_metas,
        **plot_diagnostics(),
        code=code("plots"),
    output:
        **plot_outputs(),
    params:
        out_dir=layout.plots_dir(),
        roles=eval_roles(),
        plots=" ".join(PLOTS),
        diagnostics=plot_diagnostics_flags,
        uncertainty=UNCERTAINTY_FLAGS,
    log:
        layout.log("report", "plots"),
    benchmark:
        layout.benchmark("plot_results")
    conda:
        "../envs/tracking.yaml"
    shell:
        "clipmerge plots --evals {input.evals} --metas {input.metas} {params.roles} {params.diagnostics}"
        " --predictions {input.predictions} {params.uncertainty}"
        " --plots {params.plots} --out-dir {params.out_dir} > {log} 2>&1"
