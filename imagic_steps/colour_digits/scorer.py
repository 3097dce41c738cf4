"""Scores of coloured-digit edits: which digit (the digits classifier, on the ink), which colour (a
training-free palette estimate), and how far the shape moved (the digits identity distance, on the ink).

Digit: the shipped greyscale classifier (`imagic_steps.digits.classifier`) reads the sample's **ink**,
max(R, G, B) per pixel (`data.ink_image`), not its luminance: for every palette colour the ink is the
white-on-black digit the colour was applied to, while a blue stroke's luminance is 0.114 of white's.

Colour (`colour_estimates`, `colour_probabilities`): the image is resized to 32 px as the classifier's input
is (`resize_center_crop`), the pixels whose ink is above INK_THRESHOLD are kept, and the stroke colour is

    c = sum(rgb) / sum(ink)      over the kept pixels, rgb and ink in [0, 1]

i.e. the ink-weighted mean of each pixel's chroma rgb / ink; for a palette rendering rgb = ink * colour, so c
is the palette colour exactly (to uint8 rounding). The predicted colour is the palette colour nearest to c
(Euclidean, RGB in [0, 1]; palette colours are 1 or sqrt(2) apart), and the soft probability over the
palette is softmax(-|c - p|^2 / COLOUR_TEMPERATURE): exactly on a palette colour it gives that colour
1 - 4e-9 or more, and halfway between two colours 0.5 each. An image with no pixel above the threshold has
no colour: predicted colour NO_INK, uniform probabilities, NaN estimate. The estimate is a mean: a sample
drawn in two colours reads as their ink-weighted mix, and `palette_distance` says how far that is from the
palette.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

from ..digits.classifier import (SCORER_NAME as DIGITS_SCORER_NAME, digit_probabilities, digit_scores,
                                load_digit_classifier)
from ..digits.data import IMAGE_SIZE
from ..images import check_same_length, resize_center_crop
from .data import COLOURS, PALETTE_RGB, colour_index, ink_image, parse_prompt

SCORER_NAME = f"colour-digits({DIGITS_SCORER_NAME} on ink + palette colour)"
INK_THRESHOLD = 0.25  # ink in [0, 1] above which a pixel counts as stroke for the colour estimate
COLOUR_TEMPERATURE = 0.05  # squared RGB distance scale of the palette softmax
NO_INK = "none"  # the predicted colour of an image with no stroke pixel

SCORE_COLUMNS = [
    "edit_kind", "input_colour", "input_digit", "target_colour", "target_digit",
    "target_digit_prob", "predicted_digit", "input_digit_prob", "digit_kept",
    "target_colour_prob", "predicted_colour", "input_colour_prob", "colour_kept", "palette_distance",
    "identity_distance", "pixel_fidelity", "ssim", "scorer",
]


def _rgb_arrays(images: Sequence[Image.Image]) -> np.ndarray:
    """(N, 32, 32, 3) float64 in [0, 1]: each image resized as `grey_tensor` resizes the classifier's input."""
    return np.stack([np.asarray(resize_center_crop(image.convert("RGB"), IMAGE_SIZE), dtype=np.float64)
                     for image in images]) / 255.0


def colour_estimates(images: Sequence[Image.Image]) -> np.ndarray:
    """Stroke colour (N, 3) in [0, 1] of each image: sum(rgb) / sum(ink) over pixels with ink > INK_THRESHOLD;
    a row of NaN where no pixel is."""
    rgb = _rgb_arrays(images)
    ink = rgb.max(axis=3)
    stroke = ink > INK_THRESHOLD
    ink_sum = (ink * stroke).sum(axis=(1, 2))
    rgb_sum = (rgb * stroke[..., None]).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ink_sum[:, None] > 0, rgb_sum / ink_sum[:, None], np.nan)


def palette_distances(estimates: np.ndarray) -> np.ndarray:
    """Euclidean distances (N, 5) of colour estimates (N, 3) to the palette colours, in palette order."""
    return np.linalg.norm(estimates[:, None, :] - PALETTE_RGB.double().numpy()[None], axis=2)


def colour_probabilities(images: Sequence[Image.Image]) -> np.ndarray:
    """Soft probabilities (N, 5) over the palette (palette order): softmax(-distance^2 / COLOUR_TEMPERATURE);
    uniform for an image without stroke pixels."""
    distances = palette_distances(colour_estimates(images))
    logits = torch.from_numpy(np.nan_to_num(-distances ** 2 / COLOUR_TEMPERATURE, nan=0.0))
    return torch.softmax(logits, dim=1).numpy()


def predicted_colours(images: Sequence[Image.Image]) -> list[str]:
    """The palette colour nearest to each image's stroke colour, NO_INK where it has none."""
    distances = palette_distances(colour_estimates(images))
    return [NO_INK if np.isnan(row).all() else COLOURS[int(np.argmin(row))] for row in distances]


def _edit_kind(input_colour: str, input_digit: int, target_colour: str, target_digit: int) -> str:
    same_colour, same_digit = input_colour == target_colour, input_digit == target_digit
    return {(False, True): "attribute", (True, False): "structure", (False, False): "both",
            (True, True): "none"}[(same_colour, same_digit)]


@torch.no_grad()
def colour_digit_scores(classifier: nn.Sequential, samples: Sequence[Image.Image], inputs: Sequence[Image.Image],
                        target_prompts: Sequence[str], source_prompts: Sequence[str | None] | None = None
                        ) -> pd.DataFrame:
    """One row per sample, compared with its input image and its target prompt ("a blue three").

    The input's colour and digit are its source prompt's; where that is None (or `source_prompts` is), they
    are what this scorer reads from the input image (its colour estimate and the classifier's digit).

    Columns:
      edit_kind           what the target asks of the input: "attribute" (colour changes, digit stays),
                          "structure" (digit changes, colour stays), "both" or "none"
      input_colour, input_digit, target_colour, target_digit   the two prompts' (or the input's) colour and digit
      target_digit_prob   classifier probability of the target digit, on the sample's ink, in [0, 1]
      predicted_digit     the classifier's most probable digit
      input_digit_prob    classifier probability of the input's digit
      digit_kept          predicted_digit == input_digit
      target_colour_prob  palette probability of the target colour, in [0, 1]
      predicted_colour    the palette colour nearest the sample's stroke colour ("none" without stroke pixels)
      input_colour_prob   palette probability of the input's colour
      colour_kept         predicted_colour == input_colour
      palette_distance    RGB distance (in [0, 1] units) of the stroke colour to the nearest palette colour;
                          0 = a palette colour, NaN without stroke pixels
      identity_distance   digits identity distance of sample and input inks, in [0, 1]; 0 = identical
                          (digits calibration.json levels apply: the inks are white-on-black digits)
      pixel_fidelity      1 - RMSE of the inks (greyscale 32x32 in [0, 1]); colour does not count
      ssim                structural similarity of the inks, in [-1, 1]
      scorer              SCORER_NAME
    """
    if source_prompts is None:
        source_prompts = [None] * len(samples)
    check_same_length(samples=samples, inputs=inputs, target_prompts=target_prompts, source_prompts=source_prompts)
    targets = [parse_prompt(prompt) for prompt in target_prompts]
    sample_inks, input_inks = [ink_image(image) for image in samples], [ink_image(image) for image in inputs]
    read_colours = predicted_colours(inputs)
    read_digits = digit_probabilities(classifier, input_inks).argmax(axis=1)
    sources = [parse_prompt(prompt) if prompt else (read_colours[i], int(read_digits[i]))
               for i, prompt in enumerate(source_prompts)]
    table = digit_scores(classifier, sample_inks, input_inks, [digit for _, digit in targets])
    digit_probs = digit_probabilities(classifier, sample_inks)
    colour_probs = colour_probabilities(samples)
    distances = palette_distances(colour_estimates(samples))
    sample_colours = predicted_colours(samples)
    rows = []
    for i, ((target_colour, target_digit), (input_colour, input_digit)) in enumerate(zip(targets, sources)):
        rows.append({
            "edit_kind": _edit_kind(input_colour, input_digit, target_colour, target_digit),
            "input_colour": input_colour, "input_digit": input_digit,
            "target_colour": target_colour, "target_digit": target_digit,
            "target_digit_prob": float(table["target_prob"][i]),
            "predicted_digit": int(table["predicted"][i]),
            "input_digit_prob": float(digit_probs[i, input_digit]),
            "digit_kept": bool(table["predicted"][i] == input_digit),
            "target_colour_prob": float(colour_probs[i, colour_index(target_colour)]),
            "predicted_colour": sample_colours[i],
            # an input read as colourless has no colour probability to keep
            "input_colour_prob": float(colour_probs[i, colour_index(input_colour)]) if input_colour != NO_INK
            else float("nan"),
            "colour_kept": sample_colours[i] == input_colour,
            "palette_distance": float(np.min(distances[i])),
            "identity_distance": float(table["identity_distance"][i]),
            "pixel_fidelity": float(table["pixel_fidelity"][i]),
            "ssim": float(table["ssim"][i]),
            "scorer": SCORER_NAME,
        })
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def colour_digit_evaluation_scores(samples: Sequence[Image.Image], inputs: Sequence[Image.Image], prompt: str,
                                   source_prompt: str | None) -> pd.DataFrame:
    """`colour_digit_scores` for one pair plus the evaluation's columns (`imagic_steps.score`), so trade-off plots
    and the best-setting rule work on this domain:

      target_attribute_prob     what the edit asks for: P(target colour) for an attribute edit, P(target digit)
                                for a structure edit (both: their product, as independent reads; none: the same)
      preserved_attribute_prob  what the edit must keep: P(input digit) for an attribute edit, P(input colour)
                                for a structure edit; NaN for both / none (nothing is to be kept)
      text_alignment            100 * target_attribute_prob
      preserved                 100 * preserved_attribute_prob
      distance                  identity_distance (of the inks: shape only)
      image_similarity          ssim (of the inks); directional_similarity NaN (no text encoder)
    """
    table = colour_digit_scores(load_digit_classifier(), samples, inputs, [prompt] * len(samples),
                                [source_prompt or None] * len(samples))
    target = {"attribute": table["target_colour_prob"], "structure": table["target_digit_prob"]}
    kept = {"attribute": table["input_digit_prob"], "structure": table["input_colour_prob"]}
    both = table["target_colour_prob"] * table["target_digit_prob"]
    table["target_attribute_prob"] = [target[kind][i] if kind in target else both[i]
                                      for i, kind in enumerate(table["edit_kind"])]
    table["preserved_attribute_prob"] = [kept[kind][i] if kind in kept else np.nan
                                         for i, kind in enumerate(table["edit_kind"])]
    table["text_alignment"] = 100.0 * table["target_attribute_prob"]
    table["preserved"] = 100.0 * table["preserved_attribute_prob"]
    table["distance"] = table["identity_distance"]
    table["image_similarity"] = table["ssim"]
    table["directional_similarity"] = np.nan
    return table


ACCURACY_COMMAND = "python -m imagic_steps.colour_digits.scorer"


@torch.no_grad()
def held_out_accuracies(classifier: nn.Sequential, size: int = IMAGE_SIZE) -> pd.DataFrame:
    """How well the scorer reads the held-out digits rendered in every colour at `size` px (through uint8 PIL
    images, as sample files are): per colour and overall, the colour estimate's accuracy, the classifier's digit
    accuracy on the ink (what the scorer uses) and on the luminance (what `grey_tensor` alone would read), and
    the classifier's accuracy on the white-on-black originals; each a fraction of `n`."""
    from ..digits.data import digit_image, raw_digits
    from ..images import tensor_to_pil
    from .data import colour_pairs, colour_tensors

    indices, colours = colour_pairs("held_out")
    labels = raw_digits()[1][indices]
    images = tensor_to_pil(colour_tensors(indices, colours, size))
    colour_right = np.array(predicted_colours(images)) == np.array(COLOURS)[colours]
    ink_right = digit_probabilities(classifier, [ink_image(image) for image in images]).argmax(1) == labels
    luminance_right = digit_probabilities(classifier, images).argmax(1) == labels
    originals = indices[colours == 0]
    white_right = digit_probabilities(classifier, [digit_image(int(i), size) for i in originals]).argmax(1) \
        == raw_digits()[1][originals]
    rows = []
    for name, keep in [*((name, colours == c) for c, name in enumerate(COLOURS)), ("all", np.ones_like(colours, bool))]:
        rows.append({"colour": name, "n": int(keep.sum()), "colour_accuracy": colour_right[keep].mean(),
                     "digit_accuracy_ink": ink_right[keep].mean(),
                     "digit_accuracy_luminance": luminance_right[keep].mean(),
                     "digit_accuracy_white_originals": white_right.mean()})
    return pd.DataFrame(rows)


def main() -> None:
    torch.set_num_threads(1)
    classifier = load_digit_classifier()
    for size in (IMAGE_SIZE, 64):
        print(f"held-out digits in every colour at {size} px ({ACCURACY_COMMAND}):")
        print(held_out_accuracies(classifier, size).to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
