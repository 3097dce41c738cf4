"""Stage A for one pair (rule embed)."""
from imagic_steps.jobs import job_context
from imagic_steps.stages import ModelSpec, run_embed
from imagic_steps.variants import EmbedParams

params, output = snakemake.params, snakemake.output
with job_context(snakemake.log[0], snakemake.threads, params.model["device"],
                 getattr(snakemake.resources, "gpu_mem_mb", None)) as device:
    run_embed(
        ModelSpec.from_config(params.model, device).load(),
        snakemake.input.image,
        params.prompt,
        EmbedParams(**params.embed),
        resolution=params.resolution,
        artefact=output.artefact,
        losses_csv=output.losses,
        loss_plot=output.loss_plot,
        record=output.record,
        pair_id=snakemake.wildcards.pair,
    )
