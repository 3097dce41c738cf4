"""The result figures, made from cached samples and scores (no model): pair and overview montages, the best
edits, trade-off plots and sweep plots, written atomically. They build on `drawing` (image grids, matplotlib
figures); the numbers they show come from `stats`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from .drawing import image_grid, new_figure, save_figure
from .images import load_image
from .io import save_image
from .stats import DISTANCE_METRIC, SETTING_COLUMNS, TEXT_METRIC, edit_setting, require_columns

MIN_CELL = 64  # pixels: small samples (the 32 px digits) are enlarged so labels and strokes stay readable
LABEL_CHAR_WIDTH = 7  # pixels per character of PIL's default font


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


NO_EDIT_GREY = (128, 128, 128)


def no_edit_tile(size: int, label: str = "no edit") -> Image.Image:
    """A grey `size` x `size` tile saying `label`: the cell of a pair where no alpha achieved the edit."""
    tile = Image.new("RGB", (size, size), NO_EDIT_GREY)
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    draw.text(((size - (right - left)) // 2, (size - (bottom - top)) // 2), label, fill="white", font=font)
    return tile


def best_edits_montage(best: pd.DataFrame, table: pd.DataFrame, images: dict[str, str], seed: int,
                       keys: Sequence[str] = ()) -> Image.Image:
    """One row per pair: the input, then each (*keys, method, variant)'s sample at its best setting for `seed`
    (`keys`: facets such as the model label that vary within a pair, one column per value).

    A (pair, *keys, method, variant) without a best setting (edited False in `pick_best_alpha`) gets a grey
    "no edit" tile, or "missing" where the table lacks it entirely.
    """
    group = [*keys, "method", "variant"]
    columns = sorted(set(best[group].itertuples(index=False, name=None)))
    pairs = sorted(best["pair_id"].unique())
    seed_rows = table[table["seed"] == seed].assign(setting=edit_setting)
    lookup = seed_rows.set_index(["pair_id", *group, "setting"])["sample"]
    with Image.open(seed_rows["sample"].iloc[0]) as first:
        width = first.width
    cell = max(width, MIN_CELL)
    picks = best.assign(setting=edit_setting).set_index(["pair_id", *group])
    rows = []
    for pair in pairs:
        row = [load_image(images[pair], width)]
        for column in columns:
            if (pair, *column) not in picks.index:
                row.append(no_edit_tile(cell, "missing"))
            elif not bool(picks.at[(pair, *column), "edited"]):
                row.append(no_edit_tile(cell))
            else:
                row.append(Image.open(lookup[(pair, *column, picks.at[(pair, *column), "setting"])]))
        rows.append(row)
    labels = ["input"] + [" ".join(map(str, (*column[:len(keys)], column[-1]))) for column in columns]
    return image_grid(rows, column_labels=labels, row_labels=pairs, cell=cell, row_label_width=row_label_width(pairs))


def _interval_errors(mean: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    """Asymmetric error-bar lengths (2, N) = (mean - lo, hi - mean); undefined intervals drawn as zero.

    None when no interval is defined. Negative lengths (a percentile interval that excludes its own mean,
    possible in principle for very skewed data) are drawn as zero rather than rejected by matplotlib.
    """
    mean, lo, hi = (np.asarray(v, dtype=np.float64) for v in (mean, lo, hi))
    errors = np.vstack([mean - lo, hi - mean])
    finite = np.isfinite(errors)
    if not finite.any():
        return None
    return np.maximum(np.where(finite, errors, 0.0), 0.0)


@dataclass(frozen=True)
class ReferenceBand:
    """A calibrated reference level of the distance metric (e.g. two images of the same digit by different
    writers): its median and interquartile range [q25, q75], in the metric's own units."""

    label: str
    q25: float
    median: float
    q75: float


# Grey bands told apart by hatching, so that no band shares a colour with a method's curve.
REFERENCE_STYLES = (("0.45", "//"), ("0.65", ".."), ("0.25", "\\\\"))  # (grey level, hatch), cycled


def tradeoff_figure(summary: pd.DataFrame, title: str,
                    xlabel: str = "1 − LPIPS (fidelity to input, unitless; higher = closer)",
                    ylabel: str = "CLIP score (100 · cosine; higher = better text alignment)",
                    references: Sequence[ReferenceBand] = (), panels_by: Sequence[str] = ()):
    """The fidelity / text-alignment trade-off of a `summarise` table as a matplotlib Figure.

    x = 1 - mean distance (fidelity to the input), y = mean text alignment; one line per (method, variant),
    ordered by its setting (Imagic's alpha, a baseline's grid value), each point labelled with it. Error bars are the
    pair bootstrap intervals [lo, hi] (asymmetric, drawn as they are: they lie inside the metric's range by
    construction; none with a single pair). Each of `references` (distance levels, drawn at x = 1 - distance) is
    a vertical band over its interquartile range with a dashed line at its median, named in the legend, so a
    curve's fidelity reads against what e.g. another writer's drawing of the same digit scores. `panels_by` (up to
    two summary columns, e.g. edit kind and model) splits the figure into panels on shared axes: rows by the first
    column's values, columns by the second's. The title names the scorer(s) so random-weight numbers are
    recognisable.
    """
    panels_by = list(panels_by)
    if len(panels_by) > 2:
        raise ValueError(f"at most two panel columns, got {panels_by}")
    require_columns(summary, [*panels_by, "method", "variant", *SETTING_COLUMNS, f"{DISTANCE_METRIC}_mean",
                              f"{TEXT_METRIC}_mean", "scorer"])
    row_values = sorted(summary[panels_by[0]].unique()) if panels_by else [None]
    column_values = sorted(summary[panels_by[1]].unique()) if len(panels_by) == 2 else [None]
    # one colour per (method, variant) across all panels, though a panel may lack some (LEDITS++ on IF)
    curves = sorted(summary.groupby(["method", "variant"]).groups)
    colours = {curve: f"C{index % 10}" for index, curve in enumerate(curves)}
    figure = new_figure((7 * len(column_values), 5 * len(row_values)), 120)
    grid = figure.subplots(len(row_values), len(column_values), sharex=True, sharey=True, squeeze=False)
    for i, row_value in enumerate(row_values):
        for j, column_value in enumerate(column_values):
            axes, panel = grid[i][j], summary
            names = []
            for column, value in zip(panels_by, (row_value, column_value)):
                panel = panel[panel[column] == value]
                names.append(f"{column} {value}")
            _draw_tradeoff(axes, panel, references, colours)
            if names:
                axes.set_title(", ".join(names), fontsize=10)
    scorer_names = ", ".join(sorted(map(str, summary["scorer"].unique())))
    figure.suptitle(f"{title}\nscorer: {scorer_names}", fontsize=10)
    legend_title = "method / variant" + (", reference" if references else "")
    if not panels_by:
        grid[0][0].set_xlabel(xlabel)
        grid[0][0].set_ylabel(ylabel)
        grid[0][0].legend(title=legend_title, fontsize=8)
        figure.tight_layout()
        return figure
    # several panels: x labels on the bottom row, one y label and one legend (every curve and band of any panel)
    # for the whole figure
    for axes in grid[-1]:
        axes.set_xlabel(xlabel, fontsize=9)
    figure.supylabel(ylabel, fontsize=10)
    entries = {}
    for axes in figure.axes:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    columns = min(len(entries), 2 * len(column_values))  # ~3.5 in per legend column: as wide as the panels
    figure.legend(list(entries.values()), list(entries), title=legend_title, fontsize=8, loc="lower center",
                  ncol=columns)
    legend_rows = -(-len(entries) // columns) + 1  # plus the title
    figure.tight_layout(rect=(0, min(0.4, 0.28 * legend_rows / figure.get_figheight()), 1, 1))
    return figure


def _draw_tradeoff(axes, summary: pd.DataFrame, references: Sequence[ReferenceBand],
                   colours: dict[tuple[str, str], str]) -> None:
    """One trade-off panel: the reference bands, then one line per (method, variant) of `summary`, in its colour."""
    for index, band in enumerate(references):
        color, hatch = REFERENCE_STYLES[index % len(REFERENCE_STYLES)]
        axes.axvspan(1.0 - band.q75, 1.0 - band.q25, facecolor=color, edgecolor=color, hatch=hatch, alpha=0.2,
                     lw=0, label=f"{band.label} (median, IQR)")
        axes.axvline(1.0 - band.median, color=color, ls="--", lw=1)
    for (method, variant), curve in summary.groupby(["method", "variant"], sort=True):
        curve = curve.assign(setting=edit_setting).sort_values("setting")
        distance_mean = curve[f"{DISTANCE_METRIC}_mean"].to_numpy(dtype=np.float64)
        x = 1.0 - distance_mean
        y = curve[f"{TEXT_METRIC}_mean"].to_numpy(dtype=np.float64)
        xerr = yerr = None
        if {f"{DISTANCE_METRIC}_lo", f"{DISTANCE_METRIC}_hi"} <= set(curve.columns):
            # x = 1 - distance: the upper distance bound is the lower fidelity bound, so the two lengths swap.
            xerr = _interval_errors(distance_mean, curve[f"{DISTANCE_METRIC}_lo"], curve[f"{DISTANCE_METRIC}_hi"])
            xerr = None if xerr is None else xerr[::-1]
        if {f"{TEXT_METRIC}_lo", f"{TEXT_METRIC}_hi"} <= set(curve.columns):
            yerr = _interval_errors(y, curve[f"{TEXT_METRIC}_lo"], curve[f"{TEXT_METRIC}_hi"])
        axes.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", capsize=3, label=f"{method} / {variant}",
                      color=colours[(method, variant)])
        for setting, x_i, y_i in zip(curve["setting"], x, y):
            axes.annotate(f"{setting:g}", (x_i, y_i), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.grid(True, alpha=0.3)


def plot_tradeoff(summary: pd.DataFrame, path: str | os.PathLike, title: str, **options) -> None:
    """`tradeoff_figure` saved as PNG at `path` (atomically); `options` are its xlabel, ylabel, references,
    panels_by."""
    save_figure(tradeoff_figure(summary, title, **options), path)


SWEEP_METRICS = (TEXT_METRIC, DISTANCE_METRIC, "image_similarity")  # one panel each


def plot_sweep(means: pd.DataFrame, path, title: str, xlabel: str, labels: dict[str, str]) -> None:
    """Text alignment, fidelity (1 − distance) and image similarity against a swept parameter, one line per alpha.

    `means`: `stats.sweep_means` of the sweep (columns alpha, value and `SWEEP_METRICS`); `labels` name what each
    metric measures with this scorer (e.g. LPIPS, or the digits' identity distance).
    """
    figure = new_figure((10, 3.6), 110)
    for index, metric in enumerate(SWEEP_METRICS):
        axes = figure.add_subplot(1, 3, index + 1)
        for alpha, curve in means.groupby("alpha"):
            y = 1 - curve[metric] if metric == DISTANCE_METRIC else curve[metric]
            axes.plot(curve["value"], y, marker="o", label=f"a={alpha:g}")
        axes.set_xlabel(xlabel)
        axes.set_ylabel(f"1 − {labels[metric]}" if metric == DISTANCE_METRIC else labels[metric], fontsize=8)
        axes.grid(True, alpha=0.3)
    figure.axes[0].legend(fontsize=7)
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    save_figure(figure, path)
