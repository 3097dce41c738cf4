"""SDEdit baseline for one strength, all seeds (rule sdedit)."""
from imagic_steps.jobs import job_context
from imagic_steps.sdedit import SdeditParams
from imagic_steps.stages import ModelSpec, run_sdedit

params, output, wildcards = snakemake.params, snakemake.output, snakemake.wildcards
with job_context(snakemake.log[0], snakemake.threads, params.model["device"],
                 getattr(snakemake.resources, "gpu_mem_mb", None)) as device:
    run_sdedit(
        ModelSpec.from_config(params.model, device).load(),
        snakemake.input.image,
        params.prompt,
        SdeditParams(**params.sdedit),
        strength=float(wildcards.alpha),
        seeds=params.seeds,
        resolution=params.resolution,
        outputs=output.images,
        record=output.record,
        pair_id=wildcards.pair,
    )
