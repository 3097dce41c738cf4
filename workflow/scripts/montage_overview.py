"""All pair montages in one figure (rule overview_montage)."""
from imagic_steps.execution.workflow_job import workflow_job

# first, before any heavy import: on a local run the warm worker runs the rest of this script
job = workflow_job(snakemake.log[0], snakemake.threads, snakemake.resources)

from imagic_steps.figures import stack_vertically

with job.context():
    stack_vertically(snakemake.input.montages, snakemake.output.overview)
