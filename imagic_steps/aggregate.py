"""Montages and tables that compare variants, built from cached samples (no model needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd
from PIL import Image

from .figures import image_grid
from .images import load_image
from .io import atomic_path, save_image

MIN_CELL = 64  # pixels: small samples (the 32 px digits) are enlarged so labels and strokes stay readable
LABEL_CHAR_WIDTH = 7  # pixels per character of PIL's default font


def write_table(rows: Sequence[dict], csv_path, markdown_path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per sample as CSV (all columns) and Markdown (`columns`, default all)."""
    table = pd.DataFrame(list(rows))
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(markdown_path) as tmp:
        tmp.write_text((table[list(columns)] if columns else table).to_markdown(index=False) + "\n", encoding="utf-8")
    return table


def pair_montage(
    input_image: str | Path,
    rows: Sequence[tuple[str, Sequence[str | Path]]],
    column_labels: Sequence[str],
) -> Image.Image:
    """Input image in the first column, then one column per alpha; one labelled row per (variant, seed).

    `rows` holds (label, sample paths in column order); `column_labels` label the sample columns. Cells
    are the samples' size; the input is resized and centre-cropped to it as the model saw it.
    """
    samples = [[Image.open(path) for path in paths] for _, paths in rows]
    cell = max(samples[0][0].width, MIN_CELL)
    original = load_image(input_image, samples[0][0].width)
    tiles = [[original] + row for row in samples]
    labels = [label for label, _ in rows]
    return image_grid(tiles, column_labels=["input", *column_labels], row_labels=labels, cell=cell,
                      row_label_width=row_label_width(labels))


def row_label_width(labels: Sequence[str]) -> int:
    """Pixels for the longest row label in PIL's default font."""
    return LABEL_CHAR_WIDTH * max(len(label) for label in labels) + 6


def save_pair_montage(path, input_image, rows, column_labels) -> None:
    save_image(pair_montage(input_image, rows, column_labels), path)


def stack_vertically(paths: Sequence[str | Path], out_path) -> None:
    """The overview: every pair's montage, one under the other, on white (left-aligned)."""
    images = [Image.open(p).convert("RGB") for p in paths]
    canvas = Image.new("RGB", (max(i.width for i in images), sum(i.height for i in images)), "white")
    top = 0
    for image in images:
        canvas.paste(image, (0, top))
        top += image.height
    save_image(canvas, out_path)
