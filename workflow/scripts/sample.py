"""Stage C for one alpha or one whole sample set, every seed (rule sample)."""
from itertools import product

from imagic_steps.jobs import job_context
from imagic_steps.stages import ModelSpec, run_sample
from imagic_steps.variants import SampleParams

params, output, wildcards = snakemake.params, snakemake.output, snakemake.wildcards
with job_context(snakemake.log[0], snakemake.threads, params.model["device"],
                 getattr(snakemake.resources, "gpu_mem_mb", None)) as device:
    run_sample(
        ModelSpec.from_config(params.model, device).load(),
        snakemake.input.embed,
        snakemake.input.finetune,
        SampleParams(**params.sample),
        alphas=params.alphas,
        seeds=params.seeds,
        resolution=params.resolution,
        outputs=dict(zip(product(params.seeds, params.alphas), output.images)),  # the rule lists them seed-major
        record=output.record,
        pair_id=wildcards.pair,
    )
