"""Stage B for one pair and fine-tune setting (rule finetune)."""
from imagic_steps.worker import hand_over_to_worker

hand_over_to_worker()  # local runs: the warm worker runs this script (imagic_steps/worker.py)

from imagic_steps.finetune import run_finetune
from imagic_steps.jobs import model_job
from imagic_steps.variants import FinetuneParams, SampleParams

params, output = snakemake.params, snakemake.output
with model_job(snakemake.log[0], snakemake.threads, params.model,
               getattr(snakemake.resources, "gpu_mem_mb", None), text_encoders=False) as components:
    run_finetune(
        components,
        snakemake.input.embed,
        FinetuneParams(**params.finetune),
        preview_sample=SampleParams(**params.preview_sample),
        resolution=params.resolution,
        artefact=output.artefact,
        losses_csv=output.losses,
        loss_plot=output.loss_plot,
        previews_dir=output.previews,
        final_preview=output.preview,
        record=output.record,
        checkpoint_dir=params.checkpoint_dir,
        pair_id=snakemake.wildcards.pair,
    )
