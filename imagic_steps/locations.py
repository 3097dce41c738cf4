"""Where the offline presets live. Import-light (no torch), so the workflow can plan without loading models."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TINY_PRESET = "tiny"
DIGITS_PRESET = "digits"  # shipped in presets/digits/; retrain with `python -m imagic_steps.digits.train`
SD15_SHAPED_PRESET = "sd15-shaped"
SD21_SHAPED_PRESET = "sd21-shaped"
TINY_SDXL_PRESET = "tiny-sdxl"  # SDXL's layout (two text encoders, text-time UNet) at tiny sizes
TINY_IF_PRESET = "tiny-if"  # DeepFloyd IF stage I's layout (T5 encoder, pixel-space UNet, learned variance)
TINY_IF_SR_PRESET = "tiny-if-sr"  # DeepFloyd IF stage II's layout (64 -> 256 px super-resolution; `upscale` only)
# the coloured-digits pair, one latent and one pixel-space model trained on the same data, for comparing attribute
# and structure edits across the two spaces (imagic_steps/colour_digits/README.md; `python -m
# imagic_steps.colour_digits.train`)
COLOUR_DIGITS_LATENT_PRESET = "colour-digits-latent"
COLOUR_DIGITS_PIXEL_PRESET = "colour-digits-pixel"
# issue 38's 2 x 2 of space x text encoder (each space on the other's text encoder) and second training seeds:
# preset name -> (space, text encoder, training seed); the two above are the spaces' own encoders at seed 0. The
# pixel models have no second seed yet (colour_digits/README.md gives their training commands)
COLOUR_DIGITS_MODELS = {
    COLOUR_DIGITS_LATENT_PRESET: ("latent", "clip", 0),
    COLOUR_DIGITS_PIXEL_PRESET: ("pixel", "t5", 0),
    "colour-digits-latent-t5": ("latent", "t5", 0),
    "colour-digits-pixel-clip": ("pixel", "clip", 0),
    "colour-digits-latent-seed1": ("latent", "clip", 1),
    "colour-digits-latent-t5-seed1": ("latent", "t5", 1),
}
TINY_VERSION = "tiny-sd-v2"  # bump when the tiny configs change, so stale caches are not reused
SHIPPED_PRESETS = Path(__file__).resolve().parent / "presets"
# the digits scorer's weights (`python -m imagic_steps.digits.classifier` retrains them)
DIGITS_CLASSIFIER_FOLDER = SHIPPED_PRESETS / "digits_classifier"


@dataclass(frozen=True)
class ModelPreset:
    """An offline model preset.

    `folder`: the name of its diffusers folder, under `cache_dir()` where it is built on first use
    (`imagic_steps.preset_recipes.ensure_preset`), or under the package's presets/ when `shipped`; the built ones
    carry a version, bumped when their configs change, so stale caches are not reused. `random_weights`: seeded
    random initialisation, never trained, so what the preset produces checks the mechanics and means nothing about
    quality. `architecture`: the published model whose exact architecture it has (`sd15`, `sd21`), if any.
    """

    name: str
    folder: str
    random_weights: bool
    shipped: bool = False
    architecture: str | None = None
    family: str | None = "sd"  # imagic_steps.families' name; None: no model to edit (IF stage II)


# the built presets' folders are v2: scheduler configs written with exactly their published models' keys (tiny-sdxl:
# SDXL's clip_sample false; tiny-if: lambda_min_clipped), not every parameter of the class
MODEL_PRESETS: dict[str, ModelPreset] = {preset.name: preset for preset in (
    ModelPreset(TINY_PRESET, TINY_VERSION, random_weights=True),
    ModelPreset(TINY_SDXL_PRESET, "tiny-sdxl-v2", random_weights=True, family="sdxl"),
    ModelPreset(TINY_IF_PRESET, "tiny-if-v2", random_weights=True, family="if"),
    ModelPreset(TINY_IF_SR_PRESET, "tiny-if-sr-v2", random_weights=True, family=None),
    ModelPreset(DIGITS_PRESET, DIGITS_PRESET, random_weights=False, shipped=True),
    *(ModelPreset(name, name.replace("-", "_"), random_weights=False, shipped=True,
                  family="sd" if space == "latent" else "if")
      for name, (space, _, _) in COLOUR_DIGITS_MODELS.items()),
    ModelPreset(SD15_SHAPED_PRESET, "sd15-shaped-v2", random_weights=True, architecture="sd15"),
    ModelPreset(SD21_SHAPED_PRESET, "sd21-shaped-v2", random_weights=True, architecture="sd21"),
)}


def cache_dir() -> Path:
    """Where presets are materialised (`IMAGIC_STEPS_CACHE`, default `~/.cache/imagic_steps`)."""
    return Path(os.environ.get("IMAGIC_STEPS_CACHE", Path.home() / ".cache" / "imagic_steps"))


def preset_folder(model: str) -> Path | None:
    """The diffusers folder of a preset (a built one may not be built yet), or None if `model` is no preset."""
    preset = MODEL_PRESETS.get(model)
    if preset is None:
        return None
    if preset.shipped:
        return SHIPPED_PRESETS / preset.folder
    return cache_dir() / preset.folder


def is_random_preset(model: str) -> bool:
    """Whether `model` names a preset with random weights: whatever it produces must be labelled as such."""
    preset = MODEL_PRESETS.get(model)
    return preset is not None and preset.random_weights
