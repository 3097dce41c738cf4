"""SDEdit baseline for one strength, all seeds (rule sdedit)."""
from imagic_steps.sdedit import SdeditParams
from imagic_steps.stages import model_job, run_sdedit

params, output, wildcards = snakemake.params, snakemake.output, snakemake.wildcards
with model_job(snakemake.log[0], snakemake.threads, params.model,
               getattr(snakemake.resources, "gpu_mem_mb", None)) as components:
    run_sdedit(
        components,
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
