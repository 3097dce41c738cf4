rule sample:
    """Stage C: the samples at one alpha, every seed denoised in one batch, from the fine-tuned model."""
    input:
        unpack(get_sample_inputs),
    output:
        images=expand(SAMPLE_PNG, seed=SEEDS, allow_missing=True),
        record=SAMPLE_RECORD,
    params:
        model=MODEL,
        sample=lambda w: dataclasses.asdict(sample_run(w).variant.sample),
        seeds=SEEDS,
        resolution=lambda w: sample_run(w).variant.resolution,
        code=code_version("sample"),
    log:
        f"{LOGS}/sample/{{pair}}/{{skey}}/alpha{{alpha}}.log",
    benchmark:
        f"{BENCH}/sample/{{pair}}/{{skey}}/alpha{{alpha}}.tsv"
    threads: 1
    resources:
        gpu=GPU_PER_JOB,
        **stage_resources("sample", estimated=True),
    script:
        "../scripts/sample.py"
