"""Stage A: optimise the target text embedding e_tgt into e_opt so the frozen model reconstructs the image.

Precision. The frozen weights keep the dtype they were loaded in: fp16 weights are never copied to fp32,
since halving the memory of SD's frozen UNet is their point (autocast would not help either: it casts fp32
weights down, and these are fp16 already). The optimised embedding is an fp32 leaf, cast to the UNet's dtype
at its input, so its gradient arrives in fp32 and Adam's state is fp32. With fp16 weights the backward pass
runs through fp16 activations, whose smallest subnormal is 6e-8: the MSE's mean divides the gradient by the
latent size (256 for the tiny preset, 16,384 for SD-1.5), and without scaling a share of the embedding's
gradient entries (0.04-0.16% per step on the tiny preset) flushes to zero. fp16 weights therefore get dynamic
loss scaling, `torch.amp.GradScaler` (the loss times 2^16 at first; on an overflowed gradient the step is
skipped and the scale halved), on any device: fp16 arithmetic works on the CPU in torch 2.x, if slowly (3x
slower than fp32 on the tiny preset), so CPU and CUDA take the same path. fp32 and bf16 weights (bf16 has
fp32's exponent range) need no scaling: the scaler is disabled, a pass-through, and the loss is backpropagated as is.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import trajectory
from .components import SDComponents
from .diffusion import LossHistory, denoising_loss, draw_noise_and_timesteps, encode_conditioning, encode_image, \
    truncated_prompt
from .families import Conditioning, as_conditioning, conditioning_from_artefact
from .drawing import write_loss_curve
from .images import load_image, pil_to_tensor
from .io import load_tensors, save_tensors, write_json
from .provenance import provenance
from .variants import EmbedParams

logger = logging.getLogger(__name__)


@dataclass
class EmbedResult:
    """e_tgt and e_opt (the family's conditioning, one row, fp32), the image latents they were fitted to
    (1, C, h, w), the loss per step, and the family's negative conditioning for guidance (one row): stored here,
    the text encoders run once per prompt, in the embed job, and fine-tune and sample jobs load without them
    (T5-XXL is 4.8 B parameters). A bare tensor for e_tgt / e_opt is Stable Diffusion's token embeddings.

    Artefact tensors: `target_embedding`, `optimized_embedding`, `unconditional_embedding` (token embeddings),
    `image_latents`, `losses`, and for SDXL also `{target,optimized,unconditional}_pooled_embedding` and `time_ids`
    (fixed: shared by all three).
    """

    target: Conditioning
    optimized: Conditioning
    image_latents: torch.Tensor
    losses: list[float] = field(default_factory=list)
    unconditional: Conditioning | None = None  # None: encoded when sampling (needs the text encoders)

    def __post_init__(self):
        self.target = as_conditioning(self.target)
        self.optimized = as_conditioning(self.optimized)
        self.unconditional = None if self.unconditional is None else as_conditioning(self.unconditional)

    @property
    def target_embedding(self) -> torch.Tensor:
        """e_tgt's token embeddings (1, 77, D)."""
        return self.target.embeds

    @property
    def optimized_embedding(self) -> torch.Tensor:
        """e_opt's token embeddings (1, 77, D)."""
        return self.optimized.embeds

    def save(self, path) -> None:
        save_tensors(
            path,
            {
                **self.target.artefact_tensors("target"),
                **self.optimized.artefact_tensors("optimized"),
                **(self.unconditional.artefact_tensors("unconditional") if self.unconditional is not None else {}),
                "image_latents": self.image_latents,
                "losses": torch.tensor(self.losses, dtype=torch.float64),
            },
        )

    @classmethod
    def load(cls, path, device: str | torch.device = "cpu") -> "EmbedResult":
        tensors = load_tensors(path, device)
        return cls(
            conditioning_from_artefact(tensors, "target"),
            conditioning_from_artefact(tensors, "optimized"),
            tensors["image_latents"],
            tensors["losses"].tolist(),
            conditioning_from_artefact(tensors, "unconditional") if "unconditional_embedding" in tensors else None,
        )


def optimize_embedding(
    components: SDComponents,
    image: torch.Tensor,
    prompt: str,
    params: EmbedParams,
    *,
    progress: bool = True,
    at_steps: Mapping[int, Callable[[EmbedResult], None]] | None = None,
) -> EmbedResult:
    """Run stage A on `image` (1, 3, H, W) in [-1, 1] with target text `prompt`.

    Loss: the UNet's denoising MSE on noised image latents, t ~ U{0, ..., T-1} with T the scheduler's
    `num_train_timesteps`, target per its `prediction_type`; Adam on the embedding only. Latents, noise
    and timesteps all come from one generator seeded with `params.seed`. With fp16 UNet weights the loss is
    scaled for the backward pass (module docstring); a step whose scaled gradient overflowed is skipped.

    `at_steps`: {step: callback(result so far)} called once that many steps are done (a shared trajectory's stops,
    `run_embed`); the result's e_opt is a copy of the embedding at that step.
    """
    generator = torch.Generator().manual_seed(params.seed)
    latents = encode_image(components, image, params.latents, generator)
    target = encode_conditioning(components, [prompt], tuple(image.shape[-2:]))
    optimized = target.optimisable()  # fp32 leaves for every optimised field (SDXL: token and pooled embeddings)
    optimizer = torch.optim.Adam(optimized.optimised_tensors(), lr=params.lr)
    # Disabled (a pass-through) unless the UNet computes in fp16; step() unscales before Adam, so lr means
    # the same as in fp32.
    dtype = components.unet.dtype  # read once: diffusers' `unet.dtype` walks every submodule
    scaler = torch.amp.GradScaler(components.device.type, enabled=dtype == torch.float16)
    unet = components.unet_forward(components.unet)
    losses = LossHistory("embed")
    unconditional = components.family.unconditional(components, target)
    skipped = 0
    for step in tqdm(range(params.steps), desc="embed", disable=not progress, mininterval=1.0):
        noise, timesteps = draw_noise_and_timesteps(latents, components.scheduler, generator)
        loss = denoising_loss(unet, components.scheduler, latents, optimized, noise, timesteps, dtype)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        skipped += scaler.get_scale() < scale  # the scale drops only after an overflow, whose step was skipped
        losses.append(loss)
        if at_steps and step + 1 in at_steps:
            at_steps[step + 1](EmbedResult(target, optimized.detach().map(torch.Tensor.clone), latents,
                                           list(losses.values()), unconditional))
    if skipped:
        logger.info("embed: fp16 loss scaling skipped %d of %d steps (gradient overflow)", skipped, params.steps)
    return EmbedResult(target, optimized.detach(), latents, losses.values(), unconditional)


def run_embed(
    components: SDComponents,
    image_path,
    prompt: str,
    params: EmbedParams,
    *,
    resolution: int | None,
    artefact,
    losses_csv,
    loss_plot,
    record,
    stops: Sequence[tuple[int, str | Path]] = (),
    pair_id: str = "",
    progress: bool = True,
) -> EmbedResult:
    """Stage A from an image file: writes e_tgt/e_opt/latents (safetensors), losses and provenance.

    `stops`: (steps, folder) of shorter embeds with these settings (a shared trajectory, `plan.SharedTrajectory`):
    when the optimisation passes a stop's step count, that run's files are written into its folder under the names
    of this run's (`trajectory.adopt` moves them into the shorter run's own outputs), as a separate run would."""
    resolution = resolution or components.resolution
    image = pil_to_tensor(load_image(image_path, resolution))
    outputs = [Path(artefact), Path(losses_csv), Path(loss_plot), Path(record)]
    record_fields = dict(pair_id=pair_id, image=str(image_path), prompt=prompt,
                         prompt_truncated_to=truncated_prompt(components, prompt), resolution=resolution)

    def write(result: EmbedResult, steps: int, paths: list[Path], **record_extra) -> None:
        result.save(paths[0])
        write_loss_curve(result.losses, paths[1], paths[2], f"stage A (embedding) {pair_id}")
        write_json(paths[3], provenance("embed", asdict(replace(params, steps=steps)), components.provenance(),
                                        **record_fields, **record_extra))

    def write_stop(steps: int, folder: str | Path, result: EmbedResult) -> None:
        write(result, steps, trajectory.stop_paths(folder, outputs),
              trajectory={"trained_by": str(Path(artefact).parent), "stopped_at": steps})

    trajectory.clear_unreached(stops, 0)  # stage A keeps no resume checkpoints: every stop is written again
    at_steps = {int(steps): functools.partial(write_stop, int(steps), folder) for steps, folder in stops}
    result = optimize_embedding(components, image, prompt, params, progress=progress, at_steps=at_steps)
    write(result, params.steps, outputs, **trajectory.stops_record(stops))
    return result
