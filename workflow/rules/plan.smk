rule experiment_plan:
    """The resolved experiment (config after defaults, model, scorer, every pair x variant with all stage parameters
    and cache keys, SDEdit): what this results folder was planned from, readable without running a model."""
    localrule: True
    output:
        plan=f"{RESULTS}/plan.json",
    params:
        plan=experiment_plan(),
    log:
        f"{LOGS}/plan.log",
    benchmark:
        f"{BENCH}/plan.tsv"
    threads: 1
    resources:
        **stage_resources("aggregate"),
    script:
        "../scripts/plan.py"
