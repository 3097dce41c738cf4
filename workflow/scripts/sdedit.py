"""SDEdit baseline for one strength, all seeds (rule sdedit)."""
from imagic_steps.worker import hand_over_to_worker

hand_over_to_worker()  # local runs: the warm worker runs this script (imagic_steps/worker.py)

from imagic_steps.jobs import model_job
from imagic_steps.sdedit import run_sdedit
from imagic_steps.variants import SdeditParams

params, wildcards = snakemake.params, snakemake.wildcards
with model_job(snakemake.log[0], snakemake.threads, params.model,
               getattr(snakemake.resources, "gpu_mem_mb", None)) as components:
    run_sdedit(
        components,
        snakemake.input.image,
        params.prompt,
        SdeditParams(**params.sdedit),
        strength=float(wildcards.strength),
        samples=params.samples,
        resolution=params.resolution,
        record=snakemake.output.record,
        pair_id=wildcards.pair,
    )
