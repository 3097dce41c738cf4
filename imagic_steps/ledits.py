"""LEDITS++ baseline (Brack et al., CVPR 2024) through diffusers' LEditsPPPipelineStableDiffusion(XL) on the loaded
components (the sd and sdxl families: `model_folder.LEDITS_FAMILIES`; IF has no LEDITS++ pipeline and is refused).

Per seed the input is inverted once (edit-friendly DDPM inversion under the empty prompt, as the pipelines do by
default, or the pair's source prompt with `use_source_prompt`; with a CPU generator seeded with the seed: the
inversion draws the noisy latents it corrects), then edited once per edit guidance scale towards the prompt. The
scheduler is the one the pipeline's docs recommend and that it switches any other scheduler to:
DPMSolverMultistepScheduler (algorithm_type "sde-dpmsolver++", solver_order 2) from the model's scheduler config.

The pipeline keeps the inversion on itself (`init_latents`, `zs`, `inversion_steps`); each call resets the
scheduler's timesteps and its solver history and reads the inversion without changing it, so the edits of one
inversion do not depend on one another (tests/test_baselines.py checks it). The pipeline also swaps the UNet's
attention processors (plain ones for the inversion, LEDITS++'s cross-attention stores for the edits), and the SDXL
one casts the VAE (it expects it in the pipeline's dtype and upcasts a `force_upcast` VAE around each encode and
decode, back to fp16 after): the loaded UNet's own processors and every component's own weights (`kept_weights`)
are put back afterwards, so stages run later in the same process see the components unchanged. An fp16 SDXL model
keeps its VAE in fp32 (`StableDiffusionXLFamily.finish_loading`); the edits hand the pipeline the VAE in the
model's dtype before each of its calls, as diffusers' own SDXL loading gives it (`vae_in_pipeline_dtype`: with the
fp32 VAE its encode fed fp16 pixels to fp32 weights and failed), and it upcasts it for each encode and decode itself.

The implicit mask: the pipelines' defaults (sd: the intersection of the noise-quantile mask and a cross-attention
mask, sdxl: the noise-quantile mask alone), except that a UNet without cross-attention at a quarter of the latent
resolution, where the pipeline reads the attention maps (16 x 16 of SD's 64 x 64 latents), has no cross-attention
mask: then the noise-quantile mask alone (the tiny and digits models; `intersect_mask`, recorded).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from dataclasses import asdict
from typing import Iterator, Sequence

import torch
from PIL import Image

from .components import SDComponents, kept_weights
from .images import load_image
from .io import save_image, write_json
from .provenance import provenance
from .variants import LeditsParams

logger = logging.getLogger(__name__)


def ledits_scheduler(components: SDComponents):
    """DPMSolverMultistepScheduler, sde-dpmsolver++ of order 2, from the model's scheduler config (what the
    LEDITS++ pipelines use in place of any scheduler but DDIM)."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler.from_config(components.scheduler.config, algorithm_type="sde-dpmsolver++",
                                                   solver_order=2)


def ledits_pipeline(components: SDComponents):
    """diffusers' LEDITS++ pipeline of the model's family sharing the loaded weights (no copy, no safety checker);
    PlanError for a family without one (IF)."""
    pipeline = components.family.ledits_pipeline(components, ledits_scheduler(components))
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def attention_maps_fit(unet) -> bool:
    """Whether the UNet cross-attends at a quarter of the latent resolution or coarser (a down block after the
    second), the attention maps LEDITS++'s cross-attention mask is made of."""
    return any("CrossAttn" in block for block in unet.config.down_block_types[2:])


def intersect_mask(pipeline, warn: bool = True) -> bool:
    """Whether the edits intersect the noise-quantile mask with the cross-attention mask: the pipeline's default
    (sd yes, sdxl no), off where the UNet has no attention maps to make it of (`attention_maps_fit`)."""
    default = inspect.signature(type(pipeline).__call__).parameters["use_intersect_mask"].default
    if default and not attention_maps_fit(pipeline.unet):
        if warn:
            logger.warning("LEDITS++: the UNet has no cross-attention at a quarter of the latent resolution; the "
                           "edits use the noise-quantile mask alone (no cross-attention mask)")
        return False
    return bool(default)


@contextlib.contextmanager
def kept_attention_processors(unet) -> Iterator[None]:
    """Put the UNet's attention processors back after the block (the LEDITS++ pipeline replaces them)."""
    processors = dict(unet.attn_processors)
    try:
        yield
    finally:
        unet.set_attn_processor(processors)


def vae_in_pipeline_dtype(components: SDComponents) -> None:
    """Cast the VAE to the model's dtype if it is not (an fp16 SDXL model's fp32 VAE), as the LEDITS++ pipelines
    expect it: they upcast a `force_upcast` VAE around each encode and decode themselves. Called before each pipeline
    call, since the SDXL pipeline's `invert` leaves the VAE upcast (its reconstruction decode does not cast back), and
    its edit call would then decode fp16 latents with fp32 weights. Within `kept_weights` only: the cast is undone."""
    vae = components.vae
    if vae is not None and vae.dtype != components.unet.dtype:
        torch.nn.Module.to(vae, components.unet.dtype)


@torch.inference_mode()
def ledits_edits(components: SDComponents, image: Image.Image, prompt: str, source_prompt: str | None,
                 edit_guidance_scales: Sequence[float], seeds: Sequence[int], params: LeditsParams, *,
                 pipeline=None) -> dict[tuple[int, float], Image.Image]:
    """LEDITS++ edits of `image` (already at the model resolution) towards `prompt`, keyed (seed, edit guidance
    scale): one inversion per seed (under the empty prompt, or `source_prompt` with `params.use_source_prompt`), one
    edit per scale. Scale 0 regenerates the inversion: the input up to the inversion's error when it ran under the
    empty prompt (the trained digits model, 30 steps: mean |pixel error| 0.019 against 0.066-0.071 under the pair's
    source prompt; tests/test_baselines.py checks both at 20 steps), not when it ran under a source prompt, whose
    guided predictions the edit never makes.
    `pipeline`: the model's `ledits_pipeline`, when the caller has built it."""
    pipeline = ledits_pipeline(components) if pipeline is None else pipeline
    masks = {"use_intersect_mask": intersect_mask(pipeline), "use_cross_attn_mask": False}
    width, height = image.size
    edits: dict[tuple[int, float], Image.Image] = {}
    with kept_attention_processors(components.unet), kept_weights(*components.frozen_modules()):
        for seed in seeds:
            vae_in_pipeline_dtype(components)
            pipeline.invert(image=image, source_prompt=inversion_prompt(source_prompt, params),
                            source_guidance_scale=params.source_guidance_scale,
                            num_inversion_steps=params.steps_for(components.family.name), skip=params.skip,
                            generator=torch.Generator().manual_seed(seed), height=height, width=width)
            for scale in edit_guidance_scales:
                vae_in_pipeline_dtype(components)
                edits[(seed, scale)] = pipeline(
                    editing_prompt=[prompt], edit_guidance_scale=[scale], edit_threshold=[params.edit_threshold],
                    edit_warmup_steps=[params.edit_warmup_steps], reverse_editing_direction=[False],
                    generator=torch.Generator().manual_seed(seed), output_type="pil", **masks).images[0]
    return edits


def inversion_prompt(source_prompt: str | None, params: LeditsParams) -> str:
    """The prompt LEDITS++ inverts under: the pair's source prompt with `params.use_source_prompt`, else ""."""
    return (source_prompt or "") if params.use_source_prompt else ""


def run_ledits(components: SDComponents, image_path, prompt: str, source_prompt: str | None, params: LeditsParams,
               *, samples: Sequence[tuple[int, float, str]], resolution: int | None, record,
               pair_id: str = "") -> None:
    """The LEDITS++ baseline: a PNG per (seed, edit_guidance_scale, path) of `samples` and one provenance record."""
    resolution = resolution or components.resolution
    seeds = list(dict.fromkeys(seed for seed, _, _ in samples))
    scales = list(dict.fromkeys(scale for _, scale, _ in samples))
    pipeline = ledits_pipeline(components)
    edits = ledits_edits(components, load_image(image_path, resolution), prompt, source_prompt, scales, seeds, params,
                         pipeline=pipeline)
    for seed, scale, path in samples:
        save_image(edits[(seed, scale)], path)
    write_json(record, provenance("ledits", asdict(params), components.provenance(), pair_id=pair_id,
                                  image=str(image_path), prompt=prompt, source_prompt=source_prompt or "",
                                  inversion_prompt=inversion_prompt(source_prompt, params),
                                  inversion_steps=params.steps_for(components.family.name),
                                  seeds=seeds, edit_guidance_scales=scales,
                                  use_intersect_mask=intersect_mask(pipeline, warn=False),
                                  outputs={f"{seed}:{scale:g}": str(path) for seed, scale, path in samples}))
