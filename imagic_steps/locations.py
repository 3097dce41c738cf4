"""Where the offline presets live. Import-light (no torch), so the workflow can plan without loading models."""

from __future__ import annotations

import os
from pathlib import Path

TINY_PRESET = "tiny"
DIGITS_PRESET = "digits"  # shipped in presets/digits/; retrain with `python -m imagic_steps.toy.train`
TINY_VERSION = "tiny-sd-v1"  # bump when the tiny configs change, so stale caches are not reused


def cache_dir() -> Path:
    """Where presets are materialised (`IMAGIC_STEPS_CACHE`, default `~/.cache/imagic_steps`)."""
    return Path(os.environ.get("IMAGIC_STEPS_CACHE", Path.home() / ".cache" / "imagic_steps"))


def preset_folder(model: str) -> Path | None:
    """The diffusers folder of a preset (the tiny one may not be built yet), or None if `model` is no preset."""
    if model == TINY_PRESET:
        return cache_dir() / TINY_VERSION
    if model == DIGITS_PRESET:
        return Path(__file__).resolve().parent / "presets" / DIGITS_PRESET
    return None
