# Tables and figures from cached samples and scores: the sample table, the evaluation (scores, summaries,
# best-settings and trade-off plots, best alphas, best edits, sweeps), and each pair's trade-off figure.
rule sample_table:
    """Every sample with its pair, variant, seed, alpha, parameters and path."""
    input:
        samples=[png for run in RUNS for png in LAYOUT.samples(run)],
    output:
        csv=f"{RESULTS}/tables/samples.csv",
        markdown=report(
            f"{RESULTS}/tables/samples.md",
            caption="../report/samples_table.rst",
            category="Tables",
            labels={"table": "samples"},
        ),
    log:
        f"{LOGS}/evaluate/sample_table.log",
    benchmark:
        f"{BENCH}/evaluate/sample_table.tsv"
    threads: 1
    resources:
        **get_resources("aggregate"),
    params:
        rows=sample_table_rows(RUNS, BASELINE_RUNS, LAYOUT),
        code=code_version("evaluate"),
    script:
        "../scripts/sample_table.py"


rule evaluate:
    """Everything computed from the scores; reruns from cached scores without touching samples."""
    input:
        scores=get_score_csvs(),
    output:
        scores_csv=f"{RESULTS}/tables/scores.csv",
        scores_parquet=f"{RESULTS}/tables/scores.parquet",
        summary_csv=f"{RESULTS}/tables/summary.csv",
        summary_md=report(
            f"{RESULTS}/tables/summary.md",
            caption="../report/summary.rst",
            category="Evaluation",
            labels={"figure": "summary table"},
        ),
        best_settings=report(
            f"{RESULTS}/figures/best_settings.png",
            caption="../report/best_settings.rst",
            category="Evaluation",
            labels={"figure": "best settings"},
        ),
        tradeoff=report(
            f"{RESULTS}/figures/tradeoff.png",
            caption="../report/tradeoff.rst",
            category="Evaluation",
            labels={"figure": "trade-off, all pairs"},
        ),
        best_alpha=f"{RESULTS}/tables/best_alpha.csv",
        best_summary_csv=f"{RESULTS}/tables/best_summary.csv",
        best_summary_md=report(
            f"{RESULTS}/tables/best_summary.md",
            caption="../report/best_summary.rst",
            category="Evaluation",
            labels={"figure": "best settings, table"},
        ),
        # every two models (config order) pair by pair; the header only with one model (outputs are fixed)
        model_differences_csv=f"{RESULTS}/tables/model_differences.csv",
        model_differences_md=f"{RESULTS}/tables/model_differences.md",
        best_edits=report(
            f"{RESULTS}/montages/best_edits.png",
            caption="../report/best_edits.rst",
            category="Evaluation",
            labels={"figure": "best edits"},
        ),
        sweeps=report(
            directory(f"{RESULTS}/figures/sweeps"),
            patterns=["{sweep}.png"],
            caption="../report/sweep.rst",
            category="Evaluation",
            labels={"figure": "sweep {sweep}"},
        ),
    log:
        f"{LOGS}/evaluate/evaluate.log",
    benchmark:
        f"{BENCH}/evaluate/evaluate.tsv"
    threads: 1
    resources:
        **get_resources("aggregate"),
    params:
        rows=sample_table_rows(RUNS, BASELINE_RUNS, LAYOUT),
        images={pair.pair_id: pair.image for pair in PAIRS},
        text_min=config["best_alpha"]["text_min"],  # the schema default when the config sets none
        sweeps=SWEEPS,
        facets=FACETS,
        models=list(MODELS),
        code=code_version("evaluate"),
    script:
        "../scripts/evaluate.py"


rule pair_tradeoff:
    """One pair's trade-off figure, drawn as soon as the pair's scores exist (beside the other pairs' stages)."""
    input:
        scores=get_pair_score_csvs,
    output:
        figure=report(
            f"{RESULTS}/figures/tradeoff_pairs/{{pair}}.png",
            caption="../report/tradeoff_pair.rst",
            category="Evaluation",
            labels={"figure": "trade-off, pair {pair}"},
        ),
    log:
        f"{LOGS}/evaluate/tradeoff_pairs/{{pair}}.log",
    benchmark:
        f"{BENCH}/evaluate/tradeoff_pairs/{{pair}}.tsv"
    threads: 1
    resources:
        **get_resources("aggregate"),
    params:
        rows=get_pair_sample_rows,
        text_min=config["best_alpha"]["text_min"],
        sweeps=SWEEPS,
        facets=FACETS,
        code=code_version("evaluate"),
    script:
        "../scripts/pair_tradeoff.py"
