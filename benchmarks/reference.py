"""The faithful reference: the diffusers community Imagic pipeline's algorithm, step for step and cost for cost.

What `ImagicStableDiffusionPipeline` (huggingface/diffusers, examples/community/imagic_stable_diffusion.py) does
in `train()` and `__call__()`, written here from that description (only the loaded model components are shared
with `imagic_steps`), so the benchmark compares the package with the algorithm users run, not with a strawman:

* stage A: the prompt's text-encoder output as an fp32 leaf, Adam with torch's defaults on it; per step
  `torch.randn` noise then `torch.randint` timestep from the global RNG, `scheduler.add_noise`, the UNet, an MSE
  against the noise (`reduction="none"`, mean over C, h, w, then over the batch), backward, `step()`,
  `zero_grad()`, and `loss.item()` for the progress bar's log (a host sync every step);
* stage B: the same loop training every weight of the loaded UNet in place (`requires_grad_(True)`, `train()`),
  Adam with torch's defaults (on the CPU that is the per-tensor loop: torch picks `foreach` only for CUDA
  tensors), e_opt frozen;
* stage C: one pipeline call per image (alpha x seed): e(a) interpolated, the empty prompt tokenized and
  encoded again, the initial noise drawn from the call's generator, the pipeline's scheduler reset with
  `set_timesteps`, a batch of 2 (classifier-free guidance) per denoising step, the latents decoded by the VAE and
  converted to a (1, H, W, 3) float array in [0, 1] (the pipeline's `output_type="np"`; PIL conversion is left
  out on both sides of the comparison).

Deliberate differences, none of which changes the cost: the VAE's own `scaling_factor` instead of the
hard-coded 0.18215 (the digits VAE's is 0.754: the community constant would not edit it at all); the
scheduler's `num_train_timesteps` instead of a literal 1000; no progress bars and no `Accelerator` wrapper
(ours runs without progress bars in the benchmark too); no safety checker (the models here have none). The pipeline's scheduler is the one the community
example builds (DDIM), shared by training (`add_noise`) and sampling, as in the pipeline.

Stage B changes the loaded UNet: a caller that runs it again restores the weights first (`restore_unet`).
"""

from __future__ import annotations

import inspect
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from imagic_steps.components import SDComponents


def encode_text(components: SDComponents, prompt: str) -> torch.Tensor:
    """The pipeline's prompt encoding: tokenizer padded to the context, the text encoder's last hidden states."""
    tokenizer = components.tokenizer
    ids = tokenizer(prompt, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    return components.text_encoder(ids.to(components.device))[0]


def check_supported(components: SDComponents, scheduler) -> None:
    """The community pipeline trains on the noise (epsilon) and decodes with a VAE: refuse anything else."""
    if scheduler.config.prediction_type != "epsilon" or components.vae is None:
        raise ValueError("the community Imagic pipeline supports epsilon-prediction latent models only")


def denoising_step(unet, scheduler, latents: torch.Tensor, embedding: torch.Tensor, optimizer) -> float:
    """One training step of either stage, the community loop's body; returns the logged loss (a host sync)."""
    noise = torch.randn(latents.shape).to(latents.device)
    timesteps = torch.randint(scheduler.config.num_train_timesteps, (1,), device=latents.device)
    noisy_latents = scheduler.add_noise(latents, noise, timesteps)
    noise_pred = unet(noisy_latents, timesteps, embedding).sample
    loss = F.mse_loss(noise_pred, noise, reduction="none").mean([1, 2, 3]).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach().item()


def optimize_embedding(components: SDComponents, scheduler, image: torch.Tensor, prompt: str, steps: int,
                       lr: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stage A on `image` (1, 3, H, W) in [-1, 1]: (e_tgt, e_opt, image latents), draws from the global RNG."""
    check_supported(components, scheduler)
    for module in (components.vae, components.unet, components.text_encoder):
        module.requires_grad_(False).eval()
    embedding = encode_text(components, prompt).detach().requires_grad_()
    original = embedding.clone()
    optimizer = torch.optim.Adam([embedding], lr=lr)
    vae = components.vae
    latents = vae.encode(image.to(components.device, embedding.dtype)).latent_dist.sample(generator=generator)
    latents = vae.config.scaling_factor * latents
    for _ in range(steps):
        denoising_step(components.unet, scheduler, latents, embedding, optimizer)
    embedding.requires_grad_(False)
    return original.detach(), embedding, latents


def finetune_in_place(components: SDComponents, scheduler, latents: torch.Tensor, embedding: torch.Tensor,
                      steps: int, lr: float) -> torch.nn.Module:
    """Stage B: every weight of `components.unet` trained in place; returns that (changed) UNet."""
    unet = components.unet
    unet.requires_grad_(True).train()
    optimizer = torch.optim.Adam(unet.parameters(), lr=lr)
    for _ in range(steps):
        denoising_step(unet, scheduler, latents, embedding, optimizer)
    return unet


def restore_unet(components: SDComponents, base_state: dict[str, torch.Tensor]) -> None:
    """Undo `finetune_in_place`: the base weights (a state-dict copy taken before) and the frozen, eval state."""
    components.unet.load_state_dict(base_state)
    components.unet.requires_grad_(False).eval()


@torch.no_grad()
def pipeline_call(components: SDComponents, scheduler, target: torch.Tensor, optimized: torch.Tensor, alpha: float,
                  generator: torch.Generator, steps: int, guidance_scale: float, eta: float,
                  resolution: int | None = None) -> np.ndarray:
    """One `__call__` of the community pipeline (its `height` = `width` = `resolution`, default the UNet's native
    side): a (1, H, W, 3) float image in [0, 1]."""
    embeddings = alpha * target + (1 - alpha) * optimized
    guided = guidance_scale > 1.0
    if guided:
        embeddings = torch.cat([encode_text(components, ""), embeddings])
    unet, vae = components.unet, components.vae
    size = resolution // components.space_factor if resolution else unet.config.sample_size
    latents = torch.randn((1, unet.config.in_channels, size, size), generator=generator, device=components.device,
                          dtype=embeddings.dtype)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps.to(components.device)
    latents = latents * scheduler.init_noise_sigma
    extra = {"eta": eta} if "eta" in inspect.signature(scheduler.step).parameters else {}
    for t in timesteps:
        model_input = scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, t)
        noise_pred = unet(model_input, t, encoder_hidden_states=embeddings).sample
        if guided:
            uncond, text = noise_pred.chunk(2)
            noise_pred = uncond + guidance_scale * (text - uncond)
        latents = scheduler.step(noise_pred, t, latents, **extra).prev_sample
    image = vae.decode(latents / vae.config.scaling_factor).sample
    image = (image / 2 + 0.5).clamp(0, 1)
    return image.cpu().permute(0, 2, 3, 1).float().numpy()


def sample_alphas(components: SDComponents, scheduler, target: torch.Tensor, optimized: torch.Tensor,
                  alphas: Sequence[float], seeds: Sequence[int], steps: int, guidance_scale: float,
                  eta: float, resolution: int | None = None) -> np.ndarray:
    """Stage C: one pipeline call per seed x alpha, each with a generator seeded with its seed: (S, A, H, W, 3)."""
    return np.stack([
        np.concatenate([pipeline_call(components, scheduler, target, optimized, alpha,
                                      torch.Generator(components.device).manual_seed(seed), steps, guidance_scale,
                                      eta, resolution) for alpha in alphas])
        for seed in seeds
    ])
