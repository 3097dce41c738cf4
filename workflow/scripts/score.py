"""Scores of one sample set against its input and prompt (rule score)."""
from imagic_steps.worker import hand_over_to_worker

hand_over_to_worker()  # local runs: the warm worker runs this script (imagic_steps/worker.py)

from imagic_steps.jobs import job_context
from imagic_steps.score import score_sample_files

params = snakemake.params
with job_context(snakemake.log[0], snakemake.threads, params.device) as device:
    score_sample_files(params.scorer, device, snakemake.input.image, snakemake.input.samples, params.prompt,
                       params.source_prompt, snakemake.output.scores)
