"""Stage C for one alpha or one whole sample set, every seed (rule sample)."""
from imagic_steps.execution.workflow_job import workflow_job

# first, before any heavy import: on a local run the warm worker runs the rest of this script
job = workflow_job(snakemake.log[0], snakemake.threads, snakemake.resources)

from imagic_steps.sample import run_sample
from imagic_steps.variants import SampleParams

params = snakemake.params
with job.model(params.model, text_encoders=False) as components:
    run_sample(
        components,
        snakemake.input.embed,
        snakemake.input.finetune,
        SampleParams(**params.sample),
        samples=params.samples,
        resolution=params.resolution,
        record=snakemake.output.record,
        pair_id=snakemake.wildcards.pair,
    )
