rule sdedit:
    """SDEdit baseline: diffusers' img2img at one strength, every seed, on the base model."""
    input:
        image=lambda w: get_baseline_run(w).pair.image,
    output:
        images=expand(LAYOUT.sdedit_png, seed=SEEDS, allow_missing=True),
        record=LAYOUT.sdedit_record,
    log:
        f"{LOGS}/sdedit/{{pair}}/{{skey}}/strength{{strength}}.log",
    benchmark:
        f"{BENCH}/sdedit/{{pair}}/{{skey}}/strength{{strength}}.tsv"
    threads: 1
    resources:
        **get_resources("sdedit", estimated=True),
        gpu=GPU_PER_JOB,
    params:
        model=lambda w: MODEL_BLOCKS[get_baseline_run(w).model],
        prompt=lambda w: get_baseline_run(w).pair.prompt,
        sdedit=lambda w: get_baseline_run(w).params,
        samples=get_sdedit_samples,  # (seed, path) of each output PNG, from the planned run
        resolution=lambda w: get_baseline_run(w).resolution,
        code=code_version("sdedit"),
    script:
        "../scripts/sdedit.py"


# LEDITS++ and DDIM inversion, each config block one rule named after it: one job per pair (the inversion is
# shared by the setting grid).
for baseline in ("ledits", "ddim_inversion"):
    if baseline not in BASELINE_GRIDS:
        continue

    rule:
        """A per-pair baseline (its module: imagic_steps.ledits, imagic_steps.ddim_inversion) at every setting of
        its grid and every seed it runs, on the base model."""
        name:
            baseline
        input:
            image=lambda w: get_baseline_run(w).pair.image,
        output:
            images=get_baseline_job_images(baseline),
            record=f"{RESULTS}/{baseline}/{{pair}}/{{skey}}/{baseline}.json",
        log:
            f"{LOGS}/{baseline}/{{pair}}/{{skey}}.log",
        benchmark:
            f"{BENCH}/{baseline}/{{pair}}/{{skey}}.tsv"
        threads: 1
        resources:
            **get_resources(baseline, estimated=True),
            gpu=GPU_PER_JOB,
        params:
            method=baseline,
            model=lambda w: MODEL_BLOCKS[get_baseline_run(w).model],
            prompt=lambda w: get_baseline_run(w).pair.prompt,
            source_prompt=lambda w: get_baseline_run(w).pair.source_prompt,
            baseline=lambda w: get_baseline_run(w).params,
            samples=get_baseline_samples,  # (seed, setting, path) of each output PNG
            resolution=lambda w: get_baseline_run(w).resolution,
            code=code_version(baseline),
        script:
            "../scripts/baseline.py"
