"""Stage C for one seed and alpha (rule sample)."""
from imagic_steps.jobs import job_context
from imagic_steps.stages import ModelSpec, run_sample
from imagic_steps.variants import SampleParams

params, output, wildcards = snakemake.params, snakemake.output, snakemake.wildcards
seed, alpha = int(wildcards.seed), float(wildcards.alpha)
with job_context(snakemake.log[0], snakemake.threads, params.model["device"]) as device:
    run_sample(
        ModelSpec.from_config(params.model, device).load(),
        snakemake.input.embed,
        snakemake.input.finetune,
        SampleParams(**params.sample),
        alphas=[alpha],
        seeds=[seed],
        resolution=params.resolution,
        outputs={(seed, alpha): output.image},
        record=output.record,
        pair_id=wildcards.pair,
    )
