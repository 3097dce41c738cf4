"""One pair's trade-off figure (rule pair_tradeoff)."""
from imagic_steps.execution.workflow_job import workflow_job

# first, before any heavy import: on a local run the warm worker runs the rest of this script
job = workflow_job(snakemake.log[0], snakemake.threads, snakemake.resources)

from imagic_steps.evaluate import write_pair_tradeoff

params = snakemake.params
with job.context():
    write_pair_tradeoff(params.rows, snakemake.input.scores, snakemake.output.figure,
                        text_min=float(params.text_min), sweeps=params.sweeps, facets=params.facets)
