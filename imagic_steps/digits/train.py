"""Train the `digits` preset: a small Stable Diffusion on scikit-learn's handwritten digits, on one CPU thread.

    python -m imagic_steps.digits.train --out imagic_steps/presets/digits --seed 0

The model uses Stable Diffusion's own component classes and is saved in the diffusers layout, so it
loads and runs through exactly the code a real model does:

1. the tiny preset is built with the same seed into a staging folder (`imagic_steps.preset_recipes.build_tiny_model`):
   SD 1.x's CLIP BPE tokenizer, a two-layer `CLIPTextModel` that stays frozen at its seeded random init
   (the UNet learns to read its embeddings), SD's scheduler config and `model_index.json`;
2. an `AutoencoderKL` (three blocks: 4x down-sampling, 32x32 images <-> 4x8x8 latents) is trained to
   reconstruct the training digits (MSE plus a small KL term); its `scaling_factor` is set to 1 / std of the
   latents, as Stable Diffusion's is;
3. a `UNet2DConditionModel` with cross-attention is trained on the scaled latents with the epsilon loss over
   SD's scaled-linear DDPM schedule (1000 steps), captions dropped to "" 10% of the time so classifier-free
   guidance works;
4. the VAE and UNet replace the tiny preset's, loss curves and a `training.json` record (configuration, data
   split, parameter counts, final losses, seconds, package versions, git commit) are written, and the
   staging folder is renamed onto `--out`.

Every random draw (initialisation, batches, captions, posterior samples, noise, timesteps) follows `--seed`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.optimization import get_cosine_schedule_with_warmup
from tqdm.auto import tqdm

from ..components import SDComponents
from ..diffusion import denoising_loss, draw_noise_and_timesteps, encode_prompts
from ..drawing import plot_losses
from ..io import staging_dir, write_json
from ..model_loading import load_components
from ..preset_recipes import build_tiny_model, small_unet_config
from ..provenance import git_commit, package_versions
from .data import CAPTION_TEMPLATES, IMAGE_SIZE, SPLIT_SEED, caption, load_split, split_record

LOSS_WINDOW = 100  # steps averaged into the reported final loss


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run; the defaults train the shipped preset."""

    seed: int = 0
    vae_steps: int = 1000
    vae_batch_size: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-4  # on the KL per latent element, against the per-pixel MSE
    unet_steps: int = 2500
    unet_batch_size: int = 64
    unet_lr: float = 1e-3
    warmup_steps: int = 100
    caption_dropout: float = 0.1  # fraction of captions replaced by "" for classifier-free guidance


def digits_vae_config() -> dict:
    """AutoencoderKL for 32x32 digits: three blocks (4x down-sampling) to 4x8x8 latents, ~0.17 M parameters."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=IMAGE_SIZE,
    )


def digits_unet_config(cross_attention_dim: int) -> dict:
    """UNet on 4x8x8 latents, cross-attention at full latent resolution, ~0.8 M parameters."""
    return small_unet_config(IMAGE_SIZE // 4, layers_per_block=1, cross_attention_dim=cross_attention_dim)


def train_vae(images: torch.Tensor, config: TrainConfig, generator: torch.Generator,
              progress: bool = True) -> tuple[AutoencoderKL, dict[str, list[float]]]:
    """Train an AutoencoderKL on `images` (N, 3, 32, 32) in [-1, 1]; returns it (eval mode) and its losses.

    Loss: per-pixel MSE of the decoded posterior sample plus `kl_weight` x the KL to N(0, I) per latent
    element. A small KL keeps the latents near unit scale and the decoder tolerant of the small errors
    that sampled latents carry.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        vae = AutoencoderKL(**digits_vae_config())
    optimizer = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.vae_steps)
    losses: dict[str, list[float]] = {"reconstruction MSE": [], "KL per latent element": []}
    vae.train()
    for _ in tqdm(range(config.vae_steps), desc="vae", disable=not progress, mininterval=1.0):
        batch = images[torch.randint(0, len(images), (config.vae_batch_size,), generator=generator)]
        posterior = vae.encode(batch).latent_dist
        latents = posterior.sample(generator=generator)
        reconstruction = F.mse_loss(vae.decode(latents).sample, batch)
        kl = posterior.kl().mean() / latents[0].numel()
        loss = reconstruction + config.kl_weight * kl
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses["reconstruction MSE"].append(reconstruction.item())
        losses["KL per latent element"].append(kl.item())
    return vae.eval().requires_grad_(False), losses


@torch.no_grad()
def latent_posteriors(vae: AutoencoderKL, images: torch.Tensor,
                      batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std (N, 4, 8, 8) of `images` (N, 3, 32, 32), unscaled."""
    means, stds = [], []
    for start in range(0, len(images), batch_size):
        posterior = vae.encode(images[start : start + batch_size]).latent_dist
        means.append(posterior.mean)
        stds.append(posterior.std)
    return torch.cat(means), torch.cat(stds)


def caption_embeddings(components: SDComponents, prompts: list[str]) -> torch.Tensor:
    """Frozen text embeddings (len(prompts) + 1, 77, D) of `prompts` in order, then "" (the dropped caption)."""
    return encode_prompts(components, prompts + [""])


def digit_caption_rows(labels: torch.Tensor) -> tuple[list[str], torch.Tensor]:
    """Every digit caption (digit d with template t at index d * T + t) and, per image, the index of its
    caption under each template: (N, T) int64."""
    templates = len(CAPTION_TEMPLATES)
    prompts = [caption(label, t) for label in range(10) for t in range(templates)]
    return prompts, labels[:, None] * templates + torch.arange(templates)


def train_denoiser(unet: UNet2DConditionModel, scheduler, embeddings: torch.Tensor, caption_rows: torch.Tensor,
                   clean_batch, config: TrainConfig, generator: torch.Generator, progress: bool = True
                   ) -> tuple[UNet2DConditionModel, list[float]]:
    """Train a conditional UNet with the denoising loss (epsilon, per `scheduler`) on the training images.

    `embeddings` (P + 1, 77, D) are the frozen caption embeddings with "" last (`caption_embeddings`);
    `caption_rows` (N, T) gives image n's caption row under each of T templates; `clean_batch(batch,
    generator)` returns the clean UNet-space samples (B, C, H, W) of the image indices `batch` (B,): scaled
    posterior samples for a latent model, the images themselves for a pixel one. Each step draws B images
    uniformly, a template each, and replaces the caption by "" with probability `caption_dropout` so
    classifier-free guidance works.
    """
    empty = len(embeddings) - 1
    count, templates = caption_rows.shape
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.unet_lr)
    schedule = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.unet_steps)
    losses: list[float] = []
    unet.train()
    for _ in tqdm(range(config.unet_steps), desc="unet", disable=not progress, mininterval=1.0):
        batch = torch.randint(0, count, (config.unet_batch_size,), generator=generator)
        clean = clean_batch(batch, generator)
        rows = caption_rows[batch, torch.randint(0, templates, batch.shape, generator=generator)]
        dropped = torch.rand(batch.shape, generator=generator) < config.caption_dropout
        rows = torch.where(dropped, torch.full_like(rows, empty), rows)
        noise, timesteps = draw_noise_and_timesteps(clean, scheduler, generator, count=len(batch))
        loss = denoising_loss(unet, scheduler, clean, embeddings[rows], noise, timesteps)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return unet.eval().requires_grad_(False), losses


def posterior_batches(posterior: tuple[torch.Tensor, torch.Tensor], scaling: float):
    """`clean_batch` for a latent model: a fresh posterior sample of each image, times the VAE's scaling."""
    mean, std = posterior

    def clean_batch(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mu, sigma = mean[batch], std[batch]
        return (mu + sigma * torch.randn(mu.shape, generator=generator)) * scaling

    return clean_batch


def seeded_unet(config: dict, seed: int) -> UNet2DConditionModel:
    """A UNet initialised from `seed` in a forked RNG (the global stream is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(**config)


def final_loss(losses: list[float]) -> float:
    """Mean of the last LOSS_WINDOW losses: a single step's loss is too noisy to report."""
    tail = losses[-LOSS_WINDOW:]
    return sum(tail) / len(tail)


def train_digits_model(out: str | Path, config: TrainConfig = TrainConfig(), progress: bool = True) -> dict:
    """Train the digits model and save it into `out` (replaced atomically); returns the training record."""
    return train_into_folder(out, lambda folder: _train_into(folder, config, progress))


def train_into_folder(out: str | Path, train) -> dict:
    """Run `train(folder) -> record` on a staging folder beside `out`, then put it at `out` in one rename."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out.parent, prefix=f".{out.name}.")
    try:
        record = train(staging)
        _replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return record


def _train_into(folder: Path, config: TrainConfig, progress: bool) -> dict:
    images, labels = load_split("train", SPLIT_SEED)
    prompts, caption_rows = digit_caption_rows(labels)
    return train_latent_model(folder, images, prompts, caption_rows, config, progress, "digits",
                              split_record(SPLIT_SEED))


def train_latent_model(folder: Path, images: torch.Tensor, prompts: list[str], caption_rows: torch.Tensor,
                       config: TrainConfig, progress: bool, title: str, data: dict,
                       replace_text: Callable[[Path], None] | None = None) -> dict:
    """Build the tiny preset into `folder` with `config.seed`, train its VAE then its UNet on `images`
    (N, 3, 32, 32) in [-1, 1] captioned by `prompts` / `caption_rows` (`train_denoiser`), save them with loss
    curves titled `title` and `training.json`, whose `data` is the split record; returns the record.
    `replace_text(folder)`, if given, puts another tokenizer and frozen text encoder in place of the tiny preset's
    CLIP before anything is encoded (stored as it is to be shipped)."""
    build_tiny_model(folder, seed=config.seed)
    if replace_text is not None:
        replace_text(folder)
    components = load_components(str(folder))
    if replace_text is None:
        # The frozen text encoder is stored in fp16 to halve the shipped size (its 49,408-token embedding table
        # is most of it); training uses the rounded weights upcast to fp32, exactly what load_components gives.
        components.text_encoder.half().save_pretrained(folder / "text_encoder")
        components.text_encoder.float()
    generator = torch.Generator().manual_seed(config.seed)

    started = time.perf_counter()
    vae, vae_losses = train_vae(images, config, generator, progress)
    vae_seconds = time.perf_counter() - started
    mean, std = latent_posteriors(vae, images)
    sampled = mean + std * torch.randn(mean.shape, generator=generator)
    vae.register_to_config(scaling_factor=float(1.0 / sampled.std()))
    components.vae = vae

    started = time.perf_counter()
    embeddings = caption_embeddings(components, prompts)
    unet = seeded_unet(digits_unet_config(embeddings.shape[-1]), config.seed)
    unet, unet_losses = train_denoiser(unet, components.scheduler, embeddings, caption_rows,
                                       posterior_batches((mean, std), vae.config.scaling_factor), config,
                                       generator, progress)
    unet_seconds = time.perf_counter() - started

    vae.save_pretrained(folder / "vae", safe_serialization=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    plot_losses(vae_losses, folder / "losses_vae.png", f"{title} VAE: reconstruction MSE and KL (per element)")
    plot_losses({"epsilon MSE": unet_losses}, folder / "losses_unet.png", f"{title} UNet: denoising loss")
    record = {
        "config": asdict(config),
        "parameters": {"vae": _count(vae), "unet": _count(unet), "text_encoder": _count(components.text_encoder)},
        "scaling_factor": vae.config.scaling_factor,
        "final_losses": {
            "vae_reconstruction_mse": final_loss(vae_losses["reconstruction MSE"]),
            "vae_kl_per_element": final_loss(vae_losses["KL per latent element"]),
            "unet_epsilon_mse": final_loss(unet_losses),
        },
        "seconds": {"vae": round(vae_seconds, 1), "unet": round(unet_seconds, 1)},
        **run_record(data),
    }
    write_json(folder / "training.json", record)
    return record


def run_record(data: dict) -> dict:
    """The part of a training record that says what ran where: threads, data split, versions, commit."""
    return {"torch_threads": torch.get_num_threads(), "data": data, "packages": package_versions(),
            "git_commit": git_commit()}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _replace_folder(new: Path, target: Path) -> None:
    """Put `new` at `target`, moving any previous `target` aside first so the swap never half-happens."""
    old = None
    if target.exists():
        old = staging_dir(target.parent, prefix=f".{target.name}.old.")
        os.replace(target, old / target.name)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old)


def config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per TrainConfig field (`--unet-steps` ...) and `--threads` to `parser`."""
    for name, value in asdict(TrainConfig()).items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared machine)")


def parsed_config(args: dict) -> TrainConfig:
    """The TrainConfig of parsed `args` (its fields removed from `args`); sets torch's thread count."""
    torch.set_num_threads(args.pop("threads"))
    return TrainConfig(**{name: args.pop(name) for name in asdict(TrainConfig())})


def print_record(record: dict, out: str | Path) -> None:
    losses = record["final_losses"]
    print(f"final losses (mean of the last {LOSS_WINDOW} steps): " +
          ", ".join(f"{name} {value:.5f}" for name, value in losses.items()))
    print(f"parameters {record['parameters']}, seconds {record['seconds']}; saved to {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imagic_steps.digits.train", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write the model to (replaced if it exists)")
    config_arguments(parser)
    args = vars(parser.parse_args(argv))
    out = args.pop("out")
    print_record(train_digits_model(out, parsed_config(args)), out)


if __name__ == "__main__":
    main()
