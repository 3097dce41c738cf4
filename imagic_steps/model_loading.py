"""Load the five Stable Diffusion components Imagic needs, from a hub id, a local folder or a preset.

A model reference is one of:
  * a built preset's name: a deterministic, randomly initialised Stable Diffusion that is built offline from
    configs, written once with `save_pretrained` to a cache folder and then loaded through the very same
    `from_pretrained` path as a real model. `tiny` is a ~1 M parameter one for fast tests; `sd15-shaped` and
    `sd21-shaped` have exactly SD-1.5's and SD-2.1 (768-v)'s architectures, schedulers and tokenizers, so
    memory, speed and the v-prediction path can be checked offline at full size;
  * the shipped `digits` preset, trained on handwritten digits (`imagic_steps.digits`);
  * a local folder in the diffusers layout (`model_index.json`, `tokenizer/`, `text_encoder/`, `vae/`,
    `unet/`, `scheduler/`);
  * a hub id such as `stable-diffusion-v1-5/stable-diffusion-v1-5` (SD 1.x / 2.x) or
    `stabilityai/stable-diffusion-xl-base-1.0` (SDXL: a second tokenizer and text encoder, `tokenizer_2/`,
    `text_encoder_2/`).

The model family (`imagic_steps.families`: SD, SDXL or IF) is read from the folder's model_index.json; `tiny-sdxl`
and `tiny-if` are ~1 M parameter presets in SDXL's and DeepFloyd IF stage I's layouts (IF: `tokenizer/` is a T5
SentencePiece model, `text_encoder/` a T5EncoderModel, no `vae/`) for fast tests of those paths.
"""

from __future__ import annotations

import logging

import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from .components import DTYPES, SDComponents
from .errors import ModelNotAvailableError, first_line, hub_offline
from .families import detect_family
from .locations import MODEL_PRESETS, TINY_PRESET, is_random_preset, preset_folder
from .preset_recipes import ensure_preset

logger = logging.getLogger(__name__)


def resolve_model_path(model: str) -> str:
    """Turn a model reference into something `from_pretrained` accepts (a folder path or a hub id); a built
    preset is built on first use."""
    preset = MODEL_PRESETS.get(model)
    if preset is None:
        return model
    return str(preset_folder(model) if preset.shipped else ensure_preset(model))


def load_components(
    model: str,
    *,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "fp32",
    channels_last: bool = False,
    compile_unet: bool = False,
    text_encoders: bool = True,
) -> SDComponents:
    """Load tokenizer(s), text encoder(s), VAE, UNet and DDPM training scheduler, all frozen and in eval mode.

    `dtype` is the storage dtype of the frozen weights (fp16/bf16 halve GPU memory); the stages upcast
    what they train to fp32, so half-precision weights never reach an optimiser. `channels_last` stores the
    UNet's weights channels-last (copies keep the format); `compile_unet` makes the stages run every UNet
    through `torch.compile` (see `SDComponents.unet_forward`). `text_encoders=False` leaves the tokenizers and
    text encoders out: what needs no prompt encoding (stage B and C from an embed artefact) saves their memory.
    """
    diffusers_logging.disable_progress_bar()  # per-file loading bars only clutter the job logs
    transformers_logging.disable_progress_bar()
    path = resolve_model_path(model)
    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    device = torch.device(device)
    kwargs = {"revision": revision} if revision else {}
    family = detect_family(path, model, **kwargs)
    try:
        text = family.load_text(path, torch_dtype, **kwargs) if text_encoders else {}
        vae = family.load_vae(path, torch_dtype, **kwargs)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=torch_dtype, **kwargs)
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", **kwargs)
    except (OSError, ValueError) as error:
        raise ModelNotAvailableError(unavailable_message(model, error)) from error
    components = SDComponents(unet=unet, scheduler=scheduler, model_id=model, revision=revision, device=device,
                              dtype=torch_dtype, channels_last=channels_last, compile_unet=compile_unet,
                              family=family, vae=vae, **text)
    for module in components.frozen_modules():
        module.requires_grad_(False)
        module.eval()
        module.to(device)
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    family.finish_loading(components)
    if is_random_preset(model):
        logger.info("model '%s' has seeded random weights: its outputs check the mechanics, not quality", model)
    return components


def unavailable_message(model: str, error: Exception, preset: str = TINY_PRESET, option: str = "model: ") -> str:
    """One line: `model` cannot be loaded (the error's first line), and how to get it or which offline `preset` to
    use instead; `option` is the setting that names the model (`model: ` in a config, `--upscale ` on the
    command line)."""
    hint = (
        f"download it once with `hf download {model} --local-dir DIR` on a machine with access to "
        f"the hub and set `{option}DIR` (a local diffusers folder), or use the offline preset `{option}{preset}`"
    )
    where = " (HF_HUB_OFFLINE is set)" if hub_offline() else ""
    return f"model '{model}' is not available{where}: {first_line(error)}; {hint}"
