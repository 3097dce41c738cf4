"""What a diffusers folder's model_index.json says: which components it lists and which model family it is.

The one home of the pipeline class names the package knows. Import-light (no torch): planning and the memory
estimate read it before any model loads; `imagic_steps.families` turns the family name into the family's hooks.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import PlanError

FAMILY_NAMES = ("sd", "sdxl", "if")  # imagic_steps.families' `name`s
SD_PIPELINE = "StableDiffusionPipeline"
SDXL_PIPELINE = "StableDiffusionXLPipeline"
IF_PIPELINE = "IFPipeline"
# IF stage II (and its img2img / inpainting versions): T5-conditioned like stage I, but its UNet upscales a 64 px
# image (6 input channels: the noisy output and the upscaled input). Never edited; `imagic_steps.upscale` runs it.
SUPER_RESOLUTION_PIPELINE = "IFSuperResolutionPipeline"
SUPER_RESOLUTION_PIPELINES = (SUPER_RESOLUTION_PIPELINE, "IFImg2ImgSuperResolutionPipeline",
                              "IFInpaintingSuperResolutionPipeline")
# The families (`family_name`) the LEDITS++ baseline runs on: diffusers has LEditsPPPipelineStableDiffusion(XL) and
# no LEDITS++ pipeline for DeepFloyd IF (`imagic_steps.families`' `ledits_pipeline` hook refuses it).
LEDITS_FAMILIES = ("sd", "sdxl")


def read_model_index(model_folder: str | Path) -> dict:
    """A diffusers folder's model_index.json, or {} when it has none (or an unreadable one)."""
    try:
        return json.loads((Path(model_folder) / "model_index.json").read_text())
    except (OSError, ValueError):
        return {}


def listed(entry) -> bool:
    """Whether a model_index.json entry names a component (`["diffusers", "AutoencoderKL"]`), not `[null, null]`."""
    return entry is not None and not (isinstance(entry, list) and all(item is None for item in entry))


def family_name(index: dict, model: str = "this model") -> str:
    """`sdxl` (its pipeline class or a `text_encoder_2`), `if` (its pipeline class or a T5 text encoder) or `sd`
    (anything else, a missing index included: loading then says what is missing). An IF super-resolution stage is
    no model to edit: PlanError naming `model`."""
    pipeline = index.get("_class_name")
    if pipeline in SUPER_RESOLUTION_PIPELINES:
        raise PlanError(f"model '{model}' is a DeepFloyd IF super-resolution stage ({pipeline}), not a model to "
                        "edit; edit with a stage I model (e.g. DeepFloyd/IF-I-M-v1.0, tiny-if) and give this one "
                        "to `edit --upscale`")
    if pipeline == SDXL_PIPELINE or listed(index.get("text_encoder_2")):
        return "sdxl"
    if pipeline == IF_PIPELINE or (index.get("text_encoder") or [None, None])[-1] == "T5EncoderModel":
        return "if"
    return "sd"
