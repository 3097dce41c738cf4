rule sample:
    """Stage C from the fine-tuned model: one alpha's samples for every seed (sample_jobs: per_alpha), or the
    whole seed x alpha grid of a sample set (per_variant), denoised sample.batch_size at a time."""
    input:
        unpack(get_sample_inputs),
    output:
        images=sample_job_images(),
        record=SAMPLE_RECORD,
    params:
        model=MODEL,
        sample=lambda w: dataclasses.asdict(sample_run(w).variant.sample),
        seeds=SEEDS,
        alphas=sample_job_alphas,
        resolution=lambda w: sample_run(w).variant.resolution,
        code=code_version("sample"),
    log:
        f"{LOGS}/sample/{{pair}}/{{skey}}/{SAMPLE_JOB}.log",
    benchmark:
        f"{BENCH}/sample/{{pair}}/{{skey}}/{SAMPLE_JOB}.tsv"
    threads: 1
    resources:
        gpu=GPU_PER_JOB,
        **stage_resources("sample", estimated=True),
    script:
        "../scripts/sample.py"
