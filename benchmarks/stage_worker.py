"""Run one stage once in this (fresh) process and print its measurements as one JSON line.

`python -m benchmarks.stage_worker STAGE CONFIG_JSON` is how `benchmarks.run` measures each stage's peak
memory: on the CPU the RSS high-water mark never goes down, so each stage gets its own process. Inputs a
stage needs (e_tgt, image latents, a UNet) are prepared before the measurement starts and are not timed.

Stages: embed, finetune-full, finetune-lora, finetune-reference, sample, sample-reference (see STAGES); the
`-reference` ones are `benchmarks.reference`'s (the community pipeline's algorithm).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from imagic_steps.embed import optimize_embedding
from imagic_steps.finetune import finetune_unet, trainable_unet
from imagic_steps.finetune_artefact import FinetuneResult, save_finetuned
from imagic_steps.execution.freed_memory import retain_freed_memory
from imagic_steps.memory import DTYPE_BYTES, GIB, LIBRARY_RSS_GIB, planning_model_size, stage_estimate
from imagic_steps.sample import make_scheduler, sample_alphas
from imagic_steps.variants import EmbedParams, FinetuneParams

from . import reference
from .common import BenchConfig, PeakMemory, load_model_and_image, set_threads, timed

STAGES = ("embed", "finetune-full", "finetune-lora", "finetune-reference", "sample", "sample-reference")


def artefact_bytes(result: FinetuneResult) -> dict[str, int]:
    """Size in bytes of the fine-tune artefact `save_finetuned` writes, with save_dtype fp32 and fp16."""
    sizes = {}
    with tempfile.TemporaryDirectory() as folder:
        for dtype in ("fp32", "fp16"):
            path = Path(folder) / f"finetune_{dtype}.safetensors"
            save_finetuned(path, result, dtype)
            sizes[f"artefact_{dtype}_bytes"] = path.stat().st_size
    return sizes


def estimated_peak_bytes(stage: str, config: BenchConfig, device_type: str) -> int | None:
    """What `imagic_steps.memory` predicts for this process's peak while it runs `stage` (ours only; None for the
    reference's stages and for models the workflow plans no size for, such as an unbuilt `tiny`).

    This process loads the text encoder for every stage (a workflow's fine-tune and sample jobs do not), so it is
    added back. CPU: the peak RSS, i.e. the libraries plus the stage's host estimate. GPU: the device estimate.
    The sample stage samples with a full fp32 copy of the UNet in one batch of every seed x alpha.
    """
    size, _ = planning_model_size(config.model)
    if size is None or stage.endswith("-reference"):
        return None
    job, finetune = {"embed": ("embed", None), "finetune-full": ("finetune", config.finetune_params("full")),
                     "finetune-lora": ("finetune", config.finetune_params("lora")),
                     "sample": ("sample", FinetuneParams(steps=1, mode="full"))}[stage]
    estimate = stage_estimate(job, size, config.dtype, config.resolution, finetune,
                              sample_batch=len(config.alphas) * len(config.seeds))
    text_encoder = 0 if job == "embed" else DTYPE_BYTES[config.dtype] * size.text_encoder / GIB
    if device_type == "cuda":
        return round((estimate.device_total + text_encoder) * GIB)
    return round((LIBRARY_RSS_GIB + estimate.total + text_encoder) * GIB)


def set_malloc(stage: str) -> str:
    """Ours' stages keep the memory they free, as every workflow job does (`imagic_steps.execution.freed_memory`); the
    reference's run with the C library's defaults, as a notebook does. Returns the setting in force, for the table."""
    if not stage.endswith("-reference") and retain_freed_memory():
        return "retain freed"
    return os.environ.get("GLIBC_TUNABLES", "default")


def run_stage(stage: str, config: BenchConfig) -> dict:
    """Measure `stage` once: wall time (s), steps, steps/s, peak memory (bytes) and, for fine-tunes, artefact bytes.

    For sampling, `steps` counts sample-steps (seeds x alphas x denoising steps) so batched and per-image runs compare.
    """
    components, image = load_model_and_image(config)
    device = components.device
    embed = optimize_embedding(components, image, config.prompt, EmbedParams(steps=0, seed=config.seed),
                               progress=False)  # e_opt = e_tgt: enough to drive stages B and C
    alphas, seeds = config.alphas, config.seeds
    sample = config.sample_params()
    scheduler = make_scheduler(config.scheduler, components.scheduler.config)  # the reference pipeline's
    extra: dict = {}
    if stage.startswith("sample"):
        unet = trainable_unet(components.unet, FinetuneParams()).eval()  # what stage C gets from stage B

    with PeakMemory(device) as memory:
        if stage == "embed":
            _, seconds = timed(lambda: optimize_embedding(components, image, config.prompt, config.embed_params(),
                                                          progress=False), device)
            steps = config.steps_embed
        elif stage in ("finetune-full", "finetune-lora"):
            params = config.finetune_params(mode=stage.removeprefix("finetune-"))
            result, seconds = timed(lambda: finetune_unet(components, embed, params, progress=False), device)
            steps = config.steps_finetune
        elif stage == "finetune-reference":
            _, seconds = timed(lambda: reference.finetune_in_place(components, scheduler, embed.image_latents,
                                                                   embed.optimized_embedding, config.steps_finetune,
                                                                   config.finetune_lr), device)
            steps = config.steps_finetune
        elif stage == "sample":
            _, seconds = timed(lambda: sample_alphas(components, unet, embed.target_embedding,
                                                     embed.optimized_embedding, alphas, seeds, sample,
                                                     height=config.resolution, width=config.resolution,
                                                     progress=False), device)
            steps = len(seeds) * len(alphas) * config.sample_steps
        elif stage == "sample-reference":
            components = replace(components, unet=unet)
            _, seconds = timed(lambda: reference.sample_alphas(components, scheduler, embed.target_embedding,
                                                               embed.optimized_embedding, alphas, seeds,
                                                               config.sample_steps, config.guidance_scale,
                                                               config.eta, config.resolution), device)
            steps = len(seeds) * len(alphas) * config.sample_steps
        else:
            raise ValueError(f"unknown stage {stage!r}; choose one of {STAGES}")
    if stage in ("finetune-full", "finetune-lora"):
        extra = artefact_bytes(result)
    return {"stage": stage, "steps": steps, "wall_s": seconds, "steps_per_s": steps / seconds,
            "memory_kind": memory.kind, "peak_bytes": memory.peak, "stage_added_bytes": memory.delta,
            "estimated_peak_bytes": estimated_peak_bytes(stage, config, device.type),
            **extra}


def main(argv: list[str]) -> None:
    stage, config_json = argv
    config = BenchConfig(**json.loads(config_json))
    set_threads(config.threads)
    malloc = set_malloc(stage)
    print(json.dumps({**run_stage(stage, config), "malloc": malloc}))


if __name__ == "__main__":
    main(sys.argv[1:])
