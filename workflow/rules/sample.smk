rule sample:
    """Stage C: one sample at one alpha and seed from the fine-tuned model."""
    input:
        unpack(get_sample_inputs),
    output:
        image=SAMPLE_PNG,
        record=SAMPLE_PNG.replace(".png", ".json"),
    params:
        model=MODEL,
        sample=lambda w: dataclasses.asdict(sample_run(w).variant.sample),
        resolution=lambda w: sample_run(w).variant.resolution,
        code=code_version("sample"),
    log:
        f"{LOGS}/sample/{{pair}}/{{skey}}/seed{{seed}}_alpha{{alpha}}.log",
    benchmark:
        f"{BENCH}/sample/{{pair}}/{{skey}}/seed{{seed}}_alpha{{alpha}}.tsv"
    threads: 1
    resources:
        gpu=GPU_PER_JOB,
        **stage_resources("sample"),
    script:
        "../scripts/sample.py"
