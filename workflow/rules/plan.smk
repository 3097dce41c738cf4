rule experiment_plan:
    output:
        plan=f"{RESULTS}/plan.json",
    log:
        f"{LOGS}/plan.log",
    benchmark:
        f"{BENCH}/plan.tsv"
    """The resolved experiment (config after defaults, model, scorer, every pair x variant with all stage parameters
    and cache keys, SDEdit): what this results folder was planned from, readable without running a model."""
    localrule: True
    threads: 1
    resources:
        **get_resources("aggregate"),
    params:
        plan=get_plan_record(),
    script:
        "../scripts/plan.py"
