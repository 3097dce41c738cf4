"""Stage B for one pair and fine-tune setting (rule finetune)."""
from imagic_steps.execution.workflow_job import workflow_job

# first, before any heavy import: on a local run the warm worker runs the rest of this script
job = workflow_job(snakemake.log[0], snakemake.threads, snakemake.resources)

from imagic_steps.finetune import run_finetune
from imagic_steps.variants import FinetuneParams, SampleParams

params, output = snakemake.params, snakemake.output
outputs = [output.artefact, output.losses, output.loss_plot, output.previews, output.record, output.preview]
# A stop of a shared trajectory finds its files written by the longer run; if they went missing, it trains itself.
if not job.adopted(params.trajectory_stop, outputs):
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
            stops=params.trajectory_stops,
            pair_id=snakemake.wildcards.pair,
        )
