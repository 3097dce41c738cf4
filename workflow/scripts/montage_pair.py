"""Montage of one pair: input, then samples per alpha, one row per variant and seed (rule pair_montage)."""
from imagic_steps.worker import hand_over_to_worker

hand_over_to_worker()  # local runs: the warm worker runs this script (imagic_steps/worker.py)

from imagic_steps.figures import save_pair_montage
from imagic_steps.jobs import job_context

with job_context(snakemake.log[0], snakemake.threads):
    save_pair_montage(snakemake.output.montage, snakemake.input.image, snakemake.params.rows,
                      [f"a={a}" for a in snakemake.params.alphas])
