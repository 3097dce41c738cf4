"""The drawing the stages do while they run: labelled image grids (previews; every montage builds on them) and
loss curves, written atomically. The result figures (montages, best edits, trade-off and sweep plots) are in
`figures`, kept apart so that editing one reruns only the figure jobs, not the model stages (the workflow's
code hash is per module). matplotlib is imported inside the plotting functions: sampling jobs, which never
plot, start faster without it."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from .io import atomic_path, save_image

LABEL_HEIGHT = 14  # pixels of the caption strip above each column / left of each row


def image_grid(
    rows: Sequence[Sequence[Image.Image]],
    column_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    cell: int | None = None,
    row_label_width: int = 0,
) -> Image.Image:
    """Tile `rows` of images (each resized to `cell` x `cell`, default the first image's width) on white.

    Column labels go in a strip on top, row labels in a strip of `row_label_width` pixels on the left.
    """
    cell = cell or rows[0][0].width
    columns = max(len(r) for r in rows)
    top = LABEL_HEIGHT if column_labels else 0
    left = row_label_width if row_labels else 0
    grid = Image.new("RGB", (left + columns * cell, top + len(rows) * cell), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for c, label in enumerate(column_labels or []):
        draw.text((left + c * cell + 2, 1), str(label), fill="black", font=font)
    for r, row in enumerate(rows):
        if row_labels:
            draw.text((2, top + r * cell + cell // 2 - 5), str(row_labels[r]), fill="black", font=font)
        for c, image in enumerate(row):
            grid.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.LANCZOS), (left + c * cell, top + r * cell))
    return grid


def save_grid(path, rows, **kwargs) -> None:
    save_image(image_grid(rows, **kwargs), path)


def new_figure(figsize: tuple[float, float], dpi: int):
    """A bare matplotlib Figure on the Agg canvas: no pyplot global state, no display backend needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def write_loss_curve(losses: Sequence[float], csv_path, png_path, title: str) -> None:
    """A stage's loss history as CSV (step, loss; floats as their shortest round-trip repr, as pandas writes
    them) and as a PNG curve. The csv module, not pandas: importing pandas costs an embed or fine-tune job
    ~0.75 s of start-up for a two-column table."""
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["step", "loss"])
        writer.writerows((step, repr(float(loss))) for step, loss in enumerate(losses))
    plot_losses({"loss": losses}, png_path, title)


def plot_losses(curves: dict[str, Sequence[float]], path: str | Path, title: str) -> None:
    """One PNG with a loss curve per entry of `curves` (step on x, MSE on a log y axis)."""
    fig = new_figure((6, 3.5), 100)
    ax = fig.add_subplot()
    for name, losses in curves.items():
        if len(losses):
            ax.plot(range(len(losses)), losses, label=name, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("denoising MSE")
    if any(len(v) and min(v) > 0 for v in curves.values()):
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    if len(curves) > 1:
        ax.legend()
    # fixed margins that fit the log axis's tick labels: tight_layout's measuring pass was half of a
    # stage job's 0.28 s curve, which every embed and fine-tune job draws
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.15, top=0.9)
    save_figure(fig, path)
