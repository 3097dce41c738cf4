"""Score tables, summaries with pair bootstrap intervals, trade-off plots, best alphas and sweeps (rule evaluate)."""
from imagic_steps.worker import hand_over_to_worker

hand_over_to_worker()  # local runs: the warm worker runs this script (imagic_steps/worker.py)

from imagic_steps.evaluate import write_evaluation
from imagic_steps.jobs import job_context

params = snakemake.params
with job_context(snakemake.log[0], snakemake.threads):
    write_evaluation(params.rows, snakemake.input.scores, images=params.images, text_min=float(params.text_min),
                     sweeps=params.sweeps, out=dict(snakemake.output.items()), facets=params.facets)
