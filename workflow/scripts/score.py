"""Scores of one sample set against its input and prompt (rule score)."""
from imagic_steps.execution.workflow_job import workflow_job

# first, before any heavy import: on a local run the warm worker runs the rest of this script
job = workflow_job(snakemake.log[0], snakemake.threads, snakemake.resources)

from imagic_steps.score import score_sample_files

params = snakemake.params
with job.context(params.device) as device:
    score_sample_files(params.scorer, device, snakemake.input.image, snakemake.input.samples, params.prompt,
                       params.source_prompt, snakemake.output.scores)
