rule embed:
    """Stage A: optimise e_tgt into e_opt for one pair (shared by variants with equal embed parameters)."""
    input:
        image=get_image,
    output:
        artefact=f"{LAYOUT.embed_dir}/embed.safetensors",
        losses=f"{LAYOUT.embed_dir}/losses.csv",
        loss_plot=report(
            f"{LAYOUT.embed_dir}/losses.png",
            caption="../report/embed_losses.rst",
            category="Training",
            subcategory="{pair}",
            labels={"pair": "{pair}", "stage": "A embed", "key": "{ekey}"},
        ),
        record=f"{LAYOUT.embed_dir}/provenance.json",
    log:
        f"{LOGS}/embed/{{pair}}/{{ekey}}.log",
    benchmark:
        f"{BENCH}/embed/{{pair}}/{{ekey}}.tsv"
    threads: 1
    resources:
        **get_resources("embed", estimated=True),
        gpu=GPU_PER_JOB,
    params:
        model=lambda w: MODEL_BLOCKS[get_embed_run(w).model],
        prompt=lambda w: get_embed_run(w).pair.prompt,
        embed=lambda w: dataclasses.asdict(get_embed_run(w).variant.embed),
        resolution=lambda w: get_embed_run(w).variant.resolution,
        code=code_version("embed"),
    script:
        "../scripts/embed.py"
