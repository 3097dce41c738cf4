rule embed:
    """Stage A: optimise e_tgt into e_opt for one pair (shared by variants with equal embed parameters). Embeds that
    differ only in their step count share one training run: the longest writes the shorter ones' files on its way,
    and their jobs move them into place."""
    input:
        unpack(get_embed_inputs),
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
    # the first job of each pair's longest chain (embed -> fine-tune -> sample -> score), scheduled before the
    # baselines, whose independent jobs then fill the cores to the end
    priority: 3
    threads: 1
    resources:
        **get_resources("embed", estimated=True),
        gpu=GPU_PER_JOB,
    params:
        model=lambda w: MODEL_BLOCKS[get_embed_run(w).model],
        prompt=lambda w: get_embed_run(w).pair.prompt,
        embed=lambda w: dataclasses.asdict(get_embed_run(w).variant.embed),
        resolution=lambda w: get_embed_run(w).variant.resolution,
        trajectory_stops=get_trajectory_stops("embed"),
        trajectory_stop=get_trajectory_stop("embed"),
        code=code_version("embed"),
    script:
        "../scripts/embed.py"
