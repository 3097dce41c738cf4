"""The resolved experiment plan as JSON (rule experiment_plan)."""
from imagic_steps.worker import hand_over_to_worker

hand_over_to_worker()  # local runs: the warm worker runs this script (imagic_steps/worker.py)

from imagic_steps.io import write_json
from imagic_steps.jobs import job_context

with job_context(snakemake.log[0], snakemake.threads):
    write_json(snakemake.output.plan, snakemake.params.plan)
