rule score:
    """CLIP text alignment, CLIP image similarity and LPIPS of one sample set (or SDEdit set) vs its input."""
    input:
        samples=lambda w: get_scored_group(w)[1],
        image=lambda w: get_scored_group(w)[0].image,
    output:
        scores=LAYOUT.scores_csv,
    log:
        f"{LOGS}/score/{{pair}}/{{skey}}.log",
    benchmark:
        f"{BENCH}/score/{{pair}}/{{skey}}.tsv"
    threads: 1
    resources:
        **get_resources("score"),
        gpu=GPU_PER_JOB,
    params:
        scorer=SCORER,
        prompt=lambda w: get_scored_group(w)[0].prompt,
        source_prompt=lambda w: get_scored_group(w)[0].source_prompt,
        device=SCORE_DEVICE,
        code=code_version("score"),
    script:
        "../scripts/score.py"
