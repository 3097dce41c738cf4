rule sdedit:
    """SDEdit baseline: diffusers' img2img at one strength, every seed, on the base model."""
    input:
        image=lambda w: sdedit_run(w).pair.image,
    output:
        images=expand(SDEDIT_PNG, seed=SEEDS, allow_missing=True),
        record=SDEDIT_RECORD,
    params:
        model=MODEL_BLOCK,
        prompt=lambda w: sdedit_run(w).pair.prompt,
        sdedit=lambda w: sdedit_run(w).params,
        samples=get_sdedit_samples,  # (seed, path) of each output PNG, from the planned run
        resolution=lambda w: sdedit_run(w).resolution,
        code=code_version("sdedit"),
    log:
        f"{LOGS}/sdedit/{{pair}}/{{skey}}/strength{{strength}}.log",
    benchmark:
        f"{BENCH}/sdedit/{{pair}}/{{skey}}/strength{{strength}}.tsv"
    threads: 1
    resources:
        gpu=GPU_PER_JOB,
        **stage_resources("sdedit", estimated=True),
    script:
        "../scripts/sdedit.py"
