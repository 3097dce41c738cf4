"""A small CNN digit classifier: the scorer of edits made with the `digits` model.

    python -m imagic_steps.toy.classifier --out imagic_steps/presets/digits_classifier --seed 0

It is trained on the same training split as the diffusion model (32x32 greyscale, white on black) with
random shifts of up to two pixels, and reports its accuracy on the held-out split. `digit_scores` gives,
per sample, the probability of the target digit and two fidelity measures to the input image; every row
says `scorer = "digits-classifier"` so these numbers are never mistaken for CLIP or LPIPS scores.
"""

from __future__ import annotations

import argparse
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

from ..images import resize_center_crop
from ..io import load_tensors, read_json, save_tensors, write_json
from ..score import _check_same_length
from .digits import label_from_prompt, IMAGE_SIZE, SPLIT_SEED, load_split

SCORER_NAME = "digits-classifier"
DEFAULT_FOLDER = Path(__file__).resolve().parents[1] / "presets" / "digits_classifier"
WEIGHTS_FILE = "model.safetensors"
RECORD_FILE = "classifier.json"
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


def digit_scores(classifier: nn.Module, samples: Sequence[Image.Image], inputs: Sequence[Image.Image],
                 target_labels: Sequence[int]) -> pd.DataFrame:
    """One row per sample, compared with its input image and its target digit.

    Columns:
      target_prob     classifier probability of the target digit, in [0, 1]
      predicted       the classifier's most probable digit
      pixel_fidelity  1 - RMSE between sample and input, greyscale 32x32 in [0, 1]; 1 = identical
      ssim            structural similarity of the same greyscale images, in [-1, 1]; 1 = identical
      scorer          "digits-classifier"
    """
    _check_same_length(samples=samples, inputs=inputs, target_labels=target_labels)
    probabilities = digit_probabilities(classifier, samples)
    sample_grey = (grey_tensor(samples)[:, 0].numpy() + 1) / 2
    input_grey = (grey_tensor(inputs)[:, 0].numpy() + 1) / 2
    rows = []
    for i, target in enumerate(target_labels):
        rmse = float(np.sqrt(np.mean((sample_grey[i] - input_grey[i]) ** 2)))
        rows.append({
            "target_prob": float(probabilities[i, target]),
            "predicted": int(probabilities[i].argmax()),
            "pixel_fidelity": 1.0 - rmse,
            "ssim": float(structural_similarity(sample_grey[i], input_grey[i], data_range=1.0)),
            "scorer": SCORER_NAME,
        })
    return pd.DataFrame(rows, columns=["target_prob", "predicted", "pixel_fidelity", "ssim", "scorer"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imagic_steps.toy.classifier", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(DEFAULT_FOLDER), help="folder for the weights and the JSON record")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared machine)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = train_classifier(args.seed, args.steps)
    accuracy = held_out_accuracy(model)
    out = Path(args.out)
    save_tensors(out / WEIGHTS_FILE, model.state_dict())
    write_json(out / RECORD_FILE, {"scorer": SCORER_NAME, "held_out_accuracy": accuracy, "seed": args.seed,
                                   "steps": args.steps, "split_seed": SPLIT_SEED,
                                   "held_out_examples": len(load_split("held_out")[1])})
    print(f"held-out accuracy {accuracy:.4f}; saved to {out}")


if __name__ == "__main__":
    main()


def digit_evaluation_scores(samples: Sequence[Image.Image], inputs: Sequence[Image.Image], prompt: str) -> pd.DataFrame:
    """`digit_scores` for one prompt plus the columns the evaluation plots and ranks by, so the trade-off
    plot and the best-alpha rule work on the digits domain: clip_score = 100 * P(target digit),
    lpips = 1 - pixel fidelity (a distance), clip_image_sim = SSIM. The scorer column says so."""
    scores = digit_scores(load_digit_classifier(), samples, inputs, [label_from_prompt(prompt)] * len(samples))
    scores["clip_score"] = 100.0 * scores["target_prob"]
    scores["lpips"] = 1.0 - scores["pixel_fidelity"]
    scores["clip_image_sim"] = scores["ssim"]
    scores["directional_clip"] = np.nan
    return scores
