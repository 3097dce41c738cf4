# runs where Snakemake runs, also on a cluster: it only writes the plan (snakefmt 2.1 misplaces a rule's docstring
# beside a `localrule:` directive, so the rule is named here instead)
localrules:
    experiment_plan,


rule experiment_plan:
    """The resolved experiment (config after defaults, model, scorer, every pair x variant with all stage parameters
    and cache keys, SDEdit): what this results folder was planned from, readable without running a model."""
    output:
        plan=f"{RESULTS}/plan.json",
    log:
        f"{LOGS}/plan.log",
    benchmark:
        f"{BENCH}/plan.tsv"
    threads: 1
    resources:
        **get_resources("aggregate"),
    params:
        plan=get_plan_record(),
    script:
        "../scripts/plan.py"
