"""A small CNN digit classifier: the scorer of edits made with the `digits` model.

    python -m imagic_steps.digits.classifier --out imagic_steps/presets/digits_classifier --seed 0

It is trained on the same training split as the diffusion model (32x32 greyscale, white on black) with
random shifts of up to two pixels, and reports its accuracy on the held-out split. `digit_scores` gives,
per sample, the probability of the target digit, the identity distance to the input image (a learned
perceptual distance in the classifier's features, in the spirit of LPIPS) and two pixel-level measures; every
row says `scorer = "digits-classifier"` so these numbers are never mistaken for CLIP or LPIPS scores.

The identity distance is calibrated on the held-out digits (`calibrate`, written to calibration.json beside
the weights by training and by

    python -m imagic_steps.digits.classifier --calibrate

): reference levels for the same digit drawn by another writer, another digit, and a blank image, which the
trade-off plot draws as bands.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.metrics import structural_similarity
from torch import nn
from tqdm.auto import tqdm

from ..images import check_same_length, resize_center_crop
from ..io import load_tensors, read_json, save_tensors, write_json
from ..locations import DIGITS_CLASSIFIER_FOLDER
from .data import IMAGE_SIZE, SPLIT_SEED, demo_index, label_from_prompt, load_split, split_indices, split_record

SCORER_NAME = "digits-classifier"
DEFAULT_FOLDER = DIGITS_CLASSIFIER_FOLDER
WEIGHTS_FILE = "model.safetensors"
RECORD_FILE = "classifier.json"
CALIBRATION_FILE = "calibration.json"
CALIBRATE_COMMAND = "python -m imagic_steps.digits.classifier --calibrate"
# The calibration levels the trade-off plot draws, in the order drawn, with their legend labels.
REFERENCE_LABELS = {"same_digit_other_writer": "same digit, other writer",
                    "target_digit_other_writer": "target digit, other writer",
                    "blank": "blank"}
MAX_SHIFT = 2  # pixels of random translation in training: generated digits are not all centred alike


def build_classifier() -> nn.Sequential:
    """CNN from greyscale (N, 1, 32, 32) in [-1, 1] to logits (N, 10); ~34 k parameters."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16x16
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 8x8
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
        nn.Flatten(), nn.Linear(64 * 4 * 4, 10),
    )


def grey_tensor(images: Sequence[Image.Image]) -> torch.Tensor:
    """Greyscale (N, 1, 32, 32) in [-1, 1] from PIL images of any size (resized as `load_image` does)."""
    arrays = [np.asarray(resize_center_crop(image.convert("L"), IMAGE_SIZE), dtype=np.float32) for image in images]
    return torch.from_numpy(np.stack(arrays) / 127.5 - 1.0).unsqueeze(1)


def random_shift(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Translate each image (N, 1, H, W) by up to MAX_SHIFT pixels per axis, filling with background (-1)."""
    n, _, h, w = images.shape
    padded = F.pad(images, [MAX_SHIFT] * 4, value=-1.0)
    offsets = torch.randint(0, 2 * MAX_SHIFT + 1, (n, 2), generator=generator)
    return torch.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets.tolist())])


def train_classifier(seed: int = 0, steps: int = 1500, batch_size: int = 64, lr: float = 2e-3,
                     progress: bool = True) -> nn.Sequential:
    """Train the classifier on the training split; initialisation, batches and shifts follow `seed`."""
    images, labels = load_split("train")
    grey = images[:, :1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_classifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in tqdm(range(steps), desc="classifier", disable=not progress, mininterval=1.0):
        batch = torch.randint(0, len(labels), (batch_size,), generator=generator)
        loss = F.cross_entropy(model(random_shift(grey[batch], generator)), labels[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    return model.eval().requires_grad_(False)


@torch.no_grad()
def held_out_accuracy(classifier: nn.Module) -> float:
    """Fraction of the held-out split classified correctly."""
    images, labels = load_split("held_out")
    return float((classifier(images[:, :1]).argmax(1) == labels).float().mean())


def load_digit_classifier(folder: str | Path = DEFAULT_FOLDER) -> nn.Sequential:
    """The shipped (or a retrained) classifier, in eval mode on the CPU."""
    model = build_classifier()
    model.load_state_dict(load_tensors(Path(folder) / WEIGHTS_FILE))
    return model.eval().requires_grad_(False)


def classifier_record(folder: str | Path = DEFAULT_FOLDER) -> dict:
    """What the training command recorded: held-out accuracy, seed, split, steps."""
    return read_json(Path(folder) / RECORD_FILE)


@torch.no_grad()
def digit_probabilities(classifier: nn.Module, images: Sequence[Image.Image]) -> np.ndarray:
    """Softmax probabilities (N, 10) of digits 0-9 for N PIL images."""
    return F.softmax(classifier(grey_tensor(images)), dim=1).numpy()


@torch.no_grad()
def identity_features(classifier: nn.Sequential, grey: torch.Tensor) -> torch.Tensor:
    """The features the classifier's linear head reads, (N, 1024) = 64 channels x 4x4 after the last max-pool
    (ReLU outputs, so >= 0), of greyscale images (N, 1, 32, 32) in [-1, 1]."""
    return classifier[:-1](grey)


def _unit_rows(features: torch.Tensor) -> torch.Tensor:
    """Rows (N, F) scaled to unit L2 norm; an all-zero row (no feature fires) stays zero."""
    return F.normalize(features, dim=1, eps=1e-12)


def feature_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> torch.Tensor:
    """Cosine distance 1 - cos(a, b) of row-aligned features (N, 1024) -> (N,).

    Computed as |u_a - u_b|^2 / 2 of the unit rows, which equals 1 - cos and is exactly 0 for the same image
    and exactly symmetric. In [0, 1] for the non-negative `identity_features`. An image with no feature firing
    would be at distance 0.5 from every other image; no digit or blank image is one.
    """
    return 0.5 * (_unit_rows(features_a) - _unit_rows(features_b)).pow(2).sum(dim=1)


def identity_distance(classifier: nn.Sequential, samples: Sequence[Image.Image],
                      inputs: Sequence[Image.Image]) -> np.ndarray:
    """Identity distance (N,) in [0, 1] of each sample to its input: `feature_distance` of their
    `identity_features`; 0 = identical. calibration.json gives its reference levels."""
    check_same_length(samples=samples, inputs=inputs)
    return feature_distance(identity_features(classifier, grey_tensor(samples)),
                            identity_features(classifier, grey_tensor(inputs))).numpy()


SCORE_COLUMNS = ["target_prob", "predicted", "identity_distance", "pixel_fidelity", "ssim", "scorer"]


@torch.no_grad()
def digit_scores(classifier: nn.Sequential, samples: Sequence[Image.Image], inputs: Sequence[Image.Image],
                 target_labels: Sequence[int]) -> pd.DataFrame:
    """One row per sample, compared with its input image and its target digit.

    Columns:
      target_prob        classifier probability of the target digit, in [0, 1]
      predicted          the classifier's most probable digit
      identity_distance  1 - cosine similarity of the classifier's features of sample and input, in [0, 1];
                         0 = identical (calibration.json: the same digit by another writer, another digit, blank)
      pixel_fidelity     1 - RMSE between sample and input, greyscale 32x32 in [0, 1]; 1 = identical
      ssim               structural similarity of the same greyscale images, in [-1, 1]; 1 = identical
      scorer             "digits-classifier"
    """
    check_same_length(samples=samples, inputs=inputs, target_labels=target_labels)
    sample_tensor, input_tensor = grey_tensor(samples), grey_tensor(inputs)
    sample_features = identity_features(classifier, sample_tensor)
    probabilities = F.softmax(classifier[-1](sample_features), dim=1).numpy()
    distances = feature_distance(sample_features, identity_features(classifier, input_tensor)).numpy()
    sample_grey = (sample_tensor[:, 0].numpy() + 1) / 2
    input_grey = (input_tensor[:, 0].numpy() + 1) / 2
    rows = []
    for i, target in enumerate(target_labels):
        rmse = float(np.sqrt(np.mean((sample_grey[i] - input_grey[i]) ** 2)))
        rows.append({
            "target_prob": float(probabilities[i, target]),
            "predicted": int(probabilities[i].argmax()),
            "identity_distance": float(distances[i]),
            "pixel_fidelity": 1.0 - rmse,
            "ssim": float(structural_similarity(sample_grey[i], input_grey[i], data_range=1.0)),
            "scorer": SCORER_NAME,
        })
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def digit_evaluation_scores(samples: Sequence[Image.Image], inputs: Sequence[Image.Image], prompt: str) -> pd.DataFrame:
    """`digit_scores` for one prompt plus the evaluation's columns (`imagic_steps.score`), so the trade-off plot
    and the best-alpha rule work on the digits domain: text_alignment = 100 * P(target digit), distance =
    identity distance, image_similarity = SSIM, directional_similarity = NaN (no text encoder to take a text
    direction with). The scorer column says so."""
    scores = digit_scores(load_digit_classifier(), samples, inputs, [label_from_prompt(prompt)] * len(samples))
    scores["text_alignment"] = 100.0 * scores["target_prob"]
    scores["distance"] = scores["identity_distance"]
    scores["image_similarity"] = scores["ssim"]
    scores["directional_similarity"] = np.nan
    return scores


# --------------------------------------------------------------------------------------------------
# Calibration of the identity distance


def calibration_indices() -> np.ndarray:
    """Dataset indices of the calibration images: the held-out split less the first held-out example of every
    digit, `demo_index(label)`, which the demo pairs (config/digits_pairs.tsv: 3, 1 and 0) and
    `imagic_steps.digits.report`'s ten pairs edit, so no edited input is among its own references."""
    inputs = [demo_index(label) for label in range(10)]
    return np.setdiff1d(split_indices().held_out, inputs)


CALIBRATION_DIGITS = 4  # decimals stored: the levels are references, not measurements to the last bit


def _quartiles(values: torch.Tensor) -> dict:
    q25, median, q75 = np.percentile(values.double().numpy(), [25, 50, 75])
    return {"q25": round(float(q25), CALIBRATION_DIGITS), "median": round(float(median), CALIBRATION_DIGITS),
            "q75": round(float(q75), CALIBRATION_DIGITS), "n": int(values.numel())}


@torch.no_grad()
def calibrate(classifier: nn.Sequential) -> dict:
    """Reference levels of `identity_distance` on the calibration images (`calibration_indices`).

    Levels (median, quartiles, n):
      same_image                 each image against itself (0 up to rounding)
      same_digit_other_writer    every pair of different images with the same label
      target_digit_other_writer  every pair with different labels: an unrelated sample of the target digit
      blank                      each image against a blank (all background) image
    The digits come from 13 writers (sklearn's description) who are not labelled, so about 1 in 13
    same-label pairs is in fact by the same writer.
    """
    indices = calibration_indices()
    all_held_out = split_indices().held_out
    images, labels = load_split("held_out")
    keep = torch.from_numpy(np.isin(all_held_out, indices))
    grey, labels = images[keep, :1], labels[keep]
    features = identity_features(classifier, grey)
    unit = _unit_rows(features)
    # (N, N): feature_distance of every pair at once; the direct difference, not the matmul shortcut, so
    # each entry is what feature_distance gives for that pair up to the square root's rounding
    pairwise = 0.5 * torch.cdist(unit, unit, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    first, second = torch.triu_indices(len(labels), len(labels), offset=1)
    pair_distance = pairwise[first, second]
    same_label = labels[first] == labels[second]
    blank = identity_features(classifier, torch.full((1, 1, IMAGE_SIZE, IMAGE_SIZE), -1.0))
    return {
        "distance": "identity_distance = 1 - cosine similarity of the classifier's 1024 penultimate features",
        "command": CALIBRATE_COMMAND,
        "weights_sha256": hashlib.sha256(_weights_bytes(classifier)).hexdigest(),
        "split": split_record(),
        "images": len(labels),
        "excluded": {"dataset_indices": [demo_index(label) for label in range(10)],
                     "why": "demo_index(label) for each digit: the inputs of the demo pairs and the report's pairs"},
        "levels": {
            "same_image": _quartiles(feature_distance(features, features)),
            "same_digit_other_writer": _quartiles(pair_distance[same_label]),
            "target_digit_other_writer": _quartiles(pair_distance[~same_label]),
            "blank": _quartiles(feature_distance(features, blank.expand_as(features))),
        },
    }


def _weights_bytes(classifier: nn.Module) -> bytes:
    """The classifier's weights as bytes in state-dict order: what the calibration was computed with."""
    return b"".join(tensor.detach().contiguous().numpy().tobytes() for tensor in classifier.state_dict().values())


def load_calibration(folder: str | Path = DEFAULT_FOLDER) -> dict:
    """The calibration written beside the classifier weights (`calibrate`)."""
    return read_json(Path(folder) / CALIBRATION_FILE)


def write_calibration(classifier: nn.Sequential, folder: str | Path) -> dict:
    """`calibrate` the classifier and write the result to `folder`/calibration.json; returns it."""
    calibration = calibrate(classifier)
    write_json(Path(folder) / CALIBRATION_FILE, calibration)
    return calibration


def calibration_markdown(calibration: dict) -> str:
    """The calibration levels as a Markdown table: median [q25, q75] and n per level."""
    lines = ["| reference | identity distance: median [IQR] | n |", "|---|---|---|"]
    for key, level in calibration["levels"].items():
        name = REFERENCE_LABELS.get(key, key.replace("_", " "))
        lines.append(f"| {name} | {level['median']:.3f} [{level['q25']:.3f}, {level['q75']:.3f}] | {level['n']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imagic_steps.digits.classifier", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_FOLDER), help="folder for the weights and the JSON records")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--calibrate", action="store_true",
                        help="only recompute calibration.json for the weights already in --out (no training)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.calibrate:
        model = load_digit_classifier(out)
    else:
        model = train_classifier(args.seed, args.steps)
        accuracy = held_out_accuracy(model)
        save_tensors(out / WEIGHTS_FILE, model.state_dict())
        write_json(out / RECORD_FILE, {"scorer": SCORER_NAME, "held_out_accuracy": accuracy, "seed": args.seed,
                                       "steps": args.steps, "split_seed": SPLIT_SEED,
                                       "held_out_examples": len(load_split("held_out")[1])})
        print(f"held-out accuracy {accuracy:.4f}; saved to {out}")
    # The calibration belongs to the weights: retraining rewrites it.
    calibration = write_calibration(model, out)
    print(f"{calibration_markdown(calibration)}\n\n{calibration['images']} held-out images "
          f"(the 10 report/demo inputs left out); written to {out / CALIBRATION_FILE}")


if __name__ == "__main__":
    main()
