"""Stage C: sample along e(a) = a * e_tgt + (1 - a) * e_opt with classifier-free guidance.

a = 0 reconstructs the input image, a = 1 is the full edit, a > 1 extrapolates. All (seed, alpha) samples
are denoised together in batches; every alpha of one seed starts from the same noise and, for stochastic
schedulers, sees the same per-step noise, so the columns of a montage differ only by the embedding, and no
sample depends on which others share its batch.

Two random streams per seed, one per purpose, so they never repeat each other:
  initial noise  x_T (or the noise added to the input latents): torch.Generator seeded with `seed` itself;
  step noise     the noise stochastic schedulers inject at each step (DDPM, Euler ancestral, DDIM with
                 eta > 0): torch.Generator seeded with `step_noise_seed(seed)`, 64 bits of
                 numpy.random.SeedSequence(seed, spawn_key=(1,)), i.e. SeedSequence(seed).spawn(2)[1].
Seeding both generators with `seed` would make the first injected noise a copy of x_T's noise.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict
from typing import Sequence

import diffusers
import numpy as np
import torch
from tqdm.auto import tqdm

from .components import SDComponents
from .diffusion import decode_latents, split_prediction
from .embed import EmbedResult
from .families import Conditioning, as_conditioning, interpolate_conditioning
from .finetune_artefact import load_finetuned_unet
from .images import tensor_to_pil
from .io import save_image, write_json
from .provenance import provenance
from .variants import SCHEDULERS, SampleParams


def make_scheduler(name: str, base_config):
    """A fresh inference scheduler of class `name` built from the model's own scheduler config."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler '{name}'; choose one of {list(SCHEDULERS)}")
    scheduler = getattr(diffusers, name).from_config(base_config)
    if "variance_type" not in inspect.signature(type(scheduler)).parameters:
        # A scheduler that cannot use a learned variance (DDIM, Euler) gets variance_type None: from_config keeps a
        # learned-variance model's (IF's) value, and a fixed-variance model's config has none, while diffusers' IF
        # pipelines read it; None makes the sampler and those pipelines pass the noise prediction only.
        scheduler.register_to_config(variance_type=None)
    return scheduler


STEP_NOISE_STREAM = 1  # SeedSequence spawn key of the per-step noise; the initial noise uses the seed itself


def initial_noise(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The starting noise of one seed, drawn on the CPU so a seed means the same image on any device."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def step_noise_seed(seed: int) -> int:
    """The seed of a sample's per-step noise generator: a stream derived from `seed`, independent of
    `initial_noise(seed)`: the first 64 bits of numpy.random.SeedSequence(seed, spawn_key=(1,)).

    Raises ValueError for a negative seed (SeedSequence takes non-negative entropy; the config schema
    already requires seeds >= 0).
    """
    if seed < 0:
        raise ValueError(f"seeds must be >= 0, got {seed}")
    return int(np.random.SeedSequence(seed, spawn_key=(STEP_NOISE_STREAM,)).generate_state(1, dtype=np.uint64)[0])


def step_noise_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample for the noise stochastic schedulers inject at each step."""
    return [torch.Generator().manual_seed(step_noise_seed(seed)) for seed in seeds]


@torch.inference_mode()
def denoise(
    unet,
    scheduler,
    conditional: Conditioning | torch.Tensor,
    unconditional: Conditioning | torch.Tensor,
    noise: torch.Tensor,
    params: SampleParams,
    step_seeds: Sequence[int],
    init_latents: torch.Tensor | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Denoise a batch of B latents from `noise` (B, C, h, w) under the conditioning `conditional` (B rows).

    `unconditional` (1 row) is the family's negative (the empty prompt's), made once by the caller; `step_seeds` (B)
    are the samples' seeds; each sample's per-step noise (stochastic schedulers) comes from
    `step_noise_seed(seed)`, a stream independent of its initial noise. With `params.init_timestep_rate` r > 0 the
    first r of the schedule is skipped and denoising starts from `init_latents` (1, C, h, w) noised to that
    level (the modified pipeline's option). Returns (B, C, h, w).
    """
    conditional, unconditional = as_conditioning(conditional), as_conditioning(unconditional)
    batch = conditional.batch
    device = conditional.device
    scheduler.set_timesteps(params.steps, device=device)
    timesteps = scheduler.timesteps
    noise = noise.to(device)
    skipped = int(round(params.init_timestep_rate * params.steps)) * scheduler.order
    if skipped > 0:
        if init_latents is None:
            raise ValueError("init_timestep_rate > 0 needs the input image latents")
        timesteps = timesteps[skipped:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(skipped)
        latents = scheduler.add_noise(init_latents.to(device).expand(batch, -1, -1, -1), noise, timesteps[:1])
    else:
        latents = noise * scheduler.init_noise_sigma

    # One generator per batch element, seeded from its sample's seed (a stream apart from the initial
    # noise's): the per-step noise of a sample does not depend on which others share its batch.
    generators = step_noise_generators(step_seeds)
    step_kwargs = {}
    step_signature = inspect.signature(scheduler.step).parameters
    if "eta" in step_signature:
        step_kwargs["eta"] = params.eta
    if "generator" in step_signature:
        step_kwargs["generator"] = generators

    guided = params.guidance_scale != 1.0
    embeddings = Conditioning.cat([unconditional.expand(batch), conditional]) if guided else conditional
    dtype = unet.dtype  # read once: diffusers' `unet.dtype` walks every submodule
    unet_inputs = embeddings.unet_inputs(dtype)
    # A learned variance (IF) goes to the schedulers that use it (DDPM), the text branch's as in IFPipeline
    uses_variance = scheduler.config.get("variance_type") in ("learned", "learned_range")
    for t in tqdm(timesteps, desc="sample", disable=not progress, leave=False):
        model_input = torch.cat([latents, latents]) if guided else latents
        model_input = scheduler.scale_model_input(model_input, t)
        output = unet(model_input.to(dtype), t, **unet_inputs).sample.float()
        prediction, variance = split_prediction(output, latents.shape[1])
        if guided:
            uncond_pred, cond_pred = prediction.chunk(2)
            prediction = uncond_pred + params.guidance_scale * (cond_pred - uncond_pred)
            variance = None if variance is None else variance.chunk(2)[1]
        if uses_variance and variance is not None:
            prediction = torch.cat([prediction, variance], dim=1)
        latents = scheduler.step(prediction, t, latents, **step_kwargs).prev_sample
    return latents


@torch.inference_mode()
def sample_alphas(
    components: SDComponents,
    unet,
    target_embedding: Conditioning | torch.Tensor,
    optimized_embedding: Conditioning | torch.Tensor,
    alphas: Sequence[float],
    seeds: Sequence[int],
    params: SampleParams,
    *,
    height: int | None = None,
    width: int | None = None,
    init_latents: torch.Tensor | None = None,
    unconditional: Conditioning | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Images (S, A, 3, H, W) in [-1, 1] for every seed x alpha, sampled with `unet`.

    `height`/`width` default to the model's native resolution and must be multiples of `components.space_factor`.
    `init_latents` (1, C, h, w), the input image's latents, are used only when `params.init_timestep_rate` > 0.
    The seed x alpha samples are denoised `params.batch_size` at a time (seed-major order). `unconditional` is
    the guidance's negative (1 row, the embed artefact's); None encodes it once (the text encoders must be loaded).
    """
    factor = components.space_factor
    height = height or components.resolution
    width = width or components.resolution
    if height % factor or width % factor:
        raise ValueError(f"height and width must be multiples of {factor}, got {height}x{width}")
    latent_shape = (1, unet.config.in_channels, height // factor, width // factor)
    if init_latents is not None and tuple(init_latents.shape) != latent_shape:
        raise ValueError(f"init latents {tuple(init_latents.shape)} do not match the sample size {latent_shape}")
    unet = components.unet_forward(unet)
    target = as_conditioning(target_embedding).to(components.device)
    if unconditional is None and components.text_encoder is None:
        raise ValueError("sampling needs the negative conditioning: pass the embed artefact's, or load the model "
                         "with its text encoders")
    unconditional = (components.family.unconditional(components, target) if unconditional is None
                     else as_conditioning(unconditional).to(components.device))
    embeddings = interpolate_conditioning(target, as_conditioning(optimized_embedding).to(components.device), alphas)
    noises = [initial_noise(seed, latent_shape) for seed in seeds]
    grid = [(s, a) for s in range(len(seeds)) for a in range(len(alphas))]
    chunks = [grid[i : i + params.batch_size] for i in range(0, len(grid), params.batch_size)]
    images: dict[tuple[int, int], torch.Tensor] = {}
    for chunk in tqdm(chunks, desc="sample batches", disable=not progress):
        scheduler = make_scheduler(params.scheduler, components.scheduler.config)
        latents = denoise(unet, scheduler, embeddings[[a for _, a in chunk]], unconditional,
                          torch.cat([noises[s] for s, _ in chunk]), params, [seeds[s] for s, _ in chunk],
                          init_latents=init_latents)
        images.update(zip(chunk, decode_latents(components, latents).cpu()))
    return torch.stack([torch.stack([images[(s, a)] for a in range(len(alphas))]) for s in range(len(seeds))])


def sample_grid(samples: Sequence[tuple[int, float, str]]) -> tuple[list[int], list[float]]:
    """The seeds and alphas (in first-seen order) of a sample job's (seed, alpha, path) triples, which must
    cover every seed x alpha once: `sample_alphas` denoises whole grids."""
    seeds = list(dict.fromkeys(seed for seed, _, _ in samples))
    alphas = list(dict.fromkeys(alpha for _, alpha, _ in samples))
    if sorted((seed, alpha) for seed, alpha, _ in samples) != sorted((s, a) for s in seeds for a in alphas):
        raise ValueError(f"a sample job's (seed, alpha) pairs must form a full seeds x alphas grid; got "
                         f"{[(seed, alpha) for seed, alpha, _ in samples]}")
    return seeds, alphas


def run_sample(
    components: SDComponents,
    embed_artefact,
    finetune_artefact,
    params: SampleParams,
    *,
    samples: Sequence[tuple[int, float, str]],
    resolution: int | None,
    record,
    unet: torch.nn.Module | None = None,
    pair_id: str = "",
    progress: bool = True,
) -> None:
    """Stage C: one PNG per (seed, alpha, path) of `samples`, sampled from the fine-tuned UNet.

    `unet` skips loading the artefact when the caller still holds the fine-tuned model.
    """
    seeds, alphas = sample_grid(samples)
    embed = EmbedResult.load(embed_artefact, components.device)
    unet = unet if unet is not None else load_finetuned_unet(components.unet, finetune_artefact)
    resolution = resolution or components.resolution
    images = sample_alphas(components, unet, embed.target, embed.optimized, alphas, seeds, params,
                           height=resolution, width=resolution, init_latents=embed.image_latents,
                           unconditional=embed.unconditional, progress=progress)
    for seed, alpha, path in samples:
        save_image(tensor_to_pil(images[seeds.index(seed), alphas.index(alpha)][None])[0], path)
    write_json(record, provenance("sample", asdict(params), components.provenance(), pair_id=pair_id,
                                  alphas=alphas, seeds=seeds, embed=str(embed_artefact),
                                  finetune=str(finetune_artefact),
                                  outputs={f"{seed}:{alpha:g}": str(path) for seed, alpha, path in samples}))
