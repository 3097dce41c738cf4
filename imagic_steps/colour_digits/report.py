"""Text-to-image accuracy of the coloured-digits models, printed as Markdown.

    python -m imagic_steps.colour_digits.report              # every shipped model, 4 seeds per caption: the summary
    python -m imagic_steps.colour_digits.report --models latent pixel --seeds 8 --per-class   # and per class
    python -m imagic_steps.colour_digits.report --figures results-colour-digits   # and each model's samples

The models are the 2 x 2 of space (latent, pixel) x text encoder (SD's CLIP, the domain T5) and the second training
seeds registered so far, labelled as in config/analysis.yaml (`latent`, `pixel`, `latent_t5`, `pixel_clip`, and
`_seed1` for a second seed: locations.COLOUR_DIGITS_MODELS). For every (colour, digit) caption, the canonical "a red
three", a model samples one image per seed (DDIM 20 steps at guidance 3, the digits domain's recommended sampling, and at guidance
1, no classifier-free guidance); the scorer (`scorer.py`) reads each sample's digit (the digits classifier on the
ink) and its colour (nearest palette colour). The summary has one row per model and guidance: how many samples show
the requested digit, colour and both, for the 40 captions the models were trained on and the 10 held-out
combinations (`data.HELD_OUT_COMBINATIONS`: "a green zero" ...) that no model saw, which measure whether a model
composes a colour and a digit it has only seen apart. `--per-class` adds the tables per digit (over the five colours
and the seeds) and per colour (over the ten digits and the seeds). The classifier and colour reader never saw a
generated image. With `--figures DIR`, each model's first two seeds per caption are drawn into
DIR/<label>_guidance<g>_text_to_image.png (rows: digits, the held-out colour named; columns: colours x seeds).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from torch import nn

from ..components import SDComponents
from ..diffusion import encode_prompts
from ..drawing import save_grid
from ..images import tensor_to_pil
from ..locations import COLOUR_DIGITS_MODELS
from ..model_loading import load_components
from ..sample import sample_alphas
from ..digits.classifier import digit_probabilities, load_digit_classifier
from ..digits.report import SAMPLE
from ..variants import SampleParams
from .data import COLOURS, HELD_OUT_COMBINATIONS, caption, ink_image, is_held_out_combination
from .scorer import predicted_colours

# label (config/analysis.yaml's) -> preset: "colour-digits-latent-t5-seed1" is latent_t5_seed1
MODELS = {preset.removeprefix("colour-digits-").replace("-", "_"): preset for preset in COLOUR_DIGITS_MODELS}
REPORT_SEEDS = tuple(range(4))  # the seeds tests/test_colour_digits_models.py samples
# the digits domain's guidance, and none: the pixel model's best (guidance 3 overshoots on it)
REPORT_GUIDANCES = (SAMPLE.guidance_scale, 1.0)


@torch.no_grad()
def text_to_image_scores(components: SDComponents, classifier: nn.Sequential, seeds: Sequence[int],
                         params: SampleParams = SAMPLE) -> pd.DataFrame:
    """One row per (colour, digit, seed): the requested colour and digit, whether that caption is a held-out
    combination (never trained on), what the scorer reads in the sample of the canonical caption, and whether
    each matches, and the sample itself (a 32 px PIL image, column "sample")."""
    rows = []
    for colour in COLOURS:
        for digit in range(10):
            embedding = encode_prompts(components, [caption(colour, digit)])
            images = tensor_to_pil(sample_alphas(components, components.unet, embedding, embedding, [0.0], seeds,
                                                 params, progress=False)[:, 0])
            digits = digit_probabilities(classifier, [ink_image(image) for image in images]).argmax(1)
            colours = predicted_colours(images)
            for seed, image, read_digit, read_colour in zip(seeds, images, digits, colours):
                rows.append({"colour": colour, "digit": digit, "seed": seed,
                             "held_out_caption": is_held_out_combination(digit, colour),
                             "predicted_digit": int(read_digit),
                             "predicted_colour": read_colour, "digit_right": int(read_digit) == digit,
                             "colour_right": read_colour == colour, "sample": image})
    table = pd.DataFrame(rows)
    table["both_right"] = table["digit_right"] & table["colour_right"]
    return table


def accuracy_by(scores: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per value of `by` ("digit" or "colour") and overall: n samples and the fraction with the requested
    digit, colour and both."""
    columns = ["digit_right", "colour_right", "both_right"]
    groups = scores.groupby(by, sort=by == "digit")  # digits in order, colours in palette order
    table = groups[columns].mean()
    table.insert(0, "n", groups.size())
    table.loc["all"] = [len(scores), *scores[columns].mean()]
    table["n"] = table["n"].astype(int)
    return table.rename(columns=lambda c: c.replace("_right", "_accuracy")).reset_index()


def caption_parts(scores: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """`scores`' rows of trained captions and of held-out ones, keyed "trained" and "held-out"."""
    return {"trained": scores[~scores["held_out_caption"]], "held-out": scores[scores["held_out_caption"]]}


def save_sample_grid(scores: pd.DataFrame, path: str | Path, seeds: int = 2, cell: int = 48) -> None:
    """Draw `scores`' samples: one row per digit (its held-out colour in the row label), one column per colour
    and seed (the first `seeds` seeds)."""
    held_out = dict(HELD_OUT_COMBINATIONS)
    shown = sorted(scores["seed"].unique())[:seeds]
    cells = scores.set_index(["digit", "colour", "seed"])["sample"]
    rows = [[cells[(digit, colour, seed)] for colour in COLOURS for seed in shown] for digit in range(10)]
    save_grid(path, rows, cell=cell, row_label_width=96,
              column_labels=[colour if i == 0 else "" for colour in COLOURS for i in range(len(shown))],
              row_labels=[f"{digit} ({held_out[digit]} unseen)" for digit in range(10)])


def summary_row(label: str, guidance: float, scores: pd.DataFrame) -> dict:
    """One summary row: the model (label, space, text encoder, training seed), the guidance, and the fraction of
    samples with the requested digit, colour and both, over the trained and over the held-out captions."""
    space, text_encoder, seed = COLOUR_DIGITS_MODELS[MODELS[label]]
    row = {"model": label, "space": space, "text_encoder": text_encoder, "training_seed": seed, "guidance": guidance}
    for captions, part in caption_parts(scores).items():
        for what in ("digit", "colour", "both"):
            row[f"{captions} {what}"] = part[f"{what}_right"].mean()
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imagic_steps.colour_digits.report",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS), metavar="LABEL",
                        help=f"models to report (default all: {', '.join(MODELS)})")
    parser.add_argument("--seeds", type=int, default=len(REPORT_SEEDS), help="seeds per caption")
    parser.add_argument("--guidance", type=float, nargs="+", default=list(REPORT_GUIDANCES),
                        help="classifier-free guidance scales to sample at")
    parser.add_argument("--per-class", action="store_true", help="also print the tables per digit and per colour")
    parser.add_argument("--figures", help="folder to draw each model's samples into "
                                          "(<label>_guidance<g>_text_to_image.png)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    classifier = load_digit_classifier()
    summary = []
    for label in args.models:
        components = load_components(MODELS[label])
        for guidance in args.guidance:
            params = replace(SAMPLE, guidance_scale=guidance)
            scores = text_to_image_scores(components, classifier, range(args.seeds), params)
            summary.append(summary_row(label, guidance, scores))
            if args.figures:
                save_sample_grid(scores, Path(args.figures) / f"{label}_guidance{guidance:g}_text_to_image.png")
            if not args.per_class:
                continue
            for captions, part in caption_parts(scores).items():
                for by in ("digit", "colour"):
                    print(f"\n{label} ({MODELS[label]}), {captions} captions, text-to-image per {by}, {args.seeds} "
                          f"seeds per caption, DDIM {params.steps} steps, guidance {guidance:g}:")
                    print(accuracy_by(part, by).to_markdown(index=False, floatfmt=".3f"))
    print(f"\nText-to-image accuracy, {args.seeds} seeds per caption, DDIM {SAMPLE.steps} steps (trained: the 40 "
          "trained captions; held-out: the 10 combinations no model saw):")
    print(pd.DataFrame(summary).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
