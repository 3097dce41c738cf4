"""The table of every sample (rule sample_table)."""
from imagic_steps.execution.workflow_job import workflow_job

# first, before any heavy import: on a local run the warm worker runs the rest of this script
job = workflow_job(snakemake.log[0], snakemake.threads, snakemake.resources)

from imagic_steps.evaluate import write_table

MARKDOWN_COLUMNS = ["pair_id", "variant", "seed", "alpha", "finetune_mode", "embed_steps", "finetune_steps",
                    "scheduler", "sample"]

with job.context():
    write_table(snakemake.params.rows, snakemake.output.csv, snakemake.output.markdown, MARKDOWN_COLUMNS)
