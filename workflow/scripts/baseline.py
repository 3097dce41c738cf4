"""A per-pair baseline, every setting and seed (rules ledits, ddim_inversion)."""
from imagic_steps.execution.workflow_job import workflow_job

# first, before any heavy import: on a local run the warm worker runs the rest of this script
job = workflow_job(snakemake.log[0], snakemake.threads, snakemake.resources)

from imagic_steps.ddim_inversion import run_ddim_inversion
from imagic_steps.ledits import run_ledits
from imagic_steps.plan import BASELINES

RUN = {"ledits": run_ledits, "ddim_inversion": run_ddim_inversion}
params = snakemake.params
with job.model(params.model) as components:
    RUN[params.method](
        components,
        snakemake.input.image,
        params.prompt,
        params.source_prompt,
        BASELINES[params.method].params(**params.baseline),
        samples=params.samples,
        resolution=params.resolution,
        record=snakemake.output.record,
        pair_id=snakemake.wildcards.pair,
    )
