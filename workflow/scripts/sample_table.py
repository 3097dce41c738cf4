"""The table of every sample (rule sample_table)."""
from imagic_steps.worker import hand_over_to_worker

hand_over_to_worker()  # local runs: the warm worker runs this script (imagic_steps/worker.py)

from imagic_steps.evaluate import write_table
from imagic_steps.jobs import job_context

MARKDOWN_COLUMNS = ["pair_id", "variant", "seed", "alpha", "finetune_mode", "embed_steps", "finetune_steps",
                    "scheduler", "sample"]

with job_context(snakemake.log[0], snakemake.threads):
    write_table(snakemake.params.rows, snakemake.output.csv, snakemake.output.markdown, MARKDOWN_COLUMNS)
