"""Image grids with labels and loss curves, written atomically."""

from __future__ import annotations

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


def plot_losses(curves: dict[str, Sequence[float]], path: str | Path, title: str) -> None:
    """One PNG with a loss curve per entry of `curves` (step on x, MSE on a log y axis)."""
    # matplotlib is imported here: sampling jobs, which never plot, start faster without it
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for name, losses in curves.items():
        if len(losses):
            ax.plot(range(len(losses)), losses, label=name, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("denoising MSE")
    if any(len(v) and min(v) > 0 for v in curves.values()):
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
