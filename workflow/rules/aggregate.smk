rule pair_montage:
    """Input image, then one column per alpha; one row per variant and seed."""
    input:
        samples=get_pair_samples,
        image=lambda w: pair_runs(w.pair)[0].pair.image,
    output:
        montage=report(
            f"{RESULTS}/montages/pairs/{{pair}}.png",
            caption="../report/montage.rst",
            category="Montages",
            labels={"pair": "{pair}"},
        ),
    params:
        rows=lambda w: montage_rows(w.pair),
        alphas=lambda w: [format_alpha(a) for a in pair_runs(w.pair)[0].alphas],
        code=code_version("aggregate"),
    log:
        f"{LOGS}/aggregate/montage_{{pair}}.log",
    benchmark:
        f"{BENCH}/aggregate/montage_{{pair}}.tsv"
    threads: 1
    resources:
        **stage_resources("aggregate"),
    script:
        "../scripts/pair_montage.py"


rule overview_montage:
    """Every pair's montage in one figure."""
    input:
        montages=expand(f"{RESULTS}/montages/pairs/{{pair}}.png", pair=[p.pair_id for p in PAIRS]),
    output:
        overview=report(
            f"{RESULTS}/montages/overview.png",
            caption="../report/overview.rst",
            category="Montages",
            labels={"pair": "all"},
        ),
    params:
        code=code_version("aggregate"),
    log:
        f"{LOGS}/aggregate/overview.log",
    benchmark:
        f"{BENCH}/aggregate/overview.tsv"
    threads: 1
    resources:
        **stage_resources("aggregate"),
    script:
        "../scripts/overview_montage.py"


rule sample_table:
    """Every sample with its pair, variant, seed, alpha, parameters and path."""
    input:
        samples=[png for run in RUNS for png in run_samples(run)],
    output:
        csv=f"{RESULTS}/tables/samples.csv",
        markdown=report(
            f"{RESULTS}/tables/samples.md",
            caption="../report/samples_table.rst",
            category="Tables",
            labels={"table": "samples"},
        ),
    params:
        rows=sample_table_rows(),
        code=code_version("aggregate"),
    log:
        f"{LOGS}/aggregate/sample_table.log",
    benchmark:
        f"{BENCH}/aggregate/sample_table.tsv"
    threads: 1
    resources:
        **stage_resources("aggregate"),
    script:
        "../scripts/sample_table.py"


rule evaluate:
    """Everything computed from the scores; reruns from cached scores without touching samples."""
    input:
        scores=score_csvs(),
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
        tradeoff=report(
            f"{RESULTS}/figures/tradeoff.png",
            caption="../report/tradeoff.rst",
            category="Evaluation",
            labels={"figure": "trade-off, all pairs"},
        ),
        tradeoff_pairs=report(
            directory(f"{RESULTS}/figures/tradeoff_pairs"),
            patterns=["{pair}.png"],
            caption="../report/tradeoff_pair.rst",
            category="Evaluation",
            labels={"figure": "trade-off {pair}"},
        ),
        best_alpha=f"{RESULTS}/tables/best_alpha.csv",
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
    params:
        rows=sample_table_rows(),
        images={pair.pair_id: pair.image for pair in PAIRS},
        text_min=config["best_alpha"]["text_min"],  # the schema default when the config sets none
        sweeps=SWEEPS,
        code=code_version("evaluate"),
    log:
        f"{LOGS}/aggregate/evaluate.log",
    benchmark:
        f"{BENCH}/aggregate/evaluate.tsv"
    threads: 1
    resources:
        **stage_resources("aggregate"),
    script:
        "../scripts/evaluate.py"
