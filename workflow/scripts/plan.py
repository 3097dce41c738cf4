"""The resolved experiment plan as JSON (rule experiment_plan)."""
from imagic_steps.execution.workflow_job import workflow_job

# first, before any heavy import: on a local run the warm worker runs the rest of this script
job = workflow_job(snakemake.log[0], snakemake.threads, snakemake.resources)

from imagic_steps.io import write_json

with job.context():
    write_json(snakemake.output.plan, snakemake.params.plan)
