"""A per-pair baseline, every setting and seed (rules ledits, ddim_inversion)."""
from imagic_steps.worker import hand_over_to_worker

hand_over_to_worker()  # local runs: the warm worker runs this script (imagic_steps/worker.py)

from imagic_steps.ddim_inversion import run_ddim_inversion
from imagic_steps.jobs import model_job
from imagic_steps.ledits import run_ledits
from imagic_steps.plan import BASELINES

RUN = {"ledits": run_ledits, "ddim_inversion": run_ddim_inversion}
params = snakemake.params
with model_job(snakemake.log[0], snakemake.threads, params.model,
               getattr(snakemake.resources, "gpu_mem_mb", None)) as components:
    RUN[params.method](
        components,
        snakemake.input.image,
        params.prompt,
        params.source_prompt,
        BASELINES[params.method].params(**params.baseline),
        samples=params.samples,
        resolution=params.resolution,
        record=snakemake.output.record,
        pair_id=snakemake.wildcards.pair,
    )
