"""Train the two coloured-digits models: a latent one (VAE + latent UNet) and a pixel-space one (UNet on RGB).

    python -m imagic_steps.colour_digits.train --space latent --out imagic_steps/presets/colour_digits_latent
    python -m imagic_steps.colour_digits.train --space pixel --out imagic_steps/presets/colour_digits_pixel
    python -m imagic_steps.colour_digits.train --space latent --text-encoder t5 --out colour_digits_latent_t5

Both train on exactly the same data, `training_pairs()` (every training digit in every colour but the held-out
combinations, 5,752 images at 32 px), with the same captions, caption dropout, optimiser, batch, step count and
seed (`digits.train.TrainConfig`: one set of defaults), so what differs is where the diffusion runs, and with it
each family's noise schedule:

* **latent** (`colour-digits-latent`, Stable Diffusion's layout, the digits recipe unchanged): a frozen random
  two-layer CLIP text encoder, an AutoencoderKL (32x32x3 <-> 8x8x4) trained first, then a UNet on its scaled
  latents (cross-attention at 8x8);
* **pixel** (`colour-digits-pixel`, DeepFloyd IF stage I's layout, loaded through the IF family): a frozen
  random two-layer T5 encoder (the text encoder IF uses, at the same width 32; its SentencePiece tokenizer is
  trained on this domain's captions), no VAE, a UNet on the 32x32x3 images themselves, one more down-sampling
  level so that its cross-attention also runs at 8x8, and IF's cosine schedule with v prediction
  (`pixel_scheduler_config`); no learned variance, unlike IF (the saved UNet has IF's six output channels, the
  variance half constant zero: `with_zero_variance_half`). Its parameter count is the latent model's VAE plus
  UNet.

Why the pixel model does not share SD's scaled-linear schedule: it keeps sqrt(alpha_bar) = 0.068 of the image at
t = 999, and 0.090 at t = 951, where 20 "leading" DDIM steps start. A pixel image of these digits is mostly exact
black (-1), so a model trained on that schedule reads the image's mean from the residual signal; sampling from
zero-mean noise then gives grey, coloured or speckled backgrounds (a model trained that way drew the requested
digit 0.42 and colour 0.45 of the time, against 0.87 and 1.00 for the latent one). Latents are near zero-mean,
so the latent model does not see the problem. IF's cosine betas with "trailing" steps start sampling at
t = 999, where sqrt(alpha_bar) = 0.00005, and v prediction makes that first step useful: there an epsilon model's
x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) divides its error by 0.00005 (a model trained so read
x0's mean as -0.07 where the images' is -0.67, and drew grey backgrounds again), while v = -x0 at zero signal, so
a v model predicts the caption's mean image directly (Lin et al., "Common Diffusion Noise Schedules and Sample
Steps Are Flawed", 2024).

**Text encoder** (`--text-encoder`, issue 38's 2 x 2 of space x text encoder): by default each space has its
family's own (latent: CLIP, pixel: T5; the shipped models). The other choice gives the UNet the other model's text
encoder, bit for bit what that model of the same seed holds (`write_text_encoder`: the pixel model's T5 and domain
tokenizer, stored in fp32; the latent model's CLIP and SD's tokenizer, stored in fp16), loaded through the same
family (an SD folder with a T5, an IF folder with a CLIP: `imagic_steps.families.TEXT_ENCODERS`, whose prompt
encoding belongs to the text encoder). Both are width 32, so the UNets are the same as the shipped ones apart from
what they are conditioned on. `training.json` then says `"text_encoder"`.

Every random draw follows `--seed`; the output folder is replaced atomically; each run writes `training.json`
(configuration, data, parameter counts, final losses, seconds, package versions, git commit) and loss curves.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel

from ..digits.data import raw_digits, split_record
from ..digits.train import (
    TrainConfig,
    caption_embeddings,
    config_arguments,
    final_loss,
    parsed_config,
    print_record,
    run_record,
    seeded_unet,
    train_denoiser,
    train_into_folder,
    train_latent_model,
)
from ..drawing import plot_losses
from ..families import TEXT_ENCODERS as TEXT_ENCODER_CLASSES
from ..io import write_json
from ..model_folder import CLIP_ENCODER, IF_PIPELINE, T5_ENCODER, read_model_index
from ..model_loading import load_components
from ..preset_recipes import build_tiny_model, if_scheduler_config, write_if_folder
from .data import (
    CAPTION_TEMPLATES,
    COLOURS,
    HELD_OUT_COMBINATIONS,
    IMAGE_SIZE,
    SPLIT_SEED,
    caption,
    colour_tensors,
    training_pairs,
)

SPACES = ("latent", "pixel")
TEXT_ENCODERS = {"clip": CLIP_ENCODER, "t5": T5_ENCODER}  # --text-encoder -> model_index.json's class
SPACE_TEXT_ENCODERS = {"latent": "clip", "pixel": "t5"}  # each space's default: its family's own, the shipped models'


def colour_captions() -> list[str]:
    """Every caption: colour c, digit d, template t at index (c * 10 + d) * T + t."""
    return [caption(colour, digit, template) for colour in range(len(COLOURS)) for digit in range(10)
            for template in range(len(CAPTION_TEMPLATES))]


def training_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The training images (N, 3, 32, 32) in [-1, 1] (`training_pairs()` order) and, per image, its caption's
    index in `colour_captions()` under each template (N, T) int64."""
    indices, colours = training_pairs(SPLIT_SEED)
    labels = torch.from_numpy(raw_digits()[1][indices]).long()
    templates = len(CAPTION_TEMPLATES)
    rows = (torch.from_numpy(colours).long() * 10 + labels)[:, None] * templates + torch.arange(templates)
    return colour_tensors(indices, colours), rows


def data_record() -> dict:
    """The digits split the images come from, and the colouring on top of it."""
    return {**split_record(SPLIT_SEED), "colours": list(COLOURS),
            "images": len(training_pairs(SPLIT_SEED)[0]),
            "held_out_combinations": [caption(colour, digit) for digit, colour in HELD_OUT_COMBINATIONS]}


def trained_captions(prompts: list[str], caption_rows: torch.Tensor) -> tuple[str, ...]:
    """The captions of `prompts` that `caption_rows` (N, T) uses, in prompt order: what the T5 tokenizer is trained
    on, so never a held-out combination's."""
    return tuple(prompts[row] for row in sorted(set(caption_rows.flatten().tolist())))


def write_text_encoder(folder: Path, text_encoder: str, seed: int, captions: tuple[str, ...]) -> None:
    """Put `text_encoder`'s ("clip" or "t5") tokenizer/ and text_encoder/ into the model folder `folder` in place of
    its own, and list their classes in its model_index.json. Each is what the space that has it by default holds at
    `seed`, bit for bit: "t5" the pixel model's (its folder's draw: pixel UNet, then T5; the SentencePiece tokenizer
    trained on `captions`; fp32), "clip" the latent model's (the tiny preset's draw: UNet, VAE, then CLIP; SD's
    tokenizer; fp16 as `digits.train.train_latent_model` stores it)."""
    with tempfile.TemporaryDirectory() as scratch:
        donor = Path(scratch)
        if text_encoder == "t5":
            write_if_folder(donor, seed, pixel_unet_config, {"scheduler": pixel_scheduler_config()}, DDPMScheduler,
                            IF_PIPELINE, captions=captions)
        else:
            build_tiny_model(donor, seed=seed)
            CLIPTextModel.from_pretrained(donor / "text_encoder").half().save_pretrained(donor / "text_encoder")
        for part in ("tokenizer", "text_encoder"):
            shutil.rmtree(folder / part)
            shutil.copytree(donor / part, folder / part)
    encoder = TEXT_ENCODER_CLASSES[TEXT_ENCODERS[text_encoder]]
    index = read_model_index(folder)
    index.update(text_encoder=["transformers", encoder.encoder_class],
                 tokenizer=["transformers", encoder.tokenizer_class])
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def pixel_unet_config(cross_attention_dim: int) -> dict:
    """UNet on 32x32x3 images: three levels (32, 16, 8 px), cross-attention at 8x8 as the latent UNet's;
    0.97 M parameters, the latent model's VAE (0.17 M) plus UNet (0.79 M)."""
    return dict(
        sample_size=IMAGE_SIZE, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(16, 32, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim, attention_head_dim=8, norm_num_groups=8,
    )


def pixel_scheduler_config() -> dict:
    """The pixel model's noise schedule: IF stage I's cosine betas (`if_scheduler_config`) with v prediction, a
    fixed variance (the model learns no variance), "trailing" timesteps so that sampling starts at t = 999, and
    x0 clipped to [-1, 1] rather than IF's dynamic thresholding, which on mostly black (-1) images would rescale
    the whole image whenever the background overshoots."""
    return {**if_scheduler_config(), "prediction_type": "v_prediction", "variance_type": "fixed_small",
            "thresholding": False, "timestep_spacing": "trailing"}


def with_zero_variance_half(unet: UNet2DConditionModel) -> UNet2DConditionModel:
    """The UNet with IF's output layout: the prediction (noise, or v), then a variance of as many channels.
    diffusers' IF pipelines (IFImg2ImgPipeline, for SDEdit) split every UNet output in two halves; this model
    learns the prediction only, with a fixed-variance schedule, so its variance half is constant zero (`conv_out`
    gets as many more output channels with zero weights and bias), which no fixed-variance scheduler reads.
    Predictions are unchanged bit for bit."""
    wide = UNet2DConditionModel.from_config(unet.config, out_channels=2 * unet.config.out_channels)
    state = unet.state_dict()
    for name in ("conv_out.weight", "conv_out.bias"):
        state[name] = torch.cat([state[name], torch.zeros_like(state[name])])
    wide.load_state_dict(state)
    return wide.eval().requires_grad_(False)


def train_pixel_model(folder: Path, images: torch.Tensor, prompts: list[str], caption_rows: torch.Tensor,
                      config: TrainConfig, progress: bool, text_encoder: str = "t5") -> dict:
    """Write the IF-layout folder (tokenizer trained on the captions `caption_rows` uses, so never on a held-out
    combination's; frozen T5, or the latent model's CLIP for `text_encoder` "clip"; seeded UNet: replaced next),
    train a pixel UNet on `images` with `train_denoiser`, save it and its loss curve; returns the training record
    (`train_colour_model` writes it)."""
    captions = trained_captions(prompts, caption_rows)
    write_if_folder(folder, config.seed, pixel_unet_config, {"scheduler": pixel_scheduler_config()},
                    DDPMScheduler, IF_PIPELINE, captions=captions)
    if text_encoder != SPACE_TEXT_ENCODERS["pixel"]:
        write_text_encoder(folder, text_encoder, config.seed, captions)
    components = load_components(str(folder))
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
    embeddings = caption_embeddings(components, prompts)
    unet = seeded_unet(pixel_unet_config(embeddings.shape[-1]), config.seed)
    unet, losses = train_denoiser(unet, components.scheduler, embeddings, caption_rows,
                                  lambda batch, generator: images[batch], config, generator, progress)
    seconds = time.perf_counter() - started
    unet = with_zero_variance_half(unet)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    plot_losses({"v MSE": losses}, folder / "losses_unet.png", "coloured digits, pixel UNet: denoising loss")
    record = {
        "space": "pixel",
        "config": asdict(config),
        "parameters": {"unet": _count(unet), "text_encoder": _count(components.text_encoder)},
        "final_losses": {"unet_v_mse": final_loss(losses)},
        "seconds": {"unet": round(seconds, 1)},
        **run_record(data_record()),
    }
    return record


def train_colour_model(space: str, out: str | Path, config: TrainConfig = TrainConfig(),
                       progress: bool = True, text_encoder: str | None = None) -> dict:
    """Train the `space` ("latent" or "pixel") coloured-digits model into `out` (replaced atomically), conditioned
    on `text_encoder` ("clip" or "t5"; None: the space's own, `SPACE_TEXT_ENCODERS`)."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    text_encoder = text_encoder or SPACE_TEXT_ENCODERS[space]
    if text_encoder not in TEXT_ENCODERS:
        raise ValueError(f"text encoder must be one of {', '.join(TEXT_ENCODERS)}, got {text_encoder!r}")
    swapped = text_encoder != SPACE_TEXT_ENCODERS[space]
    images, caption_rows = training_data()
    prompts = colour_captions()

    def train(folder: Path) -> dict:
        if space == "pixel":
            record = train_pixel_model(folder, images, prompts, caption_rows, config, progress, text_encoder)
        else:
            replace_text = partial(write_text_encoder, text_encoder=text_encoder, seed=config.seed,
                                   captions=trained_captions(prompts, caption_rows)) if swapped else None
            record = {"space": "latent", **train_latent_model(
                folder, images, prompts, caption_rows, config, progress, "coloured digits, latent", data_record(),
                replace_text)}
        if swapped:  # only then: the shipped models' records stay as they were written
            record = {**record, "text_encoder": text_encoder}
        write_json(folder / "training.json", record)
        return record

    return train_into_folder(out, train)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imagic_steps.colour_digits.train",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--space", required=True, choices=SPACES, help="latent (VAE + UNet) or pixel (UNet on RGB)")
    parser.add_argument("--text-encoder", choices=list(TEXT_ENCODERS),
                        help="clip (SD's two-layer CLIP) or t5 (the domain T5); default the space's own: "
                             "latent clip, pixel t5")
    parser.add_argument("--out", required=True, help="folder to write the model to (replaced if it exists)")
    config_arguments(parser)
    args = vars(parser.parse_args(argv))
    space, out, text_encoder = args.pop("space"), args.pop("out"), args.pop("text_encoder")
    print_record(train_colour_model(space, out, parsed_config(args), text_encoder=text_encoder), out)


if __name__ == "__main__":
    main()
