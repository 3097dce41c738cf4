"""Write the analysis' pairs sheet: held-out coloured digits, each edited twice (attribute and structure).

    python -m imagic_steps.colour_digits.sheet     # config/colour_digits_pairs.tsv + config/images/colour_digits/
    python -m imagic_steps.colour_digits.sheet --inputs 3:red --sheet config/colour_digits_pairs_slice.tsv

Each input is `demo_input(digit, colour)` (a held-out writer's digit, unseen by both models and the classifier),
saved as a 64 px PNG; its two rows share the image and the source prompt ("a red three") and differ in the
target: the attribute edit changes the colour ("a blue three"), the structure edit the digit ("a red eight").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..io import save_image, write_text
from ..digits.data import NUMBER_WORDS
from .data import EDIT_KINDS, demo_input, edit_prompts

# (digit, colour): four digits in four colours (the fifth, white, is the blue input's attribute target), with the
# digits report's structure edits 3->8, 1->7, 0->6, 5->6 (imagic_steps/digits/report.py). Four, not more, so that
# the analysis' 8 pairs x 2 models x 5 variants x 4 seeds x 5 alphas and the baselines run in ~30 min on 2 cores.
ANALYSIS_INPUTS = ((3, "red"), (1, "green"), (0, "blue"), (5, "yellow"))


def write_sheet(sheet: str | Path, folder: str | Path, inputs=ANALYSIS_INPUTS) -> list[dict]:
    """Save each input's image into `folder` and write `sheet` (pair_id, image, prompt, source_prompt): per input,
    its attribute edit then its structure edit. Returns the rows."""
    folder = Path(folder)
    rows = []
    for digit, colour in inputs:
        image = folder / f"{colour}_{digit}.png"
        save_image(demo_input(digit, colour), image)
        for kind in EDIT_KINDS:
            source, target = edit_prompts(colour, digit, kind)
            pair_id = f"{colour}_{NUMBER_WORDS[digit]}_{kind}"
            rows.append({"pair_id": pair_id, "image": str(image), "prompt": target, "source_prompt": source})
    columns = ("pair_id", "image", "prompt", "source_prompt")
    lines = ["\t".join(columns)] + ["\t".join(row[c] for c in columns) for row in rows]
    write_text(sheet, "\n".join(lines) + "\n")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imagic_steps.colour_digits.sheet",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--sheet", default="config/colour_digits_pairs.tsv")
    parser.add_argument("--images", default="config/images/colour_digits")
    parser.add_argument("--inputs", nargs="+", metavar="DIGIT:COLOUR",
                        default=[f"{digit}:{colour}" for digit, colour in ANALYSIS_INPUTS])
    args = parser.parse_args(argv)
    inputs = [(int(digit), colour) for digit, _, colour in (text.partition(":") for text in args.inputs)]
    rows = write_sheet(args.sheet, args.images, inputs)
    print(f"wrote {len(rows)} pairs to {args.sheet}, images in {args.images}")


if __name__ == "__main__":
    main()
