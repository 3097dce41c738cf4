"""Stage B for one pair and fine-tune setting (rule finetune)."""
from imagic_steps.execution.workflow_job import workflow_job

# first, before any heavy import: on a local run the warm worker runs the rest of this script
job = workflow_job(snakemake.log[0], snakemake.threads, snakemake.resources)

from imagic_steps.finetune import run_finetune
from imagic_steps.variants import FinetuneParams, SampleParams

params, output = snakemake.params, snakemake.output
with job.model(params.model, text_encoders=False) as components:
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
