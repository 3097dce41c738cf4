"""Diffusion maths shared by the stages: prompt and image encoding, the denoising loss.

Shapes: images (B, 3, H, W) in [-1, 1]; "latents" are the image in the UNet's space (B, C, H/f, W/f): VAE latents
already multiplied by the VAE's `scaling_factor` (f = 8), or in pixel space (IF) the image itself (f = 1);
conditioning: the model family's `Conditioning` (imagic_steps.families), whose token embeddings
are (B, 77, D). What differs between families is behind `components.family`; a bare tensor where a conditioning
is expected is Stable Diffusion's token embeddings.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from .components import SDComponents
from .errors import NonFiniteLossError
from .families import Conditioning, as_conditioning

logger = logging.getLogger(__name__)


def check_finite(loss: float, stage: str, step: int) -> None:
    if not math.isfinite(loss):
        raise NonFiniteLossError(
            f"{stage}: loss became {loss} at step {step}; lower the learning rate or disable fp16 mixed precision"
        )


class LossHistory:
    """A training loop's loss per step, kept on the loss's device until read.

    `loss.item()` every step is a host sync: on a GPU it drains the queue the next step's kernels would overlap
    with. Here a step's loss is kept as a tensor (no copy, no kernel) and the history reaches the host in one
    transfer when `values()` is called: every `check_every` steps (so a diverged run stops at most `check_every`
    steps late, naming the step it diverged at: `check_finite` checks each step's value), at previews and
    checkpoints, and at the end. The values are the float32 losses as Python floats, exactly what `.item()` gives.
    """

    def __init__(self, stage: str, previous: list[float] | None = None, check_every: int = 50):
        self.stage = stage
        self.check_every = check_every
        self._values = list(previous or [])  # on the host and checked (e.g. restored from a resume checkpoint)
        self._pending: list[torch.Tensor] = []

    def append(self, loss: torch.Tensor) -> None:
        self._pending.append(loss.detach())
        if len(self._pending) >= self.check_every:
            self.values()

    def values(self) -> list[float]:
        """Every step's loss so far; raises NonFiniteLossError at the first non-finite one."""
        if self._pending:
            first = len(self._values)
            self._values += torch.stack(self._pending).tolist()
            self._pending = []
            for step in range(first, len(self._values)):
                check_finite(self._values[step], self.stage, step)
        return self._values


def truncated_prompt(components: SDComponents, prompt: str) -> str | None:
    """The text the model actually sees when `prompt` exceeds the context, else None."""
    tokenizer = components.tokenizer
    if len(tokenizer(prompt, truncation=False).input_ids) <= tokenizer.model_max_length:
        return None
    kept = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    return tokenizer.decode(kept, skip_special_tokens=True)


def encode_conditioning(components: SDComponents, prompts: list[str], size: tuple[int, int] | None = None
                        ) -> Conditioning:
    """The family's conditioning of `prompts` (fp32), what Imagic optimises and interpolates; `size` (H, W) is the
    image's in pixels (SDXL's time ids; default the model's resolution). Warns on truncated prompts."""
    for prompt in prompts:
        kept = truncated_prompt(components, prompt)
        if kept is not None:
            logger.warning("prompt longer than %d tokens is truncated to: %r", components.tokenizer.model_max_length,
                           kept)
    return components.family.encode(components, prompts, size)


def encode_prompts(components: SDComponents, prompts: list[str]) -> torch.Tensor:
    """Token embeddings (B, 77, D) in fp32 (Stable Diffusion's whole conditioning; `encode_conditioning` gives
    every family's)."""
    return encode_conditioning(components, prompts).embeds


def encode_image(components: SDComponents, image: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """`image` (1, 3, H, W) in [-1, 1] in the UNet's space: VAE latents (1, C, H/f, W/f) scaled by the VAE's
    scaling_factor for the latent families, the image itself in pixel space.

    `mode="sample"` draws from the posterior with `generator` (as the community pipeline does);
    `mode="mean"` takes the posterior mean.
    """
    return components.family.to_unet_space(components, image, mode, generator)


def decode_latents(components: SDComponents, latents: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] from the UNet's space (B, C, h, w)."""
    return components.family.from_unet_space(components, latents)


def training_target(scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """What the UNet is trained to predict, per the scheduler's `prediction_type` (epsilon or v)."""
    prediction_type = scheduler.config.prediction_type
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise ValueError(f"unsupported prediction_type '{prediction_type}' (epsilon or v_prediction)")


def split_prediction(output: torch.Tensor, channels: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A UNet output (B, C or 2C, h, w) as (prediction (B, C, h, w), learned variance (B, C, h, w) or None).

    A UNet with twice its input's channels (DeepFloyd IF's `variance_type: learned_range`) predicts the noise (or
    v) and a variance interpolation; the denoising loss and guidance use the first, DDPM sampling both."""
    if output.shape[1] == channels:
        return output, None
    if output.shape[1] == 2 * channels:
        return output[:, :channels], output[:, channels:]
    raise ValueError(f"the UNet outputs {output.shape[1]} channels for a {channels}-channel input (expected "
                     f"{channels}, or {2 * channels} with learned variance)")


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
    unet, scheduler, latents: torch.Tensor, embeddings: Conditioning | torch.Tensor, noise: torch.Tensor,
    timesteps: torch.Tensor, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Mean-squared error between the UNet's prediction and its training target (scalar, fp32).

    latents (1 or N, C, h, w) are broadcast to the N noise draws; so is the conditioning (1 or N rows). A learned
    variance output is left out: Imagic's loss is the noise (or v) prediction's, as in the paper. `dtype`: the UNet's
    compute dtype, which a training loop reads once and passes (diffusers' `unet.dtype` walks every submodule: 1.2 ms
    a call on the digits model, 8 % of a stage A step there); None reads it here.
    """
    dtype = dtype or unet.dtype
    count = noise.shape[0]
    latents = latents.expand(count, -1, -1, -1)
    conditioning = as_conditioning(embeddings).expand(count)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    output = unet(noisy.to(dtype), timesteps, **conditioning.unet_inputs(dtype)).sample
    prediction, _ = split_prediction(output, latents.shape[1])
    target = training_target(scheduler, latents, noise, timesteps)
    return F.mse_loss(prediction.float(), target.float())
