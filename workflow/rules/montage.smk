# Montages from cached samples: one per pair (every method side by side: the input, then its samples along its
# setting), and all pairs in one figure.
rule pair_montage:
    """One row per Imagic variant and seed (input, then one column per alpha), then per baseline and seed (input,
    then one column per setting of its grid)."""
    input:
        samples=get_pair_samples,
        image=lambda w: get_pair_runs(w.pair)[0].pair.image,
    output:
        montage=report(
            f"{RESULTS}/montages/pairs/{{pair}}.png",
            caption="../report/montage.rst",
            category="Montages",
            labels={"pair": "{pair}"},
        ),
    log:
        f"{LOGS}/montage/{{pair}}.log",
    benchmark:
        f"{BENCH}/montage/{{pair}}.tsv"
    threads: 1
    resources:
        **get_resources("aggregate"),
    params:
        rows=get_montage_rows,
        pair=lambda w: {
            "pair_id": w.pair,
            "prompt": get_pair_runs(w.pair)[0].pair.prompt,
            "source_prompt": get_pair_runs(w.pair)[0].pair.source_prompt,
        },
        code=code_version("montage"),
    script:
        "../scripts/montage_pair.py"


rule overview_montage:
    """Every pair's montage in one figure."""
    input:
        montages=expand(f"{RESULTS}/montages/pairs/{{pair}}.png", pair=[p.pair_id for p in PAIRS]),
    output:
        # not in the report: its viewer cuts the top off a figure taller than the window (every pair's montage is
        # there on its own)
        overview=f"{RESULTS}/montages/overview.png",
    log:
        f"{LOGS}/montage/overview.log",
    benchmark:
        f"{BENCH}/montage/overview.tsv"
    threads: 1
    resources:
        **get_resources("aggregate"),
    params:
        code=code_version("montage"),
    script:
        "../scripts/montage_overview.py"
