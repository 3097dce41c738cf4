"""SDEdit baseline for one strength and seed (rule sdedit)."""
from imagic_steps.jobs import job_context
from imagic_steps.sdedit import SdeditParams
from imagic_steps.stages import ModelSpec, run_sdedit

params, output, wildcards = snakemake.params, snakemake.output, snakemake.wildcards
with job_context(snakemake.log[0], snakemake.threads, params.model["device"]) as device:
    run_sdedit(
        ModelSpec.from_config(params.model, device).load(),
        snakemake.input.image,
        params.prompt,
        SdeditParams(**params.sdedit),
        strength=float(wildcards.alpha),
        seed=int(wildcards.seed),
        resolution=params.resolution,
        output=output.image,
        record=output.record,
        pair_id=wildcards.pair,
    )
