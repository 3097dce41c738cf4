"""Stage A: optimise the target text embedding e_tgt into e_opt so the frozen model reconstructs the image."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .diffusion import check_finite, denoising_loss, draw_noise_and_timesteps, encode_image, encode_prompts
from .io import load_tensors, save_tensors
from .models import SDComponents
from .variants import EmbedParams

logger = logging.getLogger(__name__)


@dataclass
class EmbedResult:
    """e_tgt and e_opt (1, 77, D) in fp32, the image latents they were fitted to (1, C, h, w), the loss per step."""

    target_embedding: torch.Tensor
    optimized_embedding: torch.Tensor
    image_latents: torch.Tensor
    losses: list[float] = field(default_factory=list)

    def save(self, path) -> None:
        save_tensors(
            path,
            {
                "target_embedding": self.target_embedding,
                "optimized_embedding": self.optimized_embedding,
                "image_latents": self.image_latents,
                "losses": torch.tensor(self.losses, dtype=torch.float64),
            },
        )

    @classmethod
    def load(cls, path, device: str | torch.device = "cpu") -> "EmbedResult":
        tensors = load_tensors(path, device)
        return cls(
            tensors["target_embedding"],
            tensors["optimized_embedding"],
            tensors["image_latents"],
            tensors["losses"].tolist(),
        )


def optimize_embedding(
    components: SDComponents,
    image: torch.Tensor,
    prompt: str,
    params: EmbedParams,
    *,
    progress: bool = True,
) -> EmbedResult:
    """Run stage A on `image` (1, 3, H, W) in [-1, 1] with target text `prompt`.

    Loss: the UNet's denoising MSE on noised image latents, t ~ U{0, ..., T-1} with T the scheduler's
    `num_train_timesteps`, target per its `prediction_type`; Adam on the embedding only. Latents, noise
    and timesteps all come from one generator seeded with `params.seed`.
    """
    generator = torch.Generator().manual_seed(params.seed)
    latents = encode_image(components, image, params.latents, generator)
    target_embedding = encode_prompts(components, [prompt])
    embedding = target_embedding.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([embedding], lr=params.lr)
    unet = components.unet_forward(components.unet)
    losses: list[float] = []
    for step in tqdm(range(params.steps), desc="embed", disable=not progress, mininterval=1.0):
        noise, timesteps = draw_noise_and_timesteps(latents, components.scheduler, generator)
        loss = denoising_loss(unet, components.scheduler, latents, embedding, noise, timesteps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        check_finite(losses[-1], "embed", step)
    return EmbedResult(target_embedding, embedding.detach(), latents, losses)
