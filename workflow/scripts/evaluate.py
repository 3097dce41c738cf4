"""Score tables, summaries with pair bootstrap intervals, trade-off plots, best alphas and sweeps (rule evaluate)."""
from imagic_steps.execution.workflow_job import workflow_job

# first, before any heavy import: on a local run the warm worker runs the rest of this script
job = workflow_job(snakemake.log[0], snakemake.threads, snakemake.resources)

from imagic_steps.evaluate import write_evaluation

params = snakemake.params
with job.context():
    write_evaluation(params.rows, snakemake.input.scores, images=params.images, text_min=float(params.text_min),
                     sweeps=params.sweeps, out=dict(snakemake.output.items()), facets=params.facets,
                     models=params.models)
