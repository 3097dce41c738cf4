"""Stage C for one alpha or one whole sample set, every seed (rule sample)."""
from imagic_steps.worker import hand_over_to_worker

hand_over_to_worker()  # local runs: the warm worker runs this script (imagic_steps/worker.py)

from imagic_steps.jobs import model_job
from imagic_steps.sample import run_sample
from imagic_steps.variants import SampleParams

params = snakemake.params
with model_job(snakemake.log[0], snakemake.threads, params.model,
               getattr(snakemake.resources, "gpu_mem_mb", None), text_encoders=False) as components:
    run_sample(
        components,
        snakemake.input.embed,
        snakemake.input.finetune,
        SampleParams(**params.sample),
        samples=params.samples,
        resolution=params.resolution,
        record=snakemake.output.record,
        pair_id=snakemake.wildcards.pair,
    )
