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
