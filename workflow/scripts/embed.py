"""Stage A for one pair (rule embed)."""
from imagic_steps.worker import hand_over_to_worker

hand_over_to_worker()  # local runs: the warm worker runs this script (imagic_steps/worker.py)

from imagic_steps.embed import run_embed
from imagic_steps.jobs import model_job
from imagic_steps.variants import EmbedParams

params, output = snakemake.params, snakemake.output
with model_job(snakemake.log[0], snakemake.threads, params.model,
               getattr(snakemake.resources, "gpu_mem_mb", None)) as components:
    run_embed(
        components,
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
