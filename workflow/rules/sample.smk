rule sample:
    """Stage C from the fine-tuned model: one alpha's samples for every seed (sample_jobs: per_alpha), or the
    whole seed x alpha grid of a sample set (per_variant), denoised sample.batch_size at a time."""
    input:
        unpack(get_sample_inputs),
    output:
        images=get_sample_job_images(),
        record=LAYOUT.sample_record,
    log:
        f"{LOGS}/sample/{{pair}}/{{skey}}/{LAYOUT.sample_job}.log",
    benchmark:
        f"{BENCH}/sample/{{pair}}/{{skey}}/{LAYOUT.sample_job}.tsv"
    # the chain's last model job, before the baselines (see rule embed)
    priority: 1
    threads: 1
    resources:
        **get_resources("sample", estimated=True),
        gpu=GPU_PER_JOB,
    params:
        model=lambda w: MODEL_BLOCKS[get_sample_run(w).model],
        sample=lambda w: dataclasses.asdict(get_sample_run(w).variant.sample),
        samples=get_sample_triples,  # (seed, alpha, path) of each output PNG, from the planned run
        resolution=lambda w: get_sample_run(w).variant.resolution,
        code=code_version("sample"),
    script:
        "../scripts/sample.py"
