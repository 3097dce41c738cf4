"""DDIM inversion baseline (Song et al., 2021; as a text-guided editing baseline, e.g. Mokady et al., 2023): run the
deterministic DDIM sampler backwards from the input's UNet-space latents to x_T under the source prompt, without
guidance, then sample forwards from x_T guided from the source prompt toward the target prompt:

    eps = eps(x_t, source) + g * (eps(x_t, target) - eps(x_t, source))

(classifier-free guidance with the source prompt as the negative). The grid of g runs from reconstruction to edit:
g = 0 is the inversion's own prediction, so the regeneration retraces it and returns the input (up to the
inversion's discretisation error); g = 1 is the target prompt alone; g > 1 pushes away from the source. With the
family's empty-prompt negative instead (plain guidance), no g reconstructs a pair that has a source prompt.

Family-agnostic through the family hooks (sd, sdxl, if): the input goes to UNet space as the posterior mean
(`encode_image(..., "mean")`; IF: the image itself), a learned-variance UNet's (IF's) variance output is dropped
(`split_prediction`), and the regeneration is `sample.denoise` with DDIM, eta 0, from x_T (DDIM's init_noise_sigma
is 1, so x_T is used as it is). The source prompt is the pair's source prompt, the empty prompt when it has none.
Deterministic: no random draw anywhere, so a setting has one sample whatever the seeds.

Both directions run the plain DDIM ODE: no clipping or thresholding of the predicted x0 in the inversion or in the
regeneration (`ode_scheduler_config`), whatever the model's sampler does (IF: clip_sample, and dynamic thresholding
in IF stage I's config). An inversion step and the regeneration step back are exact inverses when the noise
prediction is the same at both ends, but only if neither alters x0; with the model's own settings the inverse
scheduler clipped (DDIMInverseScheduler has no thresholding) where the regeneration thresholded, and each altered
x0 is lost information. Measured on the shipped colour-digits-pixel model (IF family, trained; 4 images, guidance 1,
source prompt, mean |pixel error| in [0, 1] units; tests/test_diffusers_agreement.py): 50 steps, 0.006-0.011 with
no x0 processing, 0.038-0.050 with its config's clipping in both directions, 0.049-0.27 with IF's thresholding in
the regeneration (and the inversion clipping; with thresholding in the inversion as well: 0.14-0.25); at guidance 3
with an edit prompt the clipped round trip gave washed-out images where the plain ODE gave the edited digit.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict
from typing import Sequence

import torch
from PIL import Image

from .components import SDComponents
from .diffusion import decode_latents, encode_conditioning, encode_image, split_prediction
from .families import Conditioning
from .images import load_image, pil_to_tensor, tensor_to_pil
from .io import save_image, write_json
from .provenance import provenance
from .sample import denoise, make_scheduler
from .variants import DdimInversionParams, SampleParams


def ode_scheduler_config(components: SDComponents) -> dict:
    """The model's scheduler config with DDIM's x0 processing off (`clip_sample`, `thresholding`): the inversion and
    the regeneration are the same deterministic ODE in both directions (module docstring)."""
    return {**components.scheduler.config, "clip_sample": False, "thresholding": False}


@torch.inference_mode()
def invert(components: SDComponents, image: torch.Tensor, source_conditioning: Conditioning,
           params: DdimInversionParams) -> torch.Tensor:
    """x_T (1, C, h, w): `image` (1, 3, H, W) in [-1, 1] in UNet space (posterior mean) run through diffusers'
    DDIMInverseScheduler (built from the model's scheduler config, x0 processing off: `ode_scheduler_config`) over
    `params.steps` steps under `source_conditioning` (1 row), without guidance."""
    from diffusers import DDIMInverseScheduler

    # the model's settings DDIM has (a PNDM's skip_prk_steps, an Euler's sigmas, IF's variance_type are not)
    known = inspect.signature(DDIMInverseScheduler.__init__).parameters
    scheduler = DDIMInverseScheduler.from_config({key: value for key, value in ode_scheduler_config(components).items()
                                                  if key in known or key.startswith("_")})
    scheduler.set_timesteps(params.steps, device=components.device)
    unet = components.unet_forward(components.unet)
    dtype = components.unet.dtype  # read once: diffusers' `unet.dtype` walks every submodule
    unet_inputs = source_conditioning.to(components.device).unet_inputs(dtype)
    latents = encode_image(components, image, "mean", torch.Generator())
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        output = unet(model_input.to(dtype), t, **unet_inputs).sample.float()
        prediction, _ = split_prediction(output, latents.shape[1])
        latents = scheduler.step(prediction, t, latents).prev_sample
    return latents


@torch.inference_mode()
def regenerate(components: SDComponents, x_T: torch.Tensor, target_conditioning: Conditioning,
               source_conditioning: Conditioning, guidance_scale: float, params: DdimInversionParams) -> torch.Tensor:
    """Images (1, 3, H, W) in [-1, 1]: DDIM (eta 0, `params.steps` steps, x0 processing off: `ode_scheduler_config`)
    from `x_T`, guided from `source_conditioning` toward `target_conditioning` (1 row each) by `guidance_scale`
    (module docstring: 0 retraces the inversion, 1 is the target alone)."""
    target, source = (c.to(components.device) for c in (target_conditioning, source_conditioning))
    sampling = SampleParams(scheduler="DDIMScheduler", steps=params.steps, guidance_scale=guidance_scale, eta=0.0)
    latents = denoise(components.unet_forward(components.unet), make_scheduler("DDIMScheduler",
                      ode_scheduler_config(components)), target, source, x_T, sampling, step_seeds=[0])
    return decode_latents(components, latents)


def ddim_inversion_edits(components: SDComponents, image: Image.Image, prompt: str, source_prompt: str | None,
                         guidance_scales: Sequence[float], params: DdimInversionParams) -> list[Image.Image]:
    """One edit of `image` (already at the model resolution) towards `prompt` per guidance scale; the inversion
    under `source_prompt` ("" when None or empty: the pair has none) is done once."""
    pixels = pil_to_tensor(image)
    size = tuple(pixels.shape[-2:])
    source, target = (encode_conditioning(components, [text], size) for text in (source_prompt or "", prompt))
    x_T = invert(components, pixels, source, params)
    return [tensor_to_pil(regenerate(components, x_T, target, source, scale, params).cpu())[0]
            for scale in guidance_scales]


def run_ddim_inversion(components: SDComponents, image_path, prompt: str, source_prompt: str | None,
                       params: DdimInversionParams, *, samples: Sequence[tuple[int, float, str]],
                       resolution: int | None, record, pair_id: str = "") -> None:
    """The DDIM inversion baseline: a PNG per (seed, guidance_scale, path) of `samples` and one provenance record.
    The method is deterministic: the seed only names the file (the workflow's first seed, as its rows record)."""
    resolution = resolution or components.resolution
    scales = [scale for _, scale, _ in samples]
    images = ddim_inversion_edits(components, load_image(image_path, resolution), prompt, source_prompt, scales,
                                  params)
    for edited, (_, _, path) in zip(images, samples):
        save_image(edited, path)
    write_json(record, provenance("ddim_inversion", asdict(params), components.provenance(), pair_id=pair_id,
                                  image=str(image_path), prompt=prompt, source_prompt=source_prompt or "",
                                  guidance_scales=scales,
                                  outputs={f"{seed}:{scale:g}": str(path) for seed, scale, path in samples}))
