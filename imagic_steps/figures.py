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
                    references: Sequence[ReferenceBand] = (), panels_by: Sequence[str] = (),
                    threshold: float | None = None):
    """The fidelity / text-alignment trade-off of a `summarise` table as a matplotlib Figure.

    x = 1 - mean distance (fidelity to the input), y = mean text alignment; one line per (method, variant),
    ordered by its setting (Imagic's alpha, a baseline's grid value), whose name and range the legend gives. Error
    bars are the pair bootstrap intervals [lo, hi] (asymmetric, drawn as they are: they lie inside the metric's range
    by construction; none with a single pair). Each of `references` (distance levels, drawn at x = 1 - distance) is
    a vertical band over its interquartile range with a dashed line at its median, named in the legend, so a
    curve's fidelity reads against what e.g. another writer's drawing of the same digit scores. `threshold` (the
    text alignment that counts as an edit, config best_alpha.text_min) is a dotted horizontal line. `panels_by` (up
    to two summary columns, e.g. edit kind and model) splits the figure into panels on shared axes: rows by the
    first column's values, columns by the second's. The title names the scorer(s) so random-weight numbers are
    recognisable.

    Points are labelled with their setting where a label fits (`place_point_labels`): each curve's ends first,
    then the points where it crosses `threshold`, then the others; a label that would overlap another label or the
    data (markers, error bars, lines) is left out. The legend sits below the panels, off the data: the figure is
    as much taller as the legend needs (7 x 5 in per panel above it).
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
    names = {curve: _curve_name(curve, summary) for curve in curves}
    figure = new_figure((7 * len(column_values), 5 * len(row_values)), 120)
    grid = figure.subplots(len(row_values), len(column_values), sharex=True, sharey=True, squeeze=False)
    labels = {}
    for i, row_value in enumerate(row_values):
        for j, column_value in enumerate(column_values):
            axes, panel = grid[i][j], summary
            panel_names = []
            for column, value in zip(panels_by, (row_value, column_value)):
                panel = panel[panel[column] == value]
                panel_names.append(f"{column} {value}")
            labels[axes] = _draw_tradeoff(axes, panel, references, colours, names, threshold)
            if panel_names:
                axes.set_title(", ".join(panel_names), fontsize=10)
    scorer_names = ", ".join(sorted(map(str, summary["scorer"].unique())))
    figure.suptitle(f"{title}\nscorer: {scorer_names}", fontsize=10)
    legend_title = "method / variant (setting range)" + (", reference" if references else "")
    if panels_by:  # x labels on the bottom row, one y label for the whole figure
        for axes in grid[-1]:
            axes.set_xlabel(xlabel, fontsize=9)
        figure.supylabel(ylabel, fontsize=10)
    else:
        grid[0][0].set_xlabel(xlabel)
        grid[0][0].set_ylabel(ylabel)
    # one legend (every curve and band of any panel), below the panels
    entries = {}
    for axes in figure.axes:
        for handle, label in zip(*axes.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    columns = min(len(entries), 2 * len(column_values))  # ~3.5 in per legend column: as wide as the panels
    legend_options = dict(title=legend_title, fontsize=8, title_fontsize=9, ncol=columns, loc="lower center",
                          bbox_to_anchor=(0.5, 0.0), bbox_transform=figure.transFigure)
    # a single panel keeps its legend on its axes (axes.get_legend()), placed below it all the same
    owner = figure if panels_by else grid[0][0]
    legend = owner.legend(list(entries.values()), list(entries), **legend_options)
    legend_below(figure, legend)
    for axes, requests in labels.items():
        place_point_labels(axes, requests)
    return figure


def legend_below(figure, legend, pad_inches: float = 0.08) -> None:
    """Make the figure taller by `legend`'s height (a legend anchored at the figure's lower centre) and lay the rest
    out above it, so the legend covers neither data nor axis labels."""
    legend.set_in_layout(False)
    height = legend.get_window_extent(figure.canvas.get_renderer()).height / figure.dpi + 2 * pad_inches
    figure.set_figheight(figure.get_figheight() + height)
    legend.set_bbox_to_anchor((0.5, pad_inches / figure.get_figheight()), transform=figure.transFigure)
    figure.tight_layout(rect=(0, height / figure.get_figheight(), 1, 1))


SETTING_NAMES = {"alpha": "α"}  # a setting column's name in the legend (others: the column, "_" as spaces)


def _curve_name(curve: tuple[str, str], summary: pd.DataFrame) -> str:
    """A curve's legend entry: method / variant, then its setting and the range it covers, e.g. "(α 0–1.2)"."""
    method, variant = curve
    rows = summary[(summary["method"] == method) & (summary["variant"] == variant)]
    for column in SETTING_COLUMNS:
        values = rows[column].dropna()
        if len(values):
            low, high = values.min(), values.max()
            span = f"{low:g}" if low == high else f"{low:g}–{high:g}"
            return f"{method} / {variant} ({SETTING_NAMES.get(column, column.replace('_', ' '))} {span})"
    return f"{method} / {variant}"


@dataclass(frozen=True)
class PointLabel:
    """A label asked for at data point (x, y) of curve `curve`: `rank` orders the requests (lower first: placed
    while there is room)."""

    x: float
    y: float
    text: str
    colour: str
    rank: tuple
    curve: object = None


def _draw_tradeoff(axes, summary: pd.DataFrame, references: Sequence[ReferenceBand],
                   colours: dict[tuple[str, str], str], names: dict[tuple[str, str], str],
                   threshold: float | None) -> list[PointLabel]:
    """One trade-off panel: the reference bands, the threshold, then one line per (method, variant) of `summary`, in
    its colour. Returns the point labels it asks for (placed once the figure is laid out)."""
    for index, band in enumerate(references):
        color, hatch = REFERENCE_STYLES[index % len(REFERENCE_STYLES)]
        axes.axvspan(1.0 - band.q75, 1.0 - band.q25, facecolor=color, edgecolor=color, hatch=hatch, alpha=0.2,
                     lw=0, label=f"{band.label} (median, IQR)")
        axes.axvline(1.0 - band.median, color=color, ls="--", lw=1)
    if threshold is not None:
        axes.axhline(threshold, color="0.2", ls=":", lw=1, label=f"edit threshold ({threshold:g})")
    labels = []
    for index, ((method, variant), curve) in enumerate(summary.groupby(["method", "variant"], sort=True)):
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
        colour = colours[(method, variant)]
        axes.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", capsize=3, label=names[(method, variant)],
                      color=colour)
        labels += [PointLabel(x_i, y_i, text, colour, (priority, order, index), (method, variant))
                   for priority, order, x_i, y_i, text in _curve_labels(curve["setting"].to_numpy(), x, y, threshold)]
    axes.grid(True, alpha=0.3)
    axes.margins(y=0.12)  # headroom above and below the top and bottom rows, where labels of saturated curves go
    return labels


def _curve_labels(settings: np.ndarray, x: np.ndarray, y: np.ndarray, threshold: float | None):
    """(priority, order, x, y, text) of one curve's point labels, sorted by setting. Points at the same place (the
    same mean) share one label ("0–1.2"). Priority 0: the curve's ends, 1: the first point past `threshold` each
    time the curve crosses it, 2: the others; order: how many places the point is from the nearer end, so the
    leftover room goes to the curves in turn, from their ends inwards."""
    finite = np.isfinite(x) & np.isfinite(y)
    settings, x, y = settings[finite], x[finite], y[finite]
    groups: list[list[int]] = []  # runs of consecutive settings at one place
    for i in range(len(settings)):
        if groups and np.isclose(x[i], x[groups[-1][0]], rtol=0, atol=1e-4) and \
                np.isclose(y[i], y[groups[-1][0]], rtol=0, atol=1e-4 * max(1.0, abs(y[i]))):
            groups[-1].append(i)
        else:
            groups.append([i])
    above = None if threshold is None else y >= threshold
    out = []
    for g, members in enumerate(groups):
        first, last = members[0], members[-1]
        text = f"{settings[first]:g}" if first == last else f"{settings[first]:g}–{settings[last]:g}"
        crossing = above is not None and g > 0 and above[first] != above[groups[g - 1][-1]]
        priority = 0 if g in (0, len(groups) - 1) else 1 if crossing else 2
        out.append((priority, min(g, len(groups) - 1 - g), x[first], y[first], text))
    return out


LABEL_FONTSIZE = 8
LABEL_GAP = 2.0  # pixels kept clear between a label and anything else
LABEL_RINGS = 3  # candidate positions at this many distances from the point, LABEL_RING_STEP pixels apart
LABEL_RING_STEP = 7.0


def place_point_labels(axes, labels: Sequence[PointLabel]) -> list:
    """Annotate `axes` with `labels` (in rank order) where each fits: next to its point (right, left, above, below,
    then diagonally; then a little further out) in a box that overlaps no label placed before, no data (markers,
    error bars, lines of `axes`, in display space) and stays inside the axes, nearer its own point than any other
    point of its curve (`PointLabel.curve`; one label per point), so that it reads as that point's. A label with no
    such place is left out. Call it once the figure is laid out: positions are measured in pixels. Returns the
    annotations."""
    figure = axes.figure
    renderer = figure.canvas.get_renderer()
    segments, widths, markers = data_geometry(axes)
    frame = axes.get_window_extent(renderer)
    inner = (frame.x0 + LABEL_GAP, frame.y0 + LABEL_GAP, frame.x1 - LABEL_GAP, frame.y1 - LABEL_GAP)
    # half the largest marker (as data_geometry's boxes): the nearest place for a label clears it by LABEL_GAP
    radius = max(((line.get_markersize() + line.get_markeredgewidth()) * figure.dpi / 72 / 2
                  for line in axes.get_lines() if line.get_marker() not in (None, "None", "", " ")), default=3.0)
    placed: list[tuple[float, float, float, float]] = []
    annotations = []
    points = axes.transData.transform(np.array([(label.x, label.y) for label in labels]).reshape(-1, 2))
    for index in sorted(range(len(labels)), key=lambda index: labels[index].rank):
        label, (px, py) = labels[index], points[index]
        siblings = points[[other != index and labels[other].curve == label.curve for other in range(len(labels))]]
        probe = axes.text(0, 0, label.text, fontsize=LABEL_FONTSIZE, ha="center", va="center")
        extent = probe.get_window_extent(renderer)
        probe.remove()
        half_w, half_h = extent.width / 2, extent.height / 2
        for centre in _candidates(px, py, half_w, half_h, radius + 2 * LABEL_GAP + 0.5):
            box = (centre[0] - half_w, centre[1] - half_h, centre[0] + half_w, centre[1] + half_h)
            if not (inner[0] <= box[0] and box[2] <= inner[2] and inner[1] <= box[1] and box[3] <= inner[3]):
                continue
            if len(siblings) and np.hypot(*(siblings - centre).T).min() <= np.hypot(centre[0] - px, centre[1] - py):
                continue
            grown = (box[0] - LABEL_GAP, box[1] - LABEL_GAP, box[2] + LABEL_GAP, box[3] + LABEL_GAP)
            if any(_boxes_overlap(grown, other) for other in placed) or _boxes_hit(markers, grown) \
                    or _segments_hit(segments, widths, grown):
                continue
            offset = ((centre[0] - px) * 72 / figure.dpi, (centre[1] - py) * 72 / figure.dpi)
            annotations.append(axes.annotate(label.text, (label.x, label.y), xytext=offset,
                                             textcoords="offset points", ha="center", va="center",
                                             fontsize=LABEL_FONTSIZE, color=label.colour))
            placed.append(box)
            break
    return annotations


def _candidates(px: float, py: float, half_w: float, half_h: float, reach: float):
    """Label centres around a point at pixel (px, py), nearest first: E, W, N, S, then the diagonals (the box's
    corner `reach` away along both axes, clear of a square marker box), per ring."""
    for ring in range(LABEL_RINGS):
        r = reach + ring * LABEL_RING_STEP
        yield px + r + half_w, py
        yield px - r - half_w, py
        yield px, py + r + half_h
        yield px, py - r - half_h
        yield px + r + half_w, py + r + half_h
        yield px - r - half_w, py + r + half_h
        yield px + r + half_w, py - r - half_h
        yield px - r - half_w, py - r - half_h


def data_geometry(axes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What `axes` draws as data, in display pixels: line segments (S, 2, 2) with their line widths (S,) (the
    lines of Line2D artists, including reference lines, and line collections such as error bars) and marker boxes
    (M, 4) as (x0, y0, x1, y1) (Line2D markers, including error-bar caps). Non-finite points are left out."""
    scale = axes.figure.dpi / 72
    segments, widths, markers = [], [], []
    for line in axes.get_lines():
        if not line.get_visible():
            continue
        points = line.get_transform().transform(np.asarray(line.get_xydata(), dtype=np.float64))
        if line.get_linestyle() not in ("None", "", " ", "none") and len(points) > 1:
            pairs = np.stack([points[:-1], points[1:]], axis=1)
            segments.append(pairs)
            widths.append(np.full(len(pairs), line.get_linewidth() * scale))
        if line.get_marker() not in (None, "None", "", " ", "none"):
            half = (line.get_markersize() + line.get_markeredgewidth()) * scale / 2
            markers.append(np.hstack([points - half, points + half]))
    for collection in axes.collections:
        if not collection.get_visible() or not hasattr(collection, "get_segments"):
            continue
        transform = collection.get_transform()
        line_widths = np.atleast_1d(collection.get_linewidth())
        for k, segment in enumerate(collection.get_segments()):
            points = transform.transform(np.asarray(segment, dtype=np.float64))
            if len(points) > 1:
                segments.append(np.stack([points[:-1], points[1:]], axis=1))
                widths.append(np.full(len(points) - 1, line_widths[k % len(line_widths)] * scale))
    segments = np.concatenate(segments) if segments else np.zeros((0, 2, 2))
    widths = np.concatenate(widths) if widths else np.zeros(0)
    markers = np.concatenate(markers) if markers else np.zeros((0, 4))
    keep = np.isfinite(segments).all(axis=(1, 2))
    return segments[keep], widths[keep], markers[np.isfinite(markers).all(axis=1)]


def _boxes_overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _boxes_hit(boxes: np.ndarray, box) -> bool:
    return bool(((boxes[:, 0] < box[2]) & (box[0] < boxes[:, 2]) & (boxes[:, 1] < box[3])
                 & (box[1] < boxes[:, 3])).any())


def _segments_hit(segments: np.ndarray, widths: np.ndarray, box) -> bool:
    """Whether any segment, as thick as its width, meets `box` (x0, y0, x1, y1): Liang–Barsky clipping of each
    segment against the box grown by half the segment's width."""
    if not len(segments):
        return False
    half = widths / 2
    x0, y0 = segments[:, 0, 0], segments[:, 0, 1]
    dx, dy = segments[:, 1, 0] - x0, segments[:, 1, 1] - y0
    low, high = np.zeros(len(segments)), np.ones(len(segments))
    inside = np.ones(len(segments), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for p, q in ((-dx, x0 - (box[0] - half)), (dx, box[2] + half - x0),
                     (-dy, y0 - (box[1] - half)), (dy, box[3] + half - y0)):
            parallel = p == 0
            inside &= ~(parallel & (q < 0))
            t = q / np.where(parallel, 1.0, p)
            low = np.where(~parallel & (p < 0), np.maximum(low, t), low)
            high = np.where(~parallel & (p > 0), np.minimum(high, t), high)
    return bool((inside & (low <= high)).any())


def plot_tradeoff(summary: pd.DataFrame, path: str | os.PathLike, title: str, **options) -> None:
    """`tradeoff_figure` saved as PNG at `path` (atomically); `options` are its xlabel, ylabel, references,
    panels_by, threshold."""
    save_figure(tradeoff_figure(summary, title, **options), path)


SWEEP_METRICS = (TEXT_METRIC, DISTANCE_METRIC, "image_similarity")  # one panel each


def sweep_figure(means: pd.DataFrame, title: str, xlabel: str, labels: dict[str, str]):
    """Text alignment, fidelity (1 − distance) and image similarity against a swept parameter, one line per alpha,
    as a matplotlib Figure (10 x 3.6 in, plus the legend's height below the panels, off the data).

    `means`: `stats.sweep_means` of the sweep (columns alpha, value and `SWEEP_METRICS`); `labels` name what each
    metric measures with this scorer (e.g. LPIPS, or the digits' identity distance).
    """
    figure = new_figure((10, 3.6), 110)
    for index, metric in enumerate(SWEEP_METRICS):
        axes = figure.add_subplot(1, 3, index + 1)
        for alpha, curve in means.groupby("alpha"):
            y = 1 - curve[metric] if metric == DISTANCE_METRIC else curve[metric]
            axes.plot(curve["value"], y, marker="o", label=f"α = {alpha:g}")
        axes.set_xlabel(xlabel)
        axes.set_ylabel(f"1 − {labels[metric]}" if metric == DISTANCE_METRIC else labels[metric], fontsize=8)
        axes.grid(True, alpha=0.3)
    handles, names = figure.axes[0].get_legend_handles_labels()
    legend = figure.legend(handles, names, fontsize=8, ncol=min(len(names), 8), loc="lower center",
                           bbox_to_anchor=(0.5, 0.0))
    figure.suptitle(title, fontsize=9)
    legend_below(figure, legend)
    return figure


def plot_sweep(means: pd.DataFrame, path, title: str, xlabel: str, labels: dict[str, str]) -> None:
    """`sweep_figure` saved as PNG at `path` (atomically)."""
    save_figure(sweep_figure(means, title, xlabel, labels), path)
