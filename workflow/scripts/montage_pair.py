"""Montage of one pair: every method side by side, one row per variant or baseline and seed (rule pair_montage)."""
from imagic_steps.worker import hand_over_to_worker

hand_over_to_worker()  # local runs: the warm worker runs this script (imagic_steps/worker.py)

from imagic_steps.figures import pair_title, save_pair_montage
from imagic_steps.jobs import job_context

with job_context(snakemake.log[0], snakemake.threads):
    save_pair_montage(snakemake.output.montage, snakemake.input.image, snakemake.params.rows,
                      pair_title(**snakemake.params.pair))
