"""SDEdit baseline for one strength, all seeds (rule sdedit)."""
from imagic_steps.execution.workflow_job import workflow_job

# first, before any heavy import: on a local run the warm worker runs the rest of this script
job = workflow_job(snakemake.log[0], snakemake.threads, snakemake.resources)

from imagic_steps.sdedit import run_sdedit
from imagic_steps.variants import SdeditParams

params, wildcards = snakemake.params, snakemake.wildcards
with job.model(params.model) as components:
    run_sdedit(
        components,
        snakemake.input.image,
        params.prompt,
        SdeditParams(**params.sdedit),
        strength=float(wildcards.strength),
        samples=params.samples,
        resolution=params.resolution,
        record=snakemake.output.record,
        pair_id=wildcards.pair,
    )
