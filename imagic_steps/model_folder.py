"""A diffusers model folder: what its model_index.json says (which components it lists, which model family it is),
the components and safetensors weight files it must have, and where a model reference's folder is on this machine.

The one home of the pipeline class names the package knows. Import-light (no torch): planning, the memory estimate
and the weights' digests read folders before any model loads (weights only through their safetensors headers);
`imagic_steps.families` turns the family name into the family's hooks.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from .errors import PlanError
from .locations import preset_folder

FAMILY_NAMES = ("sd", "sdxl", "if")  # imagic_steps.families' `name`s
SD_PIPELINE = "StableDiffusionPipeline"
SDXL_PIPELINE = "StableDiffusionXLPipeline"
IF_PIPELINE = "IFPipeline"
# The text encoders a Stable Diffusion or IF stage I folder may hold (`families.TEXT_ENCODERS`): each family's own
# (SD: CLIP, IF: T5) or the other's, as the coloured-digits models that swap them (colour_digits/train.py).
CLIP_ENCODER = "CLIPTextModel"
T5_ENCODER = "T5EncoderModel"
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
    """`sdxl` (its pipeline class or a `text_encoder_2`), `if` (its pipeline class, or a T5 text encoder in a folder
    that names no Stable Diffusion pipeline) or `sd` (anything else, a missing index included: loading then says
    what is missing). The pipeline class wins over the text encoder's: a StableDiffusionPipeline folder with a T5
    encoder is a latent model conditioned on T5 (`text_encoder_class`). An IF super-resolution stage is no model to
    edit: PlanError naming `model`."""
    pipeline = index.get("_class_name")
    if pipeline in SUPER_RESOLUTION_PIPELINES:
        raise PlanError(f"model '{model}' is a DeepFloyd IF super-resolution stage ({pipeline}), not a model to "
                        "edit; edit with a stage I model (e.g. DeepFloyd/IF-I-M-v1.0, tiny-if) and give this one "
                        "to `edit --upscale`")
    if pipeline == SDXL_PIPELINE or listed(index.get("text_encoder_2")):
        return "sdxl"
    if pipeline == IF_PIPELINE or (pipeline != SD_PIPELINE and index_text_encoder(index) == T5_ENCODER):
        return "if"
    return "sd"


# each family's own text encoder; a folder may hold the other family's (the coloured-digits 2 x 2)
FAMILY_TEXT_ENCODERS = {"sd": CLIP_ENCODER, "sdxl": CLIP_ENCODER, "if": T5_ENCODER}


def holds_own_text_encoder(index: dict, model: str = "this model") -> bool:
    """Whether a folder's text encoder is its family's own (`FAMILY_TEXT_ENCODERS`); an unlisted one is taken to be."""
    encoder = index_text_encoder(index)
    return encoder is None or encoder == FAMILY_TEXT_ENCODERS[family_name(index, model)]


def index_text_encoder(index: dict) -> str | None:
    """The text encoder's class name a model_index.json lists (`CLIPTextModel`, `T5EncoderModel`), else None."""
    return (index.get("text_encoder") or [None, None])[-1]


# --------------------------------------------------------------------------------------------------
# Components and their weight files
# --------------------------------------------------------------------------------------------------

WEIGHT_FILE_STEMS = ("diffusion_pytorch_model", "model")


def safetensors_shapes(path: str | Path) -> dict[str, list[int]]:
    """Tensor name -> shape, read from a safetensors file's JSON header only (no weights are read)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > Path(path).stat().st_size - 8:  # a corrupt length must not become a huge read
            raise ValueError(f"{path}: safetensors header length {length} exceeds the file")
        header = json.loads(handle.read(length))
    header.pop("__metadata__", None)
    return {name: entry["shape"] for name, entry in header.items()}


def component_weight_files(folder: Path) -> list[Path]:
    """The safetensors file(s) of one component folder (single or sharded; full precision preferred)."""
    for stem in WEIGHT_FILE_STEMS:
        for variant in ("", ".fp16"):
            single = folder / f"{stem}{variant}.safetensors"
            if single.exists():
                return [single]
            index = folder / f"{stem}{variant}.safetensors.index.json"
            if index.exists():
                return sorted({folder / name for name in json.loads(index.read_text())["weight_map"].values()})
    return []


MODEL_COMPONENTS = ("tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "vae", "unet", "scheduler")
ALWAYS_REQUIRED = ("tokenizer", "text_encoder", "unet", "scheduler")
WEIGHTED_COMPONENTS = ("text_encoder", "text_encoder_2", "vae", "unet")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def required_components(index: dict) -> tuple[str, ...]:
    """The components a folder must have: those of MODEL_COMPONENTS its model_index.json lists, and always the
    tokenizer, text encoder, UNet and scheduler. Without a model_index.json: Stable Diffusion's (with a VAE).
    Components the package never loads (IF's safety checker, feature extractor, watermarker) are not required."""
    if not index:
        return ("tokenizer", "text_encoder", "vae", "unet", "scheduler")
    return tuple(c for c in MODEL_COMPONENTS if c in ALWAYS_REQUIRED or listed(index.get(c)))


def model_folder_problem(model_folder: str | Path) -> str | None:
    """What keeps a local diffusers folder from loading, as one line, or None: the layout (model_index.json, each
    component's folder and config), safetensors weights (pickle-only weights are refused unread: loading them
    would run code) and readable safetensors headers."""
    folder = Path(model_folder)
    name = f"model folder '{model_folder}'"
    fix = "point model.id at a diffusers folder (`hf download ID --local-dir DIR` writes one)"
    if not (folder / "model_index.json").is_file():
        return f"{name} (model_index.json): not found; {fix}"
    required = required_components(read_model_index(folder))
    for component in required:
        if not (folder / component).is_dir():
            return f"{name} ({component}/): not found; {fix}"
    for component in (c for c in required if c in WEIGHTED_COMPONENTS):
        if not (folder / component / "config.json").is_file():
            return f"{name} ({component}/config.json): not found; {fix}"
        files = component_weight_files(folder / component)
        if not files:
            pickled = sorted(p.name for p in (folder / component).iterdir() if p.suffix in PICKLE_SUFFIXES)
            what = f"only pickle weights ({', '.join(pickled)}), which are never loaded" if pickled else "no weights"
            return (f"{name} ({component}): {what}; convert them to safetensors (e.g. load and `save_pretrained("
                    "..., safe_serialization=True)` on a trusted machine)")
        for path in files:
            try:
                safetensors_shapes(path)
            except (OSError, ValueError, OverflowError, MemoryError, struct.error, KeyError, TypeError):
                return (f"{name} ({path.relative_to(folder)}): not a readable safetensors file (corrupt or truncated "
                        "header); download or convert it again")
    return None


def local_model_folder(model: str, revision: str | None = None) -> Path | None:
    """The folder holding `model`'s files on this machine (preset, local folder or hub cache), else None.

    Never downloads: a hub model that is not in the cache yet gives None.
    """
    folder = preset_folder(model)
    if folder is not None:
        return folder if folder.exists() else None
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, revision=revision, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
