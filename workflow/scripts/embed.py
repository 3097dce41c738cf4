"""Stage A for one pair (rule embed)."""
from imagic_steps.execution.workflow_job import workflow_job

# first, before any heavy import: on a local run the warm worker runs the rest of this script
job = workflow_job(snakemake.log[0], snakemake.threads, snakemake.resources)

from imagic_steps.embed import run_embed
from imagic_steps.variants import EmbedParams

params, output = snakemake.params, snakemake.output
outputs = [output.artefact, output.losses, output.loss_plot, output.record]
# A stop of a shared trajectory finds its files written by the longer run; if they went missing, it trains itself.
if not job.adopted(params.trajectory_stop, outputs):
    with job.model(params.model) as components:
        run_embed(
            components,
            snakemake.input.image,
            params.prompt,
            EmbedParams(**params.embed),
            resolution=params.resolution,
            artefact=output.artefact,
            losses_csv=output.losses,
            loss_plot=output.loss_plot,
            record=output.record,
            stops=params.trajectory_stops,
            pair_id=snakemake.wildcards.pair,
        )
