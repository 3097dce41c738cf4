"""Montage of one pair: every method side by side, one row per variant or baseline and seed (rule pair_montage)."""
from imagic_steps.execution.workflow_job import workflow_job

# first, before any heavy import: on a local run the warm worker runs the rest of this script
job = workflow_job(snakemake.log[0], snakemake.threads, snakemake.resources)

from imagic_steps.figures import pair_title, save_pair_montage

with job.context():
    save_pair_montage(snakemake.output.montage, snakemake.input.image, snakemake.params.rows,
                      pair_title(**snakemake.params.pair))
