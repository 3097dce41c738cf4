"""All pair montages in one figure (rule overview_montage)."""
from imagic_steps.worker import hand_over_to_worker

hand_over_to_worker()  # local runs: the warm worker runs this script (imagic_steps/worker.py)

from imagic_steps.figures import stack_vertically
from imagic_steps.jobs import job_context

with job_context(snakemake.log[0], snakemake.threads):
    stack_vertically(snakemake.input.montages, snakemake.output.overview)
