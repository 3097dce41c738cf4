"""The naive Imagic algorithm, the baseline the benchmarks compare the package against.

Written from the algorithm's description, independently of `imagic_steps` (only the loaded model
components are shared), the way a straightforward single-image pipeline does it:

* stage A: Adam on the target-text embedding, denoising MSE of the noised image latents;
* stage B: full fp32 fine-tune of a deep copy of the UNet with plain Adam (no `foreach`), e_opt fixed;
* stage C: one full pipeline call per alpha, each re-encoding the empty prompt for classifier-free
  guidance, creating a fresh scheduler, denoising a batch of 1 and decoding it; nothing is batched or
  reused between alphas.

Every random draw comes from a seeded CPU generator in the same order as the package's (posterior
sample, then per step a timestep and a noise draw), so that the two produce the same numbers and the
comparison is between two implementations of one computation. Shapes as in `imagic_steps.diffusion`.
"""

from __future__ import annotations

import copy
import inspect
from typing import Sequence

import diffusers
import torch
import torch.nn.functional as F

from imagic_steps.models import SDComponents


def text_embedding(components: SDComponents, prompt: str) -> torch.Tensor:
    """Last hidden states (1, 77, D) in fp32 of `prompt`, padded to the tokenizer's context."""
    tokenizer = components.tokenizer
    ids = tokenizer([prompt], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(components.device)
    with torch.no_grad():
        return components.text_encoder(ids)[0].float()


def noise_pred_loss(unet, scheduler, latents, embedding, generator: torch.Generator) -> torch.Tensor:
    """Denoising MSE at one random timestep: draws t ~ U{0..T-1}, then the noise, from `generator` (CPU)."""
    device = latents.device
    timestep = torch.randint(0, scheduler.config.num_train_timesteps, (1,), generator=generator).to(device)
    noise = torch.randn(latents.shape, generator=generator).to(device)
    noisy = scheduler.add_noise(latents, noise, timestep)
    prediction = unet(noisy.to(unet.dtype), timestep, embedding.to(unet.dtype)).sample
    if scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        target = scheduler.get_velocity(latents, noise, timestep)
    return F.mse_loss(prediction.float(), target.float())


def optimize_embedding(components: SDComponents, image: torch.Tensor, prompt: str, steps: int, lr: float,
                       seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage A on `image` (1, 3, H, W) in [-1, 1]: returns (e_tgt, e_opt, latents)."""
    generator = torch.Generator().manual_seed(seed)
    vae = components.vae
    with torch.no_grad():
        posterior = vae.encode(image.to(components.device, vae.dtype)).latent_dist
        latents = posterior.sample(generator=generator).float() * vae.config.scaling_factor
    target = text_embedding(components, prompt)
    embedding = target.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([embedding], lr=lr)
    for _ in range(steps):
        loss = noise_pred_loss(components.unet, components.scheduler, latents, embedding, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()  # the loss a training loop logs each step
    return target, embedding.detach(), latents


def finetune_unet(components: SDComponents, latents: torch.Tensor, embedding: torch.Tensor, steps: int, lr: float,
                  seed: int) -> torch.nn.Module:
    """Stage B: every weight of a deep copy of the UNet trained in fp32 with plain Adam; returns the copy."""
    generator = torch.Generator().manual_seed(seed)
    unet = copy.deepcopy(components.unet).float().requires_grad_(True).train()
    optimizer = torch.optim.Adam(unet.parameters(), lr=lr, foreach=False)
    for _ in range(steps):
        loss = noise_pred_loss(unet, components.scheduler, latents, embedding, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()
    return unet.eval()


@torch.no_grad()
def pipeline_call(components: SDComponents, unet, embedding: torch.Tensor, seed: int, scheduler_name: str,
                  steps: int, guidance_scale: float, eta: float) -> torch.Tensor:
    """One text-to-image call conditioned on `embedding` (1, 77, D): image (1, 3, H, W) in [-1, 1].

    Encodes the empty prompt, builds a scheduler, starts from the seed's noise (drawn on the CPU), denoises
    with classifier-free guidance and decodes with the VAE.
    """
    device = components.device
    unconditional = text_embedding(components, "")
    scheduler = getattr(diffusers, scheduler_name).from_config(components.scheduler.config)
    scheduler.set_timesteps(steps, device=device)
    size = unet.config.sample_size
    noise = torch.randn((1, unet.config.in_channels, size, size), generator=torch.Generator().manual_seed(seed))
    latents = noise.to(device) * scheduler.init_noise_sigma
    embeddings = torch.cat([unconditional, embedding]).to(unet.dtype)
    accepted = inspect.signature(scheduler.step).parameters  # what a pipeline's extra step kwargs do
    extra = {"eta": eta, "generator": torch.Generator().manual_seed(seed)}
    extra = {name: value for name, value in extra.items() if name in accepted}
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        uncond, cond = unet(model_input.to(unet.dtype), t, embeddings).sample.float().chunk(2)
        prediction = uncond + guidance_scale * (cond - uncond)
        latents = scheduler.step(prediction, t, latents, **extra).prev_sample
    vae = components.vae
    image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
    return image.float().clamp(-1, 1)


def sample_alphas(components: SDComponents, unet, target: torch.Tensor, optimized: torch.Tensor,
                  alphas: Sequence[float], seed: int, scheduler_name: str, steps: int, guidance_scale: float,
                  eta: float) -> torch.Tensor:
    """Stage C: one pipeline call per alpha on e(a) = a * e_tgt + (1 - a) * e_opt; images (A, 3, H, W)."""
    images = [
        pipeline_call(components, unet, alpha * target + (1 - alpha) * optimized, seed, scheduler_name, steps,
                      guidance_scale, eta).cpu()
        for alpha in alphas
    ]
    return torch.cat(images)
