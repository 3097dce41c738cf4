"""Stage C for one alpha or one whole sample set, every seed (rule sample)."""
from itertools import product

from imagic_steps.stages import model_job, run_sample
from imagic_steps.variants import SampleParams

params, output, wildcards = snakemake.params, snakemake.output, snakemake.wildcards
with model_job(snakemake.log[0], snakemake.threads, params.model,
               getattr(snakemake.resources, "gpu_mem_mb", None)) as components:
    run_sample(
        components,
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
