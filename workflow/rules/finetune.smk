rule finetune:
    """Stage B: fine-tune the UNet with e_opt fixed (full or LoRA); resumable from checkpoints. Fine-tunes that differ
    only in their step count share one training run: the longest writes the shorter ones' files on its way, and
    their jobs move them into place."""
    input:
        unpack(get_finetune_inputs),
    output:
        artefact=get_finetune_output(f"{LAYOUT.finetune_dir}/finetune.safetensors"),
        losses=f"{LAYOUT.finetune_dir}/losses.csv",
        loss_plot=report(
            f"{LAYOUT.finetune_dir}/losses.png",
            caption="../report/finetune_losses.rst",
            category="Training",
            subcategory="{pair}",
            labels={"pair": "{pair}", "stage": "B finetune", "key": "{fkey}"},
        ),
        preview=report(
            f"{LAYOUT.finetune_dir}/preview.png",
            caption="../report/preview.rst",
            category="Training",
            subcategory="{pair}",
            labels={"pair": "{pair}", "stage": "B preview", "key": "{fkey}"},
        ),
        previews=directory(f"{LAYOUT.finetune_dir}/previews"),
        record=f"{LAYOUT.finetune_dir}/provenance.json",
    log:
        f"{LOGS}/finetune/{{pair}}/{{fkey}}.log",
    benchmark:
        f"{BENCH}/finetune/{{pair}}/{{fkey}}.tsv"
    # the chain's longest job, before the baselines (see rule embed)
    priority: 2
    threads: 1
    resources:
        **get_resources("finetune", estimated=True),
        gpu=GPU_PER_JOB,
    params:
        model=lambda w: MODEL_BLOCKS[get_finetune_run(w).model],
        finetune=lambda w: dataclasses.asdict(get_finetune_run(w).variant.finetune),
        preview_sample=lambda w: dataclasses.asdict(get_finetune_run(w).variant.sample),
        resolution=lambda w: get_finetune_run(w).variant.resolution,
        checkpoint_dir=f"{RESULTS}/resume/finetune/{{pair}}/{{fkey}}",
        trajectory_stops=get_trajectory_stops("finetune"),
        trajectory_stop=get_trajectory_stop("finetune"),
        code=code_version("finetune"),
    script:
        "../scripts/finetune.py"
