"""Text-to-image accuracy of the two coloured-digits models, per class, printed as Markdown.

    python -m imagic_steps.colour_digits.report              # both shipped models, 8 seeds per caption

For every (colour, digit) caption, the canonical "a red three", a model samples one image per seed (DDIM 20
steps, guidance 3: the digits domain's recommended sampling); the scorer (`scorer.py`) reads each sample's digit
(the digits classifier on the ink) and its colour (nearest palette colour). Tables: per digit (over the five
colours and the seeds) and per colour (over the ten digits and the seeds), how many samples show the requested
digit, the requested colour, and both. Every caption is one the models were trained on (every digit in every
colour); the seeds' noise is what is new, and the classifier and colour reader never saw a generated image.
"""

from __future__ import annotations

import argparse
from typing import Sequence

import pandas as pd
import torch
from torch import nn

from ..diffusion import encode_prompts
from ..images import tensor_to_pil
from ..locations import COLOUR_DIGITS_LATENT_PRESET, COLOUR_DIGITS_PIXEL_PRESET
from ..models import SDComponents, load_components
from ..sample import sample_alphas
from ..digits.classifier import digit_probabilities, load_digit_classifier
from ..digits.report import SAMPLE
from ..variants import SampleParams
from .data import COLOURS, caption, ink_image
from .scorer import predicted_colours

MODELS = {"latent": COLOUR_DIGITS_LATENT_PRESET, "pixel": COLOUR_DIGITS_PIXEL_PRESET}
REPORT_SEEDS = tuple(range(8))


@torch.no_grad()
def text_to_image_scores(components: SDComponents, classifier: nn.Sequential, seeds: Sequence[int],
                         params: SampleParams = SAMPLE) -> pd.DataFrame:
    """One row per (colour, digit, seed): the requested colour and digit, what the scorer reads in the sample
    of the canonical caption, and whether each matches."""
    rows = []
    for colour in COLOURS:
        for digit in range(10):
            embedding = encode_prompts(components, [caption(colour, digit)])
            images = tensor_to_pil(sample_alphas(components, components.unet, embedding, embedding, [0.0], seeds,
                                                 params, progress=False)[:, 0])
            digits = digit_probabilities(classifier, [ink_image(image) for image in images]).argmax(1)
            colours = predicted_colours(images)
            for seed, read_digit, read_colour in zip(seeds, digits, colours):
                rows.append({"colour": colour, "digit": digit, "seed": seed, "predicted_digit": int(read_digit),
                             "predicted_colour": read_colour, "digit_right": int(read_digit) == digit,
                             "colour_right": read_colour == colour})
    table = pd.DataFrame(rows)
    table["both_right"] = table["digit_right"] & table["colour_right"]
    return table


def accuracy_by(scores: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per value of `by` ("digit" or "colour") and overall: n samples and the fraction with the requested
    digit, colour and both."""
    columns = ["digit_right", "colour_right", "both_right"]
    table = scores.groupby(by, sort=False)[columns].mean()
    table.insert(0, "n", scores.groupby(by, sort=False).size())
    table.loc["all"] = [len(scores), *scores[columns].mean()]
    table["n"] = table["n"].astype(int)
    return table.rename(columns=lambda c: c.replace("_right", "_accuracy")).reset_index()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imagic_steps.colour_digits.report",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=len(REPORT_SEEDS), help="seeds per caption")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    classifier = load_digit_classifier()
    for space, preset in MODELS.items():
        scores = text_to_image_scores(load_components(preset), classifier, range(args.seeds))
        for by in ("digit", "colour"):
            print(f"\n{space} model ({preset}), text-to-image per {by}, {args.seeds} seeds per caption, DDIM "
                  f"{SAMPLE.steps} steps, guidance {SAMPLE.guidance_scale:g}:")
            print(accuracy_by(scores, by).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
