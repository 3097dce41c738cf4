"""SDEdit baseline (Meng et al., 2022): noise the input to a fraction `strength` of the schedule and denoise
it under the target prompt, with diffusers' own img2img pipeline on the already loaded components."""

from __future__ import annotations

from dataclasses import asdict
from typing import Sequence

import torch
from PIL import Image

from .components import SDComponents, kept_weights
from .images import load_image
from .io import save_image, write_json
from .provenance import provenance
from .sample import make_scheduler
from .variants import SdeditParams


def img2img_pipeline(components: SDComponents, scheduler: str):
    """diffusers' img2img pipeline of the model's family (StableDiffusionImg2ImgPipeline,
    StableDiffusionXLImg2ImgPipeline or IFImg2ImgPipeline) sharing the loaded weights (no copy, no safety
    checker)."""
    pipeline = components.family.img2img_pipeline(components, make_scheduler(scheduler, components.scheduler.config))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@torch.inference_mode()
def sdedit(components: SDComponents, image: Image.Image, prompt: str, strength: float, seeds: Sequence[int],
           params: SdeditParams) -> list[Image.Image]:
    """SDEdit samples of `image` (already at the model resolution) towards `prompt`, one per seed.

    strength 0 keeps the input, 1 ignores it; each sample's noise comes from a CPU generator seeded with its
    seed. The pipeline is built once for all seeds. Each call leaves the loaded components as it found them
    (`kept_weights`: SDXL's img2img pipeline recasts the shared VAE), so a sample does not depend on the seeds
    before it, nor anything run later in the process on SDEdit having run.
    """
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"SDEdit strength must be in (0, 1], got {strength}")
    pipeline = img2img_pipeline(components, params.scheduler)
    images = []
    for seed in seeds:
        with kept_weights(*components.frozen_modules()):
            images.append(pipeline(image=image, strength=strength, num_inference_steps=params.steps,
                                   guidance_scale=params.guidance_scale, generator=torch.Generator().manual_seed(seed),
                                   output_type="pil", **components.family.img2img_prompt(components, prompt),
                                   **components.family.img2img_kwargs()).images[0])
    return images


def run_sdedit(components: SDComponents, image_path, prompt: str, params: SdeditParams, *, strength: float,
               samples: Sequence[tuple[int, str]], resolution: int | None, record, pair_id: str = "") -> None:
    """The SDEdit baseline for one strength: a PNG per (seed, path) of `samples` and one provenance record."""
    resolution = resolution or components.resolution
    seeds = [seed for seed, _ in samples]
    images = sdedit(components, load_image(image_path, resolution), prompt, strength, seeds, params)
    for edited, (_, path) in zip(images, samples):
        save_image(edited, path)
    write_json(record, provenance("sdedit", asdict(params), components.provenance(), pair_id=pair_id,
                                  image=str(image_path), prompt=prompt, strength=strength, seeds=seeds))
