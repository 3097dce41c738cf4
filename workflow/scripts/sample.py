"""Stage C for one alpha, all seeds (rule sample)."""
from imagic_steps.jobs import job_context
from imagic_steps.stages import ModelSpec, run_sample
from imagic_steps.variants import SampleParams

params, output, wildcards = snakemake.params, snakemake.output, snakemake.wildcards
alpha = float(wildcards.alpha)
with job_context(snakemake.log[0], snakemake.threads, params.model["device"],
                 getattr(snakemake.resources, "gpu_mem_mb", None)) as device:
    run_sample(
        ModelSpec.from_config(params.model, device).load(),
        snakemake.input.embed,
        snakemake.input.finetune,
        SampleParams(**params.sample),
        alphas=[alpha],
        seeds=params.seeds,
        resolution=params.resolution,
        outputs={(seed, alpha): path for seed, path in zip(params.seeds, output.images)},
        record=output.record,
        pair_id=wildcards.pair,
    )
