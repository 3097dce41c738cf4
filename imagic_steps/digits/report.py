"""The producer of the measured tables in imagic_steps/digits/README.md, printed as Markdown.

    python -m imagic_steps.digits.report                       # all tables (a few minutes, one CPU thread)
    python -m imagic_steps.digits.report --tables text-to-image

Tables, all with the shipped `digits` model and classifier:
  calibration    the identity distance's reference levels (as in the shipped calibration.json, recomputed)
  text-to-image  per digit, how many of N seeds the classifier reads as the requested digit, at several
                 guidance scales (DDIM, 20 steps, the canonical caption)
  imagic         Imagic with the recommended parameters on ten held-out inputs, each to another digit
                 (REPORT_PAIRS): per alpha, and for plain text-to-image of the target prompt, P(target digit),
                 identity distance and pixel fidelity to the input, mean over pairs of seed means with a 95%
                 pair bootstrap interval (imagic_steps.stats.summarise)
  ablations      the same ten pairs at alphas 0 and 1 with one stage setting changed from the recommended one
                 (fewer embedding steps, higher fine-tuning rates, LoRA)

Every random draw follows fixed seeds, so a rerun on the same CPU and torch build prints the same tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..components import SDComponents
from ..diffusion import encode_prompts
from ..embed import optimize_embedding
from ..finetune import finetune_unet
from ..images import pil_to_tensor, resize_center_crop, tensor_to_pil
from ..locations import DIGITS_PRESET
from ..model_loading import load_components
from ..sample import sample_alphas
from ..stats import markdown_table, summarise
from ..variants import EmbedParams, FinetuneParams, SampleParams
from .classifier import calibrate, calibration_markdown, digit_probabilities, digit_scores, \
    load_digit_classifier
from .data import IMAGE_SIZE, caption, demo_digit

# The stage parameters recommended for the digits model (README; the default workflow config uses them).
EMBED = EmbedParams(steps=200, lr=1e-3)
FINETUNE = FinetuneParams(steps=150, lr=1e-4, mode="full")
SAMPLE = SampleParams(scheduler="DDIMScheduler", steps=20, guidance_scale=3.0)
ALPHAS = (0.0, 0.5, 0.8, 1.0, 1.2)
# (input digit, target digit): the input is demo_digit(input digit), the first held-out example of that digit;
# the first three are the default workflow's pairs (config/digits_pairs.tsv).
REPORT_PAIRS = ((3, 8), (1, 7), (0, 6), (5, 6), (7, 1), (4, 9), (2, 3), (9, 4), (6, 5), (8, 3))
IMAGIC_SEEDS = tuple(range(6))
TEXT_TO_IMAGE_SEEDS = tuple(range(16))
GUIDANCE_SCALES = (1.0, 3.0, 5.0)  # 1 = no classifier-free guidance
# One stage setting changed at a time from the recommended parameters: the claims of the README's tuning notes.
ABLATIONS = {
    "recommended": (EMBED, FINETUNE),
    "embed 100 steps": (dataclasses.replace(EMBED, steps=100), FINETUNE),
    "finetune lr 2e-4": (EMBED, dataclasses.replace(FINETUNE, lr=2e-4)),
    "finetune lr 1e-3": (EMBED, dataclasses.replace(FINETUNE, lr=1e-3)),
    "LoRA rank 4, lr 3e-3": (EMBED, dataclasses.replace(FINETUNE, mode="lora", lr=3e-3)),
    "LoRA rank 4, lr 1e-2": (EMBED, dataclasses.replace(FINETUNE, mode="lora", lr=1e-2)),
}
ABLATION_ALPHAS = (0.0, 1.0)
ABLATION_SEEDS = tuple(range(4))
TABLES = ("calibration", "text-to-image", "imagic", "ablations")


def text_to_image_accuracy(components: SDComponents, classifier: nn.Sequential, seeds: Sequence[int],
                           params: SampleParams = SAMPLE) -> np.ndarray:
    """Per digit 0-9, the fraction of `seeds` whose sample of the canonical caption the classifier reads as
    that digit: shape (10,), in [0, 1]."""
    accuracy = np.empty(10)
    for label in range(10):
        embedding = encode_prompts(components, [caption(label)])
        images = sample_alphas(components, components.unet, embedding, embedding, [0.0], seeds, params, progress=False)
        accuracy[label] = (digit_probabilities(classifier, tensor_to_pil(images[:, 0])).argmax(1) == label).mean()
    return accuracy


def text_to_image_table(components: SDComponents, classifier: nn.Sequential,
                        seeds: Sequence[int] = TEXT_TO_IMAGE_SEEDS,
                        guidance_scales: Sequence[float] = GUIDANCE_SCALES) -> str:
    """Markdown: one row per digit, one column per guidance scale, cells "correct / seeds"; a total row."""
    columns = {}
    for g in guidance_scales:
        accuracy = text_to_image_accuracy(components, classifier, seeds, dataclasses.replace(SAMPLE, guidance_scale=g))
        counts = np.rint(len(seeds) * accuracy).astype(int)
        columns[f"guidance {g:g}"] = [f"{c} / {len(seeds)}" for c in counts] + [f"{counts.sum()} / {10 * len(seeds)}"]
    table = pd.DataFrame(columns)
    table.insert(0, "digit", [str(label) for label in range(10)] + ["all"])
    return table.to_markdown(index=False)


def report_input(label: int) -> torch.Tensor:
    """The input of a report pair as the model sees it, (1, 3, 32, 32) in [-1, 1]: the 64 px demo file of
    `demo_digit(label)` resized as the workflow's `load_image` resizes it."""
    return pil_to_tensor(resize_center_crop(demo_digit(label), IMAGE_SIZE))


def pair_scores(components: SDComponents, classifier: nn.Sequential, source: int, target: int,
                embed_params: EmbedParams = EMBED, finetune_params: FinetuneParams = FINETUNE,
                alphas: Sequence[float] = ALPHAS, seeds: Sequence[int] = IMAGIC_SEEDS,
                text_to_image: bool = True) -> pd.DataFrame:
    """`digit_scores` of one Imagic edit of `demo_digit(source)` to "a handwritten digit <target>", one row per
    seed and alpha (method "imagic"), plus with `text_to_image` plain samples of the target prompt from the
    base model (method "text-to-image", alpha NaN); columns pair_id, method, alpha, seed and the score columns."""
    image = report_input(source)
    inputs = tensor_to_pil(image) * len(seeds)
    embed = optimize_embedding(components, image, caption(target), embed_params, progress=False)
    tuned = finetune_unet(components, embed, finetune_params, progress=False)
    edits = sample_alphas(components, tuned.unet, embed.target_embedding, embed.optimized_embedding, alphas, seeds,
                          SAMPLE, progress=False)
    runs = [("imagic", alpha, edits[:, a]) for a, alpha in enumerate(alphas)]
    if text_to_image:
        plain = sample_alphas(components, components.unet, embed.target_embedding, embed.target_embedding, [0.0],
                              seeds, SAMPLE, progress=False)
        runs.append(("text-to-image", np.nan, plain[:, 0]))
    tables = []
    for method, alpha, images in runs:
        scores = digit_scores(classifier, tensor_to_pil(images), inputs, [target] * len(seeds))
        scores.insert(0, "seed", list(seeds))
        scores.insert(0, "alpha", alpha)
        scores.insert(0, "method", method)
        scores.insert(0, "pair_id", f"{source}->{target}")
        tables.append(scores)
    return pd.concat(tables, ignore_index=True)


REPORT_METRICS = ("target_prob", "identity_distance", "pixel_fidelity")


def imagic_table(scores: pd.DataFrame, by: Sequence[str] = ("method", "alpha")) -> str:
    """Markdown of `summarise(scores)`: mean over pairs of seed means [95% pair bootstrap interval]; rows in
    the order their first `by` value was run (e.g. the ABLATIONS order), then by alpha."""
    summary = summarise(scores, by=by, metrics=REPORT_METRICS)  # raises on mixed scorers
    run_order = {value: index for index, value in enumerate(dict.fromkeys(scores[by[0]]))}
    summary = summary.sort_values(by[0], key=lambda column: column.map(run_order), kind="stable")
    return markdown_table(summary.drop(columns="scorer"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imagic_steps.digits.report", description=__doc__.splitlines()[0])
    parser.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    components, classifier = load_components(DIGITS_PRESET), load_digit_classifier()
    for name in args.tables:
        started = time.perf_counter()
        if name == "calibration":
            text = calibration_markdown(calibrate(classifier))
        elif name == "text-to-image":
            text = text_to_image_table(components, classifier)
            seeds = f"{TEXT_TO_IMAGE_SEEDS[0]}-{TEXT_TO_IMAGE_SEEDS[-1]}"
            text += f"\n\nDDIM {SAMPLE.steps} steps, seeds {seeds} per digit."
        elif name == "imagic":
            scores = pd.concat([pair_scores(components, classifier, *pair) for pair in REPORT_PAIRS], ignore_index=True)
            text = imagic_table(scores)
            text += (f"\n\n{len(REPORT_PAIRS)} pairs x {len(IMAGIC_SEEDS)} seeds; embed {EMBED.steps} steps lr "
                     f"{EMBED.lr:g}, full fine-tune {FINETUNE.steps} steps lr {FINETUNE.lr:g}, DDIM {SAMPLE.steps} "
                     f"steps guidance {SAMPLE.guidance_scale:g}; text-to-image: the base model's samples of the "
                     "target prompt (no alpha).")
        else:
            scores = pd.concat([
                pair_scores(components, classifier, *pair, embed_params=embed_params, finetune_params=finetune_params,
                            alphas=ABLATION_ALPHAS, seeds=ABLATION_SEEDS, text_to_image=False).assign(variant=variant)
                for variant, (embed_params, finetune_params) in ABLATIONS.items() for pair in REPORT_PAIRS],
                ignore_index=True)
            text = imagic_table(scores, by=("variant", "alpha"))
            text += f"\n\n{len(REPORT_PAIRS)} pairs x {len(ABLATION_SEEDS)} seeds; one setting changed per row."
        print(f"### {name}\n\n{text}\n\n({time.perf_counter() - started:.0f} s)\n", flush=True)


if __name__ == "__main__":
    main()
