"""Diffusion maths shared by the stages: prompt and image encoding, the denoising loss, probe sets.

Shapes: images (B, 3, H, W) in [-1, 1]; latents (B, C, H/f, W/f) already multiplied by the VAE's
`scaling_factor`; text embeddings (B, 77, D), the text encoder's last hidden states.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import NonFiniteLossError
from .models import SDComponents

logger = logging.getLogger(__name__)


def check_finite(loss: float, stage: str, step: int) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"{stage}: loss became {loss} at step {step}; lower the learning rate or disable fp16 mixed precision"
        )


def tokenize(components: SDComponents, prompts: list[str]) -> torch.Tensor:
    """Token ids (B, model_max_length), padded and truncated like Stable Diffusion does; warns on truncation."""
    tokenizer = components.tokenizer
    for prompt in prompts:
        kept = truncated_prompt(components, prompt)
        if kept is not None:
            logger.warning("prompt longer than %d tokens is truncated to: %r", tokenizer.model_max_length, kept)
    batch = tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    )
    return batch.input_ids


def truncated_prompt(components: SDComponents, prompt: str) -> str | None:
    """The text the model actually sees when `prompt` exceeds the context, else None."""
    tokenizer = components.tokenizer
    ids = tokenizer(prompt, truncation=False).input_ids
    if len(ids) <= tokenizer.model_max_length:
        return None
    return tokenizer.decode(ids[1 : tokenizer.model_max_length - 1])


@torch.no_grad()
def encode_prompts(components: SDComponents, prompts: list[str]) -> torch.Tensor:
    """Text embeddings (B, 77, D) in fp32, the conditioning Imagic interpolates."""
    ids = tokenize(components, prompts).to(components.device)
    hidden = components.text_encoder(ids)[0]
    return hidden.float()


@torch.no_grad()
def encode_image(components: SDComponents, image: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """VAE latents (1, C, H/f, W/f) of `image` (1, 3, H, W) in [-1, 1], scaled by the VAE's scaling_factor.

    `mode="sample"` draws from the posterior with `generator` (as the community pipeline does);
    `mode="mean"` takes the posterior mean.
    """
    vae = components.vae
    posterior = vae.encode(image.to(components.device, vae.dtype)).latent_dist
    latents = posterior.sample(generator=generator) if mode == "sample" else posterior.mean
    return latents.float() * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(components: SDComponents, latents: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] from scaled latents (B, C, h, w)."""
    vae = components.vae
    images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    return images.float().clamp(-1, 1)


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet is trained to predict, per the scheduler's `prediction_type` (epsilon or v)."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type '{prediction_type}' (epsilon or v_prediction)")


def draw_noise_and_timesteps(
    latents: torch.Tensor, scheduler, generator: torch.Generator, count: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise (count, C, h, w) and timesteps (count,) uniform over the scheduler's training timesteps.

    Drawn on the generator's device (CPU by default) and moved, so a seed means the same draw on any device.
    """
    num_train_timesteps = scheduler.config.num_train_timesteps
    gen_device = generator.device
    timesteps = torch.randint(0, num_train_timesteps, (count,), generator=generator, device=gen_device)
    noise = torch.randn((count, *latents.shape[1:]), generator=generator, device=gen_device)
    return noise.to(latents.device), timesteps.to(latents.device)


def denoising_loss(
    unet, scheduler, latents: torch.Tensor, embeddings: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """Mean-squared error between the UNet's prediction and its training target (scalar, fp32).

    latents (1 or N, C, h, w) are broadcast to the N noise draws; embeddings (1 or N, 77, D).
    """
    count = noise.shape[0]
    latents = latents.expand(count, -1, -1, -1)
    embeddings = embeddings.expand(count, -1, -1)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    prediction = unet(noisy.to(unet.dtype), timesteps, embeddings.to(unet.dtype)).sample
    target = training_target(scheduler, latents, noise, timesteps)
    return F.mse_loss(prediction.float(), target.float())


@dataclass
class ProbeSet:
    """A fixed set of (noise, timestep) draws to measure the loss before and after training."""

    noise: torch.Tensor  # (N, C, h, w)
    timesteps: torch.Tensor  # (N,)


def make_probe_set(latents: torch.Tensor, scheduler, count: int = 32, seed: int = 1234) -> ProbeSet:
    generator = torch.Generator().manual_seed(seed)
    noise, timesteps = draw_noise_and_timesteps(latents, scheduler, generator, count)
    return ProbeSet(noise, timesteps)


@torch.no_grad()
def probe_loss(unet, scheduler, latents: torch.Tensor, embeddings: torch.Tensor, probe: ProbeSet) -> float:
    """The denoising loss averaged over a fixed probe set: comparable across training steps."""
    return float(denoising_loss(unet, scheduler, latents, embeddings, probe.noise, probe.timesteps))
