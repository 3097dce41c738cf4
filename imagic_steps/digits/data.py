"""Scikit-learn's handwritten digits as a tiny text-to-image data set: 32x32 RGB images with captions.

`sklearn.datasets.load_digits` ships 1,797 greyscale 8x8 digits (ink 0..16) inside the package, so
nothing is downloaded. Images are drawn **white on black**, as in the source array: the background is
exactly -1 and full ink +1, the grey value replicated to three channels so the images go through Stable
Diffusion's RGB VAE unchanged. They are upsampled bicubically from 8x8 to the requested side.

The train / held-out split is stratified by label and fixed by `SPLIT_SEED`; the diffusion model and the
classifier both train on the same training part, so the held-out digits (the demo inputs among them)
are unseen by both.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..images import tensor_to_pil

IMAGE_SIZE = 32  # pixels: the digits model's native resolution (8x8 latents, 4x VAE down-sampling)
DEMO_SIZE = 64  # pixels: demo files are at least imagic_steps.images.MIN_SIDE wide, so open_rgb accepts them
SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.2
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# The first template is the canonical caption; training draws all of them so the UNet finds the number
# word wherever it stands rather than at one token position.
CAPTION_TEMPLATES = ("a handwritten digit {}", "a handwritten {}", "the number {}")


@dataclass(frozen=True)
class DigitsSplit:
    """Indices into the 1,797 digits of `load_digits`, each part sorted."""

    train: np.ndarray  # (N_train,) int64
    held_out: np.ndarray  # (N_held_out,) int64


@lru_cache(maxsize=1)
def raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 8x8 digits as ink in [0, 1] (1797, 8, 8) float32 and their labels (1797,) int64."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def split_indices(seed: int = SPLIT_SEED, held_out_fraction: float = HELD_OUT_FRACTION) -> DigitsSplit:
    """A label-stratified split: `held_out_fraction` of each digit (rounded) is held out, chosen by `seed`."""
    _, labels = raw_digits()
    rng = np.random.default_rng(seed)
    train, held_out = [], []
    for label in range(10):
        members = rng.permutation(np.flatnonzero(labels == label))
        cut = int(round(held_out_fraction * len(members)))
        held_out.append(members[:cut])
        train.append(members[cut:])
    return DigitsSplit(np.sort(np.concatenate(train)), np.sort(np.concatenate(held_out)))


def split_record(seed: int = SPLIT_SEED, held_out_fraction: float = HELD_OUT_FRACTION) -> dict:
    """What a training record says about its data: the split's seed and fraction, the counts (overall and per
    digit) and a sha256 of the held-out indices, so a record can be checked against the code that made it."""
    split = split_indices(seed, held_out_fraction)
    _, labels = raw_digits()
    return {
        "seed": seed,
        "held_out_fraction": held_out_fraction,
        "train": len(split.train),
        "held_out": len(split.held_out),
        "held_out_per_digit": np.bincount(labels[split.held_out], minlength=10).tolist(),
        "held_out_sha256": hashlib.sha256(split.held_out.astype("<i8").tobytes()).hexdigest(),
    }


def digit_tensors(indices: np.ndarray | list[int], size: int = IMAGE_SIZE) -> torch.Tensor:
    """Images (N, 3, size, size) in [-1, 1], white on black, of the digits at `indices`."""
    ink, _ = raw_digits()
    small = torch.from_numpy(ink[np.asarray(indices)]).unsqueeze(1)  # (N, 1, 8, 8)
    # Bicubic overshoots a little at stroke edges; clamping keeps the background exactly black.
    large = F.interpolate(small, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    return (large * 2 - 1).expand(-1, 3, -1, -1).contiguous()


def load_split(part: str, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) in [-1, 1] and labels (N,) int64 of the `train` or `held_out` part."""
    if part not in ("train", "held_out"):
        raise ValueError(f"part must be 'train' or 'held_out', got {part!r}")
    indices = getattr(split_indices(seed), part)
    _, labels = raw_digits()
    return digit_tensors(indices), torch.from_numpy(labels[indices])


def caption(label: int, template: int = 0) -> str:
    """The caption of digit `label` (0-9), e.g. "a handwritten digit three" for the canonical template 0."""
    if not 0 <= label <= 9:
        raise ValueError(f"digit label must be 0-9, got {label}")
    return CAPTION_TEMPLATES[template].format(NUMBER_WORDS[label])


def digit_image(index: int, size: int = DEMO_SIZE) -> Image.Image:
    """The digit at dataset `index` as a size x size RGB image (white on black), e.g. to write to disk."""
    return tensor_to_pil(digit_tensors([index], size))[0]


def demo_index(label: int, which: int = 0) -> int:
    """The dataset index of the `which`-th held-out example of digit `label` (in dataset order)."""
    _, labels = raw_digits()
    held_out = split_indices().held_out
    examples = held_out[labels[held_out] == label]
    if not 0 <= which < len(examples):
        raise ValueError(f"digit {label} has {len(examples)} held-out examples; `which` = {which} is out of range")
    return int(examples[which])


def demo_digit(label: int, which: int = 0, size: int = DEMO_SIZE) -> Image.Image:
    """The `which`-th held-out example of digit `label` as a size x size RGB image. The shipped demo inputs
    (config/images/digits/{3,1,0}.png) are `demo_digit(label)`, i.e. `which` = 0."""
    return digit_image(demo_index(label, which), size)


def label_from_prompt(prompt: str) -> int:
    """The digit a caption asks for: the last number word or digit in it ("a handwritten digit eight" -> 8)."""
    found = [NUMBER_WORDS.index(word) if word in NUMBER_WORDS else int(word)
             for word in re.findall(r"[a-z]+|\d", prompt.lower()) if word in NUMBER_WORDS or word.isdigit()]
    if not found:
        raise ValueError(f"prompt {prompt!r} names no digit; write e.g. 'a handwritten digit eight'")
    return found[-1]
