"""Load the five Stable Diffusion components Imagic needs, from a hub id, a local folder or a preset.

A model reference is one of:
  * a preset name (`tiny`): a deterministic, randomly initialised tiny Stable Diffusion that is built
    offline from configs, written once with `save_pretrained` to a cache folder and then loaded through
    the very same `from_pretrained` path as a real model;
  * a local folder in the diffusers layout (`model_index.json`, `tokenizer/`, `text_encoder/`, `vae/`,
    `unet/`, `scheduler/`);
  * a hub id such as `stable-diffusion-v1-5/stable-diffusion-v1-5` (SD 1.x / 2.x).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import logging as diffusers_logging
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
from transformers.utils import logging as transformers_logging

from .errors import ModelNotAvailableError
from .locations import DIGITS_PRESET, TINY_PRESET, TINY_VERSION, preset_folder

TINY_RESOLUTION = 64  # pixels; latents are 8x8

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


@dataclass
class SDComponents:
    """The frozen Stable Diffusion parts shared by all stages.

    `resolution` is the model's native image side in pixels (UNet sample size x VAE down-sampling).
    """

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    vae: AutoencoderKL
    unet: UNet2DConditionModel
    scheduler: SchedulerMixin
    model_id: str
    revision: str | None
    device: torch.device
    dtype: torch.dtype
    channels_last: bool = False  # UNet weights in channels-last memory format (faster convolutions on GPUs)
    compile_unet: bool = False

    def unet_forward(self, unet: torch.nn.Module) -> torch.nn.Module:
        """What the stages call to run `unet`: `unet` itself, or with `compile_unet` a `torch.compile` wrapper that
        shares its weights (the module is not changed, so copies and state dicts stay plain)."""
        return torch.compile(unet) if self.compile_unet else unet

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def resolution(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    def provenance(self) -> dict:
        """What a result folder records about the model it came from."""
        return {"model": self.model_id, "revision": self.revision, "dtype": str(self.dtype).replace("torch.", ""),
                "device": str(self.device), "channels_last": self.channels_last, "compile_unet": self.compile_unet}


def resolve_model_path(model: str) -> str:
    """Turn a model reference into something `from_pretrained` accepts (a folder path or a hub id)."""
    if model == TINY_PRESET:
        return str(ensure_tiny_model())
    if model == DIGITS_PRESET:
        return str(preset_folder(DIGITS_PRESET))
    return model


def load_components(
    model: str,
    *,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "fp32",
    channels_last: bool = False,
    compile_unet: bool = False,
) -> SDComponents:
    """Load tokenizer, text encoder, VAE, UNet and DDPM training scheduler, all frozen and in eval mode.

    `dtype` is the storage dtype of the frozen weights (fp16/bf16 halve GPU memory); the stages upcast
    what they train to fp32, so half-precision weights never reach an optimiser. `channels_last` stores the
    UNet's weights channels-last (copies keep the format); `compile_unet` makes the stages run every UNet
    through `torch.compile` (see `SDComponents.unet_forward`).
    """
    diffusers_logging.disable_progress_bar()  # per-file loading bars only clutter the job logs
    transformers_logging.disable_progress_bar()
    path = resolve_model_path(model)
    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    device = torch.device(device)
    kwargs = {"revision": revision} if revision else {}
    try:
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kwargs)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=torch_dtype, **kwargs)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=torch_dtype, **kwargs)
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=torch_dtype, **kwargs)
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", **kwargs)
    except (OSError, ValueError) as error:
        raise ModelNotAvailableError(_unavailable_message(model, error)) from error
    for module in (text_encoder, vae, unet):
        module.requires_grad_(False)
        module.eval()
        module.to(device)
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    return SDComponents(tokenizer, text_encoder, vae, unet, scheduler, model, revision, device, torch_dtype,
                        channels_last, compile_unet)


def _unavailable_message(model: str, error: Exception) -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    hint = (
        f"download it once with `huggingface-cli download {model} --local-dir DIR` on a machine with access to "
        f"the hub and set `model: DIR` (a local diffusers folder), or use the offline preset `model: tiny`"
    )
    where = " (HF_HUB_OFFLINE is set)" if offline else ""
    return f"model '{model}' is not available{where}: {first_line}; {hint}"


# --------------------------------------------------------------------------------------------------
# The tiny preset
# --------------------------------------------------------------------------------------------------


def tiny_unet_config() -> dict:
    """~1.1 M parameter UNet with cross-attention on 8x8x4 latents (64 px images)."""
    return dict(
        sample_size=TINY_RESOLUTION // 8,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_vae_config() -> dict:
    """VAE with SD's 8x down-sampling (four blocks, three down-samplers) and 4 latent channels."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=TINY_RESOLUTION,
        scaling_factor=0.18215,
    )


def tiny_text_config() -> CLIPTextConfig:
    """Two-layer CLIP text encoder with SD 1.x's vocabulary and 77-token context."""
    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )


def tiny_scheduler_config() -> dict:
    """SD 1.x's scheduler config (a PNDM scheduler over scaled-linear betas, 1000 steps, epsilon prediction)."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
        skip_prk_steps=True,
    )


def write_clip_bpe_files(folder: Path) -> None:
    """Write SD 1.x's CLIP BPE tokenizer files (vocab.json, merges.txt) from open_clip's shipped vocabulary.

    This is the construction of OpenAI's CLIP tokenizer: 256 byte symbols, the same with the end-of-word
    marker, one token per merge, then the two special tokens; 49,408 tokens in all.
    """
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def build_tiny_model(folder: Path, seed: int = 0) -> None:
    """Build the tiny preset deterministically from `seed` and `save_pretrained` it into `folder`."""
    folder = Path(folder)
    transformers_logging.disable_progress_bar()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**tiny_unet_config())
        vae = AutoencoderKL(**tiny_vae_config())
        text_encoder = CLIPTextModel(tiny_text_config())
    write_clip_bpe_files(folder / "bpe")
    tokenizer = CLIPTokenizer(vocab=str(folder / "bpe" / "vocab.json"), merges=str(folder / "bpe" / "merges.txt"),
                              model_max_length=77)
    shutil.rmtree(folder / "bpe")
    tokenizer.save_pretrained(folder / "tokenizer")
    text_encoder.save_pretrained(folder / "text_encoder", safe_serialization=True)
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    unet.save_pretrained(folder / "unet", safe_serialization=True)
    PNDMScheduler.from_config(tiny_scheduler_config()).save_pretrained(folder / "scheduler")
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2))


@lru_cache(maxsize=None)
def ensure_tiny_model() -> Path:
    """Return the tiny preset's folder, building it on first use (atomically: concurrent jobs may race)."""
    folder = preset_folder(TINY_PRESET)
    if (folder / "model_index.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{TINY_VERSION}.", dir=folder.parent))
    try:
        build_tiny_model(staging)
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / "model_index.json").exists():  # lost a race is fine; anything else is not
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
