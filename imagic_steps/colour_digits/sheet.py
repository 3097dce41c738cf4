"""Write the analysis' pairs sheets: held-out coloured digits, each edited twice (attribute and structure).

    python -m imagic_steps.colour_digits.sheet     # config/colour_digits_pairs.tsv + config/images/colour_digits/
    python -m imagic_steps.colour_digits.sheet --inputs 3:red --sheet config/colour_digits_pairs_slice.tsv
    python -m imagic_steps.colour_digits.sheet --draw   # config/colour_digits_pairs_large.tsv, ..._tuning.tsv

Each input is a held-out writer's digit (unseen by the models and the classifier) in a colour, saved as a 64 px PNG;
its two rows share the image and the source prompt ("a red three") and differ in the target: the attribute edit
changes the colour ("a blue three"), the structure edit the digit ("a red eight"). No input's caption and no edit
target is one of the ten held-out colour x digit combinations (`data.HELD_OUT_COMBINATIONS`): the analysis edits
between trained captions.

The shipped sheet (`ANALYSIS_INPUTS`) has four hand-picked inputs, `demo_input(digit, colour)`. `--draw` (issue 38)
draws larger, paired sheets from a seed (`draw_inputs`): DRAWN_INPUTS inputs for the analysis (that many pairs per
edit kind, every digit at least once, the colours as even as the held-out combinations allow) and TUNING_INPUTS
other images for tuning, in a sheet of their own. The models of a run share its sheet, so every model edits the
same inputs and model differences are paired. The drawn images leave out each digit's first held-out example
(`demo_index(digit)`), which the shipped sheets, the digits demo and the digits report edit and on which settings
were looked at; they are among the digits calibration's reference images (`classifier.calibration_indices` leaves
out only those first examples), one in ~20 of them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

import numpy as np

from ..digits.data import NUMBER_WORDS, demo_index, raw_digits, split_indices
from ..io import save_image, write_text
from .data import COLOURS, EDIT_KINDS, edit_input, edit_prompts, is_held_out_combination, parse_prompt

# (digit, colour): four digits in four colours (the fifth, white, is the blue input's attribute target), with the
# digits report's structure edits 3->8, 1->7, 0->6, 5->6 (imagic_steps/digits/report.py). Four, not more, so that
# the analysis' 8 pairs x 2 models x 5 variants x 4 seeds x 5 alphas and the baselines run in ~30 min on 2 cores.
ANALYSIS_INPUTS = ((3, "red"), (1, "green"), (0, "blue"), (5, "yellow"))
# `--draw`: issue 38's paired comparison asks for at least 12 pairs per edit kind; 4 more inputs for tuning.
DRAWN_INPUTS = 12
TUNING_INPUTS = 4
DRAW_SEED = 0
COLUMNS = ("pair_id", "image", "prompt", "source_prompt")


def trained_edit_colours(digit: int) -> list[str]:
    """The colours (palette order) a `digit` input may have: its caption and both its edits' targets are trained
    captions, none a held-out combination."""
    return [colour for colour in COLOURS
            if not any(is_held_out_combination(*reversed(parse_prompt(prompt)))
                       for kind in EDIT_KINDS for prompt in edit_prompts(colour, digit, kind))]


def draw_inputs(count: int, seed: int = DRAW_SEED) -> list[tuple[int, int, str]]:
    """`count` inputs (dataset index, digit, colour), deterministic from `seed` (a numpy Generator).

    Digits: successive seeded permutations of 0-9, so any 10 consecutive inputs hold every digit once. Colour: the
    least used so far among `trained_edit_colours(digit)`, ties drawn. Image: a held-out example of the digit not
    drawn before and not its first (`demo_index(digit)`, the shipped sheets' input). Every index is distinct, so the
    first k inputs and the rest never share an image.
    """
    rng = np.random.default_rng(seed)
    labels = raw_digits()[1]
    held_out = split_indices().held_out
    digits = np.concatenate([rng.permutation(10) for _ in range(-(-count // 10))])[:count]
    used_colours = dict.fromkeys(COLOURS, 0)
    drawn: list[tuple[int, int, str]] = []
    for digit in map(int, digits):
        colours = trained_edit_colours(digit)
        fewest = min(used_colours[colour] for colour in colours)
        colour = str(rng.choice([colour for colour in colours if used_colours[colour] == fewest]))
        used_colours[colour] += 1
        taken = {index for index, _, _ in drawn} | {demo_index(digit)}
        candidates = [int(index) for index in held_out[labels[held_out] == digit] if int(index) not in taken]
        drawn.append((int(rng.choice(candidates)), digit, colour))
    return drawn


def write_pairs(sheet: str | Path, folder: str | Path, inputs: Sequence[tuple[int, int, str]],
                indexed: bool) -> list[dict]:
    """Save each input (dataset index, digit, colour) as `folder`/{colour}_{digit}.png and write `sheet` (COLUMNS):
    per input, its attribute edit then its structure edit, pair ids {colour}_{digit word}_{kind}. `indexed`: the
    image and pair names carry the dataset index too ({colour}_{digit}_{index}.png, {colour}_{word}_{index}_{kind}),
    for sheets that may hold two images of one digit and colour. Returns the rows."""
    folder = Path(folder)
    rows = []
    for index, digit, colour in inputs:
        tag = f"_{index}" if indexed else ""
        image = folder / f"{colour}_{digit}{tag}.png"
        save_image(edit_input(index, colour), image)
        for kind in EDIT_KINDS:
            source, target = edit_prompts(colour, digit, kind)
            rows.append({"pair_id": f"{colour}_{NUMBER_WORDS[digit]}{tag}_{kind}", "image": str(image),
                         "prompt": target, "source_prompt": source})
    lines = ["\t".join(COLUMNS)] + ["\t".join(row[c] for c in COLUMNS) for row in rows]
    write_text(sheet, "\n".join(lines) + "\n")
    return rows


def write_sheet(sheet: str | Path, folder: str | Path, inputs=ANALYSIS_INPUTS) -> list[dict]:
    """The shipped sheet: each (digit, colour) of `inputs` as `demo_input(digit, colour)` (`write_pairs`)."""
    return write_pairs(sheet, folder, [(demo_index(digit), digit, colour) for digit, colour in inputs], indexed=False)


def write_drawn_sheets(sheet: str | Path, tuning_sheet: str | Path, folder: str | Path, seed: int = DRAW_SEED,
                       count: int = DRAWN_INPUTS, tuning: int = TUNING_INPUTS) -> tuple[list[dict], list[dict]]:
    """The analysis sheet of the first `count` of `draw_inputs(count + tuning, seed)` and the tuning sheet of the
    rest (disjoint images), both with their images in `folder`. Returns both sheets' rows."""
    inputs = draw_inputs(count + tuning, seed)
    return (write_pairs(sheet, folder, inputs[:count], indexed=True),
            write_pairs(tuning_sheet, folder, inputs[count:], indexed=True))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imagic_steps.colour_digits.sheet",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--draw", action="store_true",
                        help=f"draw {DRAWN_INPUTS} analysis and {TUNING_INPUTS} tuning inputs from --seed")
    parser.add_argument("--sheet", help="default config/colour_digits_pairs.tsv (--draw: ..._large.tsv)")
    parser.add_argument("--tuning-sheet", default="config/colour_digits_pairs_tuning.tsv", help="with --draw")
    parser.add_argument("--images", help="default config/images/colour_digits (--draw: ..._large)")
    parser.add_argument("--seed", type=int, default=DRAW_SEED, help="with --draw")
    parser.add_argument("--inputs", nargs="+", metavar="DIGIT:COLOUR",
                        default=[f"{digit}:{colour}" for digit, colour in ANALYSIS_INPUTS])
    args = parser.parse_args(argv)
    suffix = "_large" if args.draw else ""
    sheet = args.sheet or f"config/colour_digits_pairs{suffix}.tsv"
    images = args.images or f"config/images/colour_digits{suffix}"
    if args.draw:
        rows, tuning = write_drawn_sheets(sheet, args.tuning_sheet, images, args.seed)
        print(f"wrote {len(rows)} pairs to {sheet} and {len(tuning)} to {args.tuning_sheet}, images in {images}")
        return
    inputs = [(int(digit), colour) for digit, _, colour in (text.partition(":") for text in args.inputs)]
    rows = write_sheet(sheet, images, inputs)
    print(f"wrote {len(rows)} pairs to {sheet}, images in {images}")


if __name__ == "__main__":
    main()
