rule sdedit:
    """SDEdit baseline: diffusers' img2img at one strength and seed on the base model."""
    input:
        image=lambda w: sdedit_run(w).pair.image,
    output:
        image=SDEDIT_PNG,
        record=SDEDIT_PNG.replace(".png", ".json"),
    params:
        model=MODEL,
        prompt=lambda w: sdedit_run(w).pair.prompt,
        sdedit=lambda w: sdedit_run(w).params,
        resolution=lambda w: sdedit_run(w).resolution,
        code=code_version("sdedit"),
    log:
        f"{LOGS}/sdedit/{{pair}}/{{skey}}/seed{{seed}}_strength{{alpha}}.log",
    benchmark:
        f"{BENCH}/sdedit/{{pair}}/{{skey}}/seed{{seed}}_strength{{alpha}}.tsv"
    threads: 1
    resources:
        gpu=GPU_PER_JOB,
        **stage_resources("sample"),
    script:
        "../scripts/sdedit.py"
