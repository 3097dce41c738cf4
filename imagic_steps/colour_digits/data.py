"""Coloured handwritten digits: the digits domain's 1,797 images with the stroke drawn in one palette colour.

Every image is a digits-domain image (`imagic_steps.digits.data.digit_tensors`: bicubic 8x8 -> 32 px, ink in
[0, 1], background exactly 0) whose ink multiplies one colour of `PALETTE`:

    rgb = ink * PALETTE[colour]        (in [0, 1]; images are stored in [-1, 1] as 2 * rgb - 1)

so the background stays exactly black (-1) and the brightest channel of every pixel is its ink: for every
palette colour max(R, G, B) = 1, hence max(rgb) = ink and `ink_tensor` / `ink_image` recover the white-on-black
digit exactly (to uint8 rounding). That is what the scorer shows the greyscale digit classifier, rather than
luminance, which would make a blue stroke (luminance 0.114) nearly invisible.

Split: the digits domain's split (`split_indices`, `SPLIT_SEED`) unchanged, so the held-out writers' images are
unseen by the greyscale classifier and by any model trained on this domain's training part.

Training colours: every training digit in every colour except the **held-out combinations**
(`HELD_OUT_COMBINATIONS`: one colour per digit, two digits per colour), so that text-to-image accuracy can be
measured on captions no model saw ("a green zero") as well as on trained ones. `training_pairs()`: 1,438 x 4 =
5,752 images. Every digit is then seen in four colours and every colour with eight digits, each with the same
writers' shapes, so colour stays independent of writer and stroke shape (not only in expectation, as a seeded
one-colour-per-image assignment would give). No draw is involved in the set itself;
`imagic_steps.colour_digits.train` draws its batches with a seeded `torch.Generator`.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from PIL import Image

from ..digits.data import (
    DEMO_SIZE,
    IMAGE_SIZE,
    NUMBER_WORDS,
    SPLIT_SEED,
    demo_index,
    digit_tensors,
    label_from_prompt,
    raw_digits,
    split_indices,
)
from ..images import tensor_to_pil

# name -> stroke colour in [0, 1] (RGB); every colour has a channel at 1, so max(R, G, B) of a pixel is its ink.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "white": (1.0, 1.0, 1.0),
}
COLOURS = tuple(PALETTE)  # palette order: colour index i is COLOURS[i]
PALETTE_RGB = torch.tensor([PALETTE[name] for name in COLOURS])  # (5, 3) in [0, 1]
# The first template is the canonical caption; like the digits domain, training may draw all of them.
CAPTION_TEMPLATES = ("a {colour} {digit}", "a handwritten {colour} {digit}", "the number {digit} in {colour}")
EXAMPLE_PROMPT = "a red three"
# Attribute edits: each colour's target colour, palette order shifted by two (a permutation: every colour is
# some colour's target exactly once; red -> blue, the README's example edit "a red three" -> "a blue three").
ATTRIBUTE_SHIFT = 2
EDIT_KINDS = ("attribute", "structure")


# (digit, colour) captions no model trains on: digit d held out in one colour, each colour for two digits.
# None of them is an analysis input or target (colour_digits/sheet.py: 3 red, 1 green, 0 blue, 5 yellow and their
# edits 3 blue, 1 yellow, 0 white, 5 red, 8 red, 7 green, 6 blue, 6 yellow), so the analysis edits towards
# trained captions only; held-out captions test composition in the text-to-image report.
HELD_OUT_COMBINATIONS = ((0, "green"), (1, "blue"), (2, "yellow"), (3, "yellow"), (4, "red"),
                         (5, "white"), (6, "red"), (7, "white"), (8, "green"), (9, "blue"))


def is_held_out_combination(label: int, colour: str | int) -> bool:
    """Whether the caption of digit `label` in `colour` is one the models never train on."""
    return (int(label), COLOURS[colour_index(colour)]) in HELD_OUT_COMBINATIONS


def colour_index(colour: str | int) -> int:
    """Palette index of a colour name (or an index, checked)."""
    if isinstance(colour, str):
        if colour not in PALETTE:
            raise ValueError(f"unknown colour {colour!r}; the palette is {', '.join(COLOURS)}")
        return COLOURS.index(colour)
    if not 0 <= colour < len(COLOURS):
        raise ValueError(f"colour index must be 0-{len(COLOURS) - 1}, got {colour}")
    return int(colour)


def colour_tensors(indices: np.ndarray | list[int], colours: np.ndarray | list[int | str] | int | str,
                   size: int = IMAGE_SIZE) -> torch.Tensor:
    """Images (N, 3, size, size) in [-1, 1] of the digits at dataset `indices`, the stroke in `colours` (one
    colour for all, or one per index; names or palette indices), on exactly black."""
    ink = (digit_tensors(indices, size)[:, :1] + 1) / 2  # (N, 1, size, size) in [0, 1]; background exactly 0
    if isinstance(colours, (str, int, np.integer)):
        colours = [colours] * len(ink)
    rows = torch.tensor([colour_index(c if isinstance(c, str) else int(c)) for c in colours], dtype=torch.long)
    if len(rows) != len(ink):
        raise ValueError(f"got {len(ink)} digit indices but {len(rows)} colours")
    return ink * PALETTE_RGB[rows][:, :, None, None] * 2 - 1


def ink_tensor(images: torch.Tensor) -> torch.Tensor:
    """Ink (N, 1, H, W) in [-1, 1] of colour images (N, 3, H, W) in [-1, 1]: the brightest channel, which for a
    palette colour is the white-on-black digit the colour was applied to."""
    return images.amax(dim=1, keepdim=True)


def ink_image(image: Image.Image) -> Image.Image:
    """The ink of an RGB image as a greyscale ("L") image of the same size: max(R, G, B) per pixel."""
    return Image.fromarray(np.asarray(image.convert("RGB")).max(axis=2))


def colour_pairs(part: str, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """(dataset index, colour index) of every image of `part` ("train" or "held_out") in every colour, each
    (N * 5,) int64, digit-major: image i in colours 0..4, then image i + 1."""
    if part not in ("train", "held_out"):
        raise ValueError(f"part must be 'train' or 'held_out', got {part!r}")
    indices = getattr(split_indices(seed), part)
    return np.repeat(indices, len(COLOURS)), np.tile(np.arange(len(COLOURS)), len(indices))


def training_pairs(seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """`colour_pairs("train")` without the held-out combinations: what both models train on, (N * 4,) each."""
    indices, colours = colour_pairs("train", seed)
    labels = raw_digits()[1][indices]
    keep = np.array([not is_held_out_combination(label, colour) for label, colour in zip(labels, colours)])
    return indices[keep], colours[keep]


def load_colour_split(part: str, seed: int = SPLIT_SEED) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (N * 5, 3, 32, 32) in [-1, 1], digit labels and colour indices (N * 5,) int64 of `part`, every
    image in every colour (`colour_pairs`)."""
    indices, colours = colour_pairs(part, seed)
    _, labels = raw_digits()
    return colour_tensors(indices, colours), torch.from_numpy(labels[indices]), torch.from_numpy(colours)


def caption(colour: str | int, label: int, template: int = 0) -> str:
    """The caption of digit `label` in `colour`, e.g. "a red three" for the canonical template 0."""
    if not 0 <= label <= 9:
        raise ValueError(f"digit label must be 0-9, got {label}")
    return CAPTION_TEMPLATES[template].format(colour=COLOURS[colour_index(colour)], digit=NUMBER_WORDS[label])


def parse_prompt(prompt: str) -> tuple[str, int]:
    """(colour name, digit) a caption asks for: "a red three" -> ("red", 3); the last colour word and the last
    number word (or digit) in it, like `digits.data.label_from_prompt`.

    Raises:
        ValueError: the prompt names no palette colour or no digit (one line, naming the prompt).
    """
    colours = [word for word in re.findall(r"[a-z]+", prompt.lower()) if word in PALETTE]
    try:
        digit = label_from_prompt(prompt)
    except ValueError:
        digit = None
    missing = [what for what, found in (("colour", colours), ("digit", digit is not None)) if not found]
    if missing:
        palette = f" (colours: {', '.join(COLOURS)})" if "colour" in missing else ""
        raise ValueError(f"prompt {prompt!r} names no {' and no '.join(missing)}{palette}; write e.g. {EXAMPLE_PROMPT!r}")
    return colours[-1], digit


def edit_input(index: int, colour: str | int, size: int = DEMO_SIZE) -> Image.Image:
    """The held-out digit at dataset `index` in `colour` as a size x size RGB image (an edit input file).

    Raises:
        ValueError: `index` is a training image (a model trained on this domain has seen it).
    """
    if index not in set(split_indices().held_out.tolist()):
        raise ValueError(f"dataset index {index} is in the training split; edit inputs are held-out digits")
    return tensor_to_pil(colour_tensors([index], colour, size))[0]


def demo_input(label: int, colour: str | int, which: int = 0, size: int = DEMO_SIZE) -> Image.Image:
    """The `which`-th held-out example of digit `label` (`digits.data.demo_index`, the digits domain's demo and
    report inputs for `which` = 0) in `colour`, as a size x size RGB image."""
    return edit_input(demo_index(label, which), colour, size)


def attribute_target_colour(colour: str | int) -> str:
    """The colour an attribute edit of a `colour` input asks for: palette order shifted by ATTRIBUTE_SHIFT
    (red -> blue, green -> yellow, blue -> white, yellow -> red, white -> green)."""
    return COLOURS[(colour_index(colour) + ATTRIBUTE_SHIFT) % len(COLOURS)]


def structure_target_digit(label: int) -> int:
    """The digit a structure edit of a `label` input asks for: the digits domain's report pairs
    (`digits.report.REPORT_PAIRS`: 3 -> 8, 1 -> 7, 0 -> 6, ...), so results compare with the greyscale domain's."""
    from ..digits.report import REPORT_PAIRS  # imported here: the report module pulls in the diffusion stack

    targets = dict(REPORT_PAIRS)
    if label not in targets:
        raise ValueError(f"digit label must be 0-9, got {label}")
    return targets[label]


def edit_prompts(colour: str | int, label: int, kind: str) -> tuple[str, str]:
    """(source prompt, target prompt) of an edit of a `colour` `label` input, canonical captions.

    kind "attribute": another colour, the same digit ("a red three" -> "a blue three"; the digit must stay);
    kind "structure": the same colour, another digit ("a red three" -> "a red eight"; the colour must stay).
    """
    if kind == "attribute":
        target = caption(attribute_target_colour(colour), label)
    elif kind == "structure":
        target = caption(colour, structure_target_digit(label))
    else:
        raise ValueError(f"edit kind must be one of {EDIT_KINDS}, got {kind!r}")
    return caption(colour, label), target


def edit_cases(which: int = 0) -> list[dict]:
    """Every edit of the held-out inputs `demo_input(label, colour, which)`: 10 digits x 5 colours x 2 kinds,
    digit-major, each {"index", "colour", "digit", "kind", "source_prompt", "target_prompt"}."""
    cases = []
    for label in range(10):
        index = demo_index(label, which)
        for colour in COLOURS:
            for kind in EDIT_KINDS:
                source, target = edit_prompts(colour, label, kind)
                cases.append({"index": index, "colour": colour, "digit": label, "kind": kind,
                              "source_prompt": source, "target_prompt": target})
    return cases
