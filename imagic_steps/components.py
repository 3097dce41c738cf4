"""The loaded model: the frozen components Imagic's stages share (`SDComponents`), their dtypes by name, and
`kept_weights`, which restores the components' tensors after a diffusers pipeline cast them.

The lowest model layer: it imports neither the model families (`imagic_steps.families` imports it for its hooks'
types) nor loading (`imagic_steps.model_loading` builds an `SDComponents`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5Tokenizer

from .locations import is_random_preset

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


@dataclass
class SDComponents:
    """The frozen model parts shared by all stages.

    `resolution` is the model's native image side in pixels (UNet sample size x `space_factor`).
    """

    unet: UNet2DConditionModel
    scheduler: SchedulerMixin
    model_id: str
    revision: str | None
    device: torch.device
    dtype: torch.dtype
    # None when loaded with `text_encoders=False` (fine-tune and sample jobs read the conditioning from the embed
    # artefact); the VAE is None in pixel space (IF)
    tokenizer: CLIPTokenizer | T5Tokenizer | None = None
    text_encoder: CLIPTextModel | T5EncoderModel | None = None
    vae: AutoencoderKL | None = None
    channels_last: bool = False  # UNet weights in channels-last memory format (faster convolutions on GPUs)
    compile_unet: bool = False
    # what differs between model families (an `imagic_steps.families.ModelFamily`, which `load_components` always
    # gives): no default, since this lowest layer imports no family (families imports it for its hooks' types)
    family: ModelFamily = field(kw_only=True)
    tokenizer_2: CLIPTokenizer | None = None  # SDXL's second tokenizer and text encoder (with projection)
    text_encoder_2: CLIPTextModelWithProjection | None = None

    def frozen_modules(self) -> list[torch.nn.Module]:
        """The weighted components: text encoder(s), VAE, UNet."""
        return [m for m in (self.text_encoder, self.text_encoder_2, self.vae, self.unet) if m is not None]

    def unet_forward(self, unet: torch.nn.Module) -> torch.nn.Module:
        """What the stages call to run `unet`: `unet` itself, or with `compile_unet` a `torch.compile` wrapper that
        shares its weights (the module is not changed, so copies and state dicts stay plain)."""
        return torch.compile(unet) if self.compile_unet else unet

    @property
    def space_factor(self) -> int:
        """Image pixels per UNet-space cell along a side: the VAE's down-sampling (8 for SD), 1 in pixel space."""
        return self.family.space_factor(self)

    @property
    def resolution(self) -> int:
        return int(self.unet.config.sample_size) * self.space_factor

    def provenance(self) -> dict:
        """What a result folder records about the model it came from. `random_weights` marks the random presets'
        results, which check the mechanics and mean nothing about quality."""
        return {"model": self.model_id, "revision": self.revision, "random_weights": is_random_preset(self.model_id),
                "prediction_type": self.scheduler.config.prediction_type,
                "dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device),
                "channels_last": self.channels_last, "compile_unet": self.compile_unet, "family": self.family.name}


@contextlib.contextmanager
def kept_weights(*modules: torch.nn.Module) -> Iterator[None]:
    """Put the modules' parameters and buffers back after the block: the very tensors they held before it, so
    dtype, device and values are restored exactly (a cast back would not restore the bits an fp16 round trip lost).

    diffusers' pipelines built on the shared components may cast them in place: the SDXL img2img pipeline (SDEdit)
    casts a `force_upcast` VAE to the prompt embeddings' dtype after encoding (an fp32 VAE of an fp16 load ends the
    call in fp16, which SDXL's VAE cannot decode in) and up and down again around its decode, and the SDXL LEDITS++
    pipeline likewise. Holding the old tensors costs nothing while nothing is cast (they are the module's own), and
    the cast copy's size while one is (SDXL's VAE: 0.17 GB in fp16).
    """
    parameters, buffers = [], []
    for module in modules:
        for owner in module.modules():
            parameters += [(owner._parameters, key, parameter, parameter.data)
                           for key, parameter in owner._parameters.items() if parameter is not None]
            buffers += [(owner._buffers, key, buffer) for key, buffer in owner._buffers.items() if buffer is not None]
    try:
        yield
    finally:
        for table, key, parameter, data in parameters:
            table[key] = parameter  # the same Parameter object (what optimisers and state dicts hold)
            parameter.data = data
        for table, key, buffer in buffers:
            table[key] = buffer
