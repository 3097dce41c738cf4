"""Scores of one sample set against its input and prompt (rule score)."""
from imagic_steps.jobs import job_context
from imagic_steps.stages import run_score

params = snakemake.params
with job_context(snakemake.log[0], snakemake.threads, params.device) as device:
    run_score(params.scorer, device, snakemake.input.image, snakemake.input.samples, params.prompt,
              params.source_prompt, snakemake.output.scores)
