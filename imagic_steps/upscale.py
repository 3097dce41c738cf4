"""Super-resolution of edited images with DeepFloyd IF's stage II, applied unchanged (never fine-tuned).

Imagic edits only IF's 64 px stage I, as the paper edited only Imagen's base model and applied Imagen's
super-resolution models to the result unchanged. This module does the same with diffusers'
`IFSuperResolutionPipeline` as it is: the 64 px image is upscaled bilinearly to the stage II UNet's side (256 px for
`DeepFloyd/IF-II-M-v1.0` and the `tiny-if-sr` preset), noised to the pipeline's `noise_level` and given to the UNet
beside a noisy 256 px image that is denoised under the prompt. A stage II model is a hub id, a local diffusers
folder (`model_index.json` with `_class_name: IFSuperResolutionPipeline`) or the `tiny-if-sr` preset.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from .components import DTYPES
from .errors import ModelNotAvailableError, PlanError
from .images import open_rgb
from .io import save_image, write_json
from .locations import TINY_IF_SR_PRESET, is_random_preset
from .model_folder import SUPER_RESOLUTION_PIPELINE
from .model_loading import resolve_model_path, unavailable_message
from .provenance import provenance

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpscaleParams:
    """The stage II call's settings; the defaults are IFSuperResolutionPipeline's own (50 DDPM steps, guidance 4.0,
    the upscaled input noised to timestep 250 of 1000)."""

    steps: int = 50
    guidance_scale: float = 4.0
    noise_level: int = 250


@dataclass
class SuperResolutionModel:
    """A loaded stage II pipeline and where it came from. `resolution`: its output side in pixels."""

    pipeline: object  # diffusers.IFSuperResolutionPipeline (imported on load: it pulls in the IF pipelines)
    model_id: str
    revision: str | None
    device: torch.device
    dtype: torch.dtype

    @property
    def resolution(self) -> int:
        return int(self.pipeline.unet.config.sample_size)

    def provenance(self) -> dict:
        """What an upscale record says about the model (`random_weights`: a random preset's output means nothing
        about quality)."""
        return {"model": self.model_id, "revision": self.revision, "random_weights": is_random_preset(self.model_id),
                "pipeline": SUPER_RESOLUTION_PIPELINE, "resolution": self.resolution,
                "dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device)}


def _unavailable(model: str, error: Exception) -> ModelNotAvailableError:
    return ModelNotAvailableError(unavailable_message(model, error, TINY_IF_SR_PRESET, "--upscale "))


def check_super_resolution(model: str, revision: str | None = None) -> str:
    """Resolve `model` (a preset is built on first use) and check from its model_index.json alone (fetched if
    need be: no weights) that it is an IF stage II; returns the path or hub id to load. Raises
    ModelNotAvailableError when the index cannot be had (a hub id offline), PlanError for another pipeline class:
    both one line, before any weights load, so the CLI checks it before the edit runs."""
    from diffusers import IFSuperResolutionPipeline

    path = resolve_model_path(model)
    try:
        index = IFSuperResolutionPipeline.load_config(path, **({"revision": revision} if revision else {}))
    except (OSError, ValueError) as error:
        raise _unavailable(model, error) from error
    if index.get("_class_name") != SUPER_RESOLUTION_PIPELINE:
        raise PlanError(f"model '{model}' has pipeline class {index.get('_class_name')}, not a DeepFloyd IF "
                        f"super-resolution stage's ({SUPER_RESOLUTION_PIPELINE}); give `--upscale` a stage II "
                        f"model, e.g. DeepFloyd/IF-II-M-v1.0 or {TINY_IF_SR_PRESET}")
    return path


def load_super_resolution(model: str, *, revision: str | None = None, device: str | torch.device = "cpu",
                          dtype: str | torch.dtype = "fp32") -> SuperResolutionModel:
    """Load an IF stage II model as diffusers' IFSuperResolutionPipeline (weights in `dtype` on `device`), without
    safety checker, feature extractor or watermarker. Errors as `check_super_resolution`; a model whose weights
    cannot be fetched raises ModelNotAvailableError, one line as `model_loading.load_components` words it."""
    from diffusers import IFSuperResolutionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # per-component loading bars only clutter the logs
    path = check_super_resolution(model, revision)
    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    try:
        pipeline = IFSuperResolutionPipeline.from_pretrained(
            path, safety_checker=None, feature_extractor=None, watermarker=None, requires_safety_checker=False,
            dtype=torch_dtype, **({"revision": revision} if revision else {}))
    except (OSError, ValueError) as error:
        raise _unavailable(model, error) from error
    pipeline.to(device)
    pipeline.set_progress_bar_config(disable=True)
    if is_random_preset(model):
        logger.info("model '%s' has seeded random weights: its outputs check the mechanics, not quality", model)
    return SuperResolutionModel(pipeline, model, revision, torch.device(device), torch_dtype)


@torch.inference_mode()
def upscale(model: SuperResolutionModel, images: list[Image.Image], prompt: str, seed: int,
            params: UpscaleParams) -> list[Image.Image]:
    """Each of `images` (RGB, stage I's 64 px side; any side is resized bilinearly by the pipeline) upscaled to
    `model.resolution` px under `prompt`, by IFSuperResolutionPipeline unchanged (no caption cleaning: the prompt
    as stage I encodes it). Each image's noise (the initial 256 px noise and the input's noising) comes from a
    CPU generator seeded with `seed`, so a result depends only on its image, prompt, seed and params."""
    return [model.pipeline(prompt=prompt, image=image, num_inference_steps=params.steps,
                           guidance_scale=params.guidance_scale, noise_level=params.noise_level,
                           generator=torch.Generator().manual_seed(seed), output_type="pil",
                           clean_caption=False).images[0]
            for image in images]


def run_upscale(model: SuperResolutionModel, prompt: str, params: UpscaleParams, *,
                samples: Sequence[tuple[int, str | Path, str | Path]], record: str | Path) -> None:
    """Upscale each (seed, source PNG, target PNG) of `samples` with its seed and write the PNGs atomically, then
    one provenance record."""
    for seed, source, target in samples:
        save_image(upscale(model, [open_rgb(source)], prompt, seed, params)[0], target)
    write_json(record, provenance("upscale", asdict(params), model.provenance(), prompt=prompt,
                                  samples=[{"seed": seed, "source": str(source), "path": str(target)}
                                           for seed, source, target in samples]))
