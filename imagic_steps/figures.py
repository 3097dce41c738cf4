"""The result figures, made from cached samples and scores (no model): pair and overview montages, the best
edits, trade-off, sweep and model-contrast plots, written atomically. They build on `drawing` (matplotlib figures); the
montages are labelled grids of their own (`montage_grid`: a TrueType font, whole-factor nearest-neighbour
enlargement); the numbers they show come from `stats`."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from .drawing import new_figure, save_figure
from .images import load_image
from .io import save_image
from .plan import BASELINES
from .stats import (DISTANCE_METRIC, MODEL_DIFFERENCES, SETTING_COLUMNS, TEXT_METRIC, edit_kinds, edit_setting,
                    method_variants, require_columns)

MIN_CELL = 96  # pixels: a smaller sample (the 32 px digits) is enlarged by the whole factor that reaches this
LABEL_FONT_SIZE = 14  # pixels: every montage text (DejaVu Sans)
GAP = 4  # pixels of white between tiles
PAD = 3  # pixels between a text and the edge of the strip it is written in
MAX_ROW_LABEL = 240  # pixels: a wider row label wraps
TITLE_LINES = 3  # a column title or caption wraps onto at most this many lines, the last cut with an ellipsis
NO_EDIT_GREY = (128, 128, 128)
METHOD_NAMES = {"imagic": "Imagic", "sdedit": "SDEdit", "ledits": "LEDITS++", "ddim_inversion": "DDIM inversion"}
METHOD_ORDER = ("imagic", *BASELINES)  # Imagic's variants first, then each baseline


@functools.lru_cache(maxsize=None)
def label_font(size: int = LABEL_FONT_SIZE, bold: bool = False) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (Bold) at `size` pixels: matplotlib's own copy of the font, so every install has it."""
    import matplotlib  # the package only (no pyplot): a path to its data

    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name), size)


def line_height(font: ImageFont.FreeTypeFont) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent


def text_width(font: ImageFont.FreeTypeFont, text: str) -> int:
    """Pixels from where `text` is drawn to the right edge of its ink."""
    return font.getbbox(text)[2] if text else 0


def _shorten(text: str, font, width: int, cut: bool = False) -> str:
    """`text` if it fits `width` (and not `cut`), else its longest start that fits with an ellipsis ("" if not
    even the ellipsis fits)."""
    if not cut and text_width(font, text) <= width:
        return text
    for end in range(len(text), -1, -1):
        shortened = text[:end].rstrip() + "…"
        if text_width(font, shortened) <= width:
            return shortened
    return ""


def fit_lines(text: str, font, width: int, max_lines: int | None = None) -> list[str]:
    """`text` as lines no wider than `width` pixels: wrapped at spaces, a word too wide for a line after its "_" and
    "-"; a piece too wide even alone is cut with an ellipsis, and so is the last line kept when `max_lines` are not
    enough."""
    pieces = []  # (piece, whether a space precedes it)
    for word in text.split():
        parts = [word] if text_width(font, word) <= width else [p for p in re.split(r"(?<=[_\-])", word) if p]
        pieces += [(part, k == 0) for k, part in enumerate(parts)]
    lines: list[str] = []
    for piece, spaced in pieces:
        candidate = lines[-1] + (" " if spaced else "") + piece if lines else piece
        if lines and text_width(font, candidate) <= width:
            lines[-1] = candidate
        else:
            lines.append(piece)
    lines = [_shorten(line, font, width) for line in lines]
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines]
        if lines:
            lines[-1] = _shorten(lines[-1], font, width, cut=True)
    return [line for line in lines if line]


@dataclass(frozen=True)
class Placeholder:
    """A grey tile with a word in it where a sample is not shown ("no edit", "missing")."""

    text: str


Tile = Union[Image.Image, Placeholder, None]  # None: an empty cell (a shorter row)


@dataclass
class Section:
    """Rows of tiles under one strip of column titles; `corner` is written in the strip above the row labels (e.g.
    the section's method), `captions` (one per tile, "" for none) under each tile."""

    rows: list[list[Tile]] = field(default_factory=list)
    row_labels: list[str] = field(default_factory=list)
    column_titles: Sequence[str] = ()
    corner: str = ""
    captions: list[list[str]] | None = None


@dataclass(frozen=True)
class DrawnText:
    """One line of text as drawn: its ink's box and the slot it had to stay in, (x0, y0, x1, y1) pixels."""

    text: str
    box: tuple[int, int, int, int]
    slot: tuple[int, int, int, int]


@dataclass
class Montage:
    """A drawn montage: the image, every line of text with its box, and the box of each tile's image by (section,
    row, column) (an image's box may be smaller than the cell: a whole-factor enlargement, centred)."""

    image: Image.Image
    texts: list[DrawnText]
    tiles: dict[tuple[int, int, int], tuple[int, int, int, int]]
    cell: int

    def save(self, path) -> None:
        save_image(self.image, path)


def scale_factor(size: int, min_cell: int = MIN_CELL) -> int:
    """The whole factor that enlarges `size` pixels to at least `min_cell` (1 for an image that large)."""
    return max(1, -(-min_cell // size))


def montage_grid(sections: Sequence[Section], title: str = "", min_cell: int = MIN_CELL) -> Montage:
    """`sections` of labelled tiles on white, one under the other, below `title`.

    Every cell is square, the size of the largest image enlarged by `scale_factor`; each image is enlarged by the
    largest whole factor that fits the cell, with nearest-neighbour resampling (no new colours, no blur), and
    centred in it. Texts use `label_font` (the title and the sections' corners in bold); each is fitted to its slot
    (wrapped, or cut with an ellipsis: never drawn over a neighbour). Cells missing from a shorter row stay white.
    """
    font, bold = label_font(), label_font(bold=True)
    lh = max(line_height(font), line_height(bold))
    images = [tile for s in sections for row in s.rows for tile in row if isinstance(tile, Image.Image)]
    cell = max((max(image.size) * scale_factor(max(image.size), min_cell) for image in images), default=min_cell)
    columns = max(len(row) for s in sections for row in s.rows)
    left_texts = [(font, label) for s in sections for label in s.row_labels] + \
        [(bold, s.corner) for s in sections if s.corner]
    label_width = min(MAX_ROW_LABEL, max((text_width(f, t) for f, t in left_texts), default=0)) + 2 * PAD \
        if any(t for _, t in left_texts) else 0
    width = label_width + GAP + columns * (cell + GAP)
    title_lines = fit_lines(title, bold, width - 2 * PAD, TITLE_LINES)

    # first pass: where everything goes (texts as (lines, slot, centred, font, at the bottom of the slot); tiles as
    # (key, tile, box))
    texts, tiles = [], []
    y = PAD + len(title_lines) * lh + 2 * PAD if title_lines else GAP
    if title_lines:
        texts.append((title_lines, (PAD, PAD, width - PAD, PAD + len(title_lines) * lh), False, bold, False))

    def column_x(column: int) -> int:
        return label_width + GAP + column * (cell + GAP)

    for index, section in enumerate(sections):
        if index:
            y += 2 * GAP
        titles = [fit_lines(str(t), font, cell - 2 * PAD, TITLE_LINES) for t in section.column_titles]
        corner = fit_lines(section.corner, bold, label_width - 2 * PAD, TITLE_LINES) if label_width else []
        strip = max([len(lines) for lines in titles] + [len(corner)], default=0)
        if strip:  # the titles stand on the tiles below them
            bottom = y + strip * lh + 2 * PAD
            for column, lines in enumerate(titles):
                texts.append((lines, (column_x(column) + PAD, y + PAD, column_x(column) + cell - PAD, bottom - PAD),
                              True, font, True))
            if corner:
                texts.append((corner, (PAD, y + PAD, label_width - PAD, bottom - PAD), False, bold, True))
            y = bottom
        for r, row in enumerate(section.rows):
            if r < len(section.row_labels) and label_width:
                lines = fit_lines(str(section.row_labels[r]), font, label_width - 2 * PAD,
                                  max(1, (cell - 2 * PAD) // lh))
                texts.append((lines, (PAD, y + PAD, label_width - PAD, y + cell - PAD), False, font, False))
            for c, tile in enumerate(row):
                box = (column_x(c), y, column_x(c) + cell, y + cell)
                tiles.append(((index, r, c), tile, box))
                if isinstance(tile, Placeholder):
                    texts.append((fit_lines(tile.text, font, cell - 2 * PAD, max(1, (cell - 2 * PAD) // lh)),
                                  (box[0] + PAD, box[1] + PAD, box[2] - PAD, box[3] - PAD), True, font, False))
            y += cell
            captions = section.captions[r] if section.captions else []
            fitted = [fit_lines(str(text), font, cell - 2 * PAD, TITLE_LINES) for text in captions]
            lines_below = max((len(lines) for lines in fitted), default=0)
            if lines_below:
                for c, lines in enumerate(fitted):
                    texts.append((lines, (column_x(c) + PAD, y + PAD, column_x(c) + cell - PAD,
                                          y + PAD + lines_below * lh), True, font, False))
                y += lines_below * lh + 2 * PAD
            y += GAP

    # second pass: draw
    canvas = Image.new("RGB", (width, y), "white")
    draw = ImageDraw.Draw(canvas)
    placed = {}
    for key, tile, box in tiles:
        if isinstance(tile, Placeholder):
            draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=NO_EDIT_GREY)
        elif tile is not None:
            image = tile.convert("RGB")
            factor = max(1, cell // max(image.size))
            image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
            x0, y0 = box[0] + (cell - image.width) // 2, box[1] + (cell - image.height) // 2
            canvas.paste(image, (x0, y0))
            placed[key] = (x0, y0, x0 + image.width, y0 + image.height)
    grey = {box for _, tile, box in tiles if isinstance(tile, Placeholder)}
    drawn = []
    for lines, slot, centred, face, at_bottom in texts:
        inside_tile = any(b[0] <= slot[0] and slot[2] <= b[2] and b[1] <= slot[1] and slot[3] <= b[3] for b in grey)
        room = max(0, slot[3] - slot[1] - len(lines) * lh)
        top = slot[1] + (room if at_bottom else room // 2)
        for i, line in enumerate(lines):
            x = slot[0] + (slot[2] - slot[0] - text_width(face, line)) // 2 if centred else slot[0]
            position = (x, top + i * lh)
            draw.text(position, line, font=face, fill="white" if inside_tile else "black")
            drawn.append(DrawnText(line, tuple(draw.textbbox(position, line, font=face)), slot))
    return Montage(canvas, drawn, placed, cell)


SETTING_NAMES = {"alpha": "α"}  # a setting column's name in labels and legends (others: the column, "_" as spaces)


def setting_title(setting: str, value: float) -> str:
    """A setting as a reader sees it: "α 0.6", "strength 0.5", "edit guidance 10"."""
    return f"{SETTING_NAMES.get(setting, setting.replace('_', ' '))} {float(value):g}"


def _read(path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


@dataclass(frozen=True)
class MontageRow:
    """One row of a pair montage: `method` (imagic or a baseline), `name` (the row label's parts before the seed:
    the model label of a several-model run, the variant), `seed`, and the `samples` at each value of `setting` (a
    `SETTING_COLUMNS` name) in `values`, in column order."""

    method: str
    name: Sequence[str]
    seed: int
    setting: str
    values: Sequence[float]
    samples: Sequence[str]


def pair_title(pair_id: str, prompt: str, source_prompt: str = "") -> str:
    """A pair montage's title: its id, then the edit (from the source prompt where the pair has one)."""
    edit = f"“{source_prompt}” → “{prompt}”" if source_prompt else f"edit to “{prompt}”"
    return f"{pair_id}: {edit}"


def pair_montage(input_image: str | Path, rows: Sequence[MontageRow | dict], title: str = "") -> Montage:
    """Every method of a pair side by side: one row per (method run, seed), in the order given (Imagic's variants,
    then each baseline), each the input then the samples along its setting. Consecutive rows of one method and
    setting grid share a strip of column titles ("α 0.6", "strength 0.5"; the method's name above the row
    labels); row labels read "variant · seed 0". The input is resized and centre-cropped to the samples' size, as
    the model saw it."""
    rows = [row if isinstance(row, MontageRow) else MontageRow(**row) for row in rows]
    original = load_image(input_image, _read(rows[0].samples[0]).width)
    sections: list[tuple[tuple, Section]] = []
    for row in rows:
        titles = ("input", *(setting_title(row.setting, value) for value in row.values))
        if not sections or sections[-1][0] != (row.method, titles):
            sections.append(((row.method, titles), Section(column_titles=titles,
                                                           corner=METHOD_NAMES.get(row.method, row.method))))
        section = sections[-1][1]
        section.rows.append([original, *(_read(path) for path in row.samples)])
        section.row_labels.append(" · ".join([*map(str, row.name), f"seed {row.seed}"]))
    return montage_grid([section for _, section in sections], title=title)


def save_pair_montage(path, input_image, rows, title: str = "") -> None:
    pair_montage(input_image, rows, title).save(path)


OVERVIEW_GAP = 16  # pixels between two pairs' montages in the overview, a grey rule in the middle


def stack_vertically(paths: Sequence[str | Path], out_path) -> None:
    """The overview: every pair's montage, one under the other, on white (left-aligned), a rule between them."""
    images = [_read(p) for p in paths]
    height = sum(i.height for i in images) + OVERVIEW_GAP * (len(images) - 1)
    canvas = Image.new("RGB", (max(i.width for i in images), height), "white")
    draw = ImageDraw.Draw(canvas)
    top = 0
    for index, image in enumerate(images):
        if index:
            middle = top - OVERVIEW_GAP // 2
            draw.rectangle((0, middle - 1, canvas.width - 1, middle), fill=(200, 200, 200))
        canvas.paste(image, (0, top))
        top += image.height + OVERVIEW_GAP
    save_image(canvas, out_path)


def _method_variant(method: str, variant: str) -> tuple[str, ...]:
    """A column's name parts: an Imagic variant after "imagic" (but "imagic" once), a baseline's name alone."""
    return (variant,) if variant == method or method != "imagic" else (method, variant)


def _setting_label(pick: pd.Series) -> str:
    """The setting a best-edits row picked, e.g. "α 1" (the first of `SETTING_COLUMNS` it has)."""
    for column in SETTING_COLUMNS:
        if column in pick and pd.notna(pick[column]):
            return setting_title(column, pick[column])
    return ""


def best_edits_montage(best: pd.DataFrame, table: pd.DataFrame, images: dict[str, str], seed: int,
                       keys: Sequence[str] = ()) -> Montage:
    """One row per pair: the input, then each (*keys, method, variant)'s sample at its best setting for `seed`
    (`keys`: facets such as the model label that vary within a pair, one column per value), the setting under it.
    Imagic's variants come first, then the baselines.

    A (pair, *keys, method, variant) without a best setting (edited False in `pick_best_alpha`) gets a grey
    "no edit" tile, or "missing" where the table lacks it entirely.
    """
    group = [*keys, "method", "variant"]
    order = {method: index for index, method in enumerate(METHOD_ORDER)}
    columns = sorted(set(best[group].itertuples(index=False, name=None)),
                     key=lambda c: (c[:len(keys)], order.get(c[-2], len(order)), c[-2], c[-1]))
    pairs = sorted(best["pair_id"].unique())
    seed_rows = table[table["seed"] == seed].assign(setting=edit_setting)
    lookup = seed_rows.set_index(["pair_id", *group, "setting"])["sample"]
    width = _read(seed_rows["sample"].iloc[0]).width
    picks = best.assign(setting=edit_setting).set_index(["pair_id", *group])
    titles = [" · ".join(map(str, (*column[:len(keys)], *_method_variant(*column[-2:])))) for column in columns]
    section = Section(row_labels=list(pairs), corner="pair", captions=[], column_titles=["input", *titles])
    for pair in pairs:
        row, captions = [load_image(images[pair], width)], [""]
        for column in columns:
            if (pair, *column) not in picks.index:
                row.append(Placeholder("missing"))
                captions.append("")
            elif not bool(picks.at[(pair, *column), "edited"]):
                row.append(Placeholder("no edit"))
                captions.append("")
            else:
                pick = picks.loc[(pair, *column)]
                row.append(_read(lookup[(pair, *column, pick["setting"])]))
                captions.append(_setting_label(pick))
        section.rows.append(row)
        section.captions.append(captions)
    return montage_grid([section], title=f"best edits: each method at its most faithful setting that edits "
                                         f"(seed {seed})")


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


FIGURE_DPI = 120
PANEL_SIZE = (3.0, 2.4)  # inches per trade-off panel (plus its share of the labels, title and legend)
PANELS_PER_ROW = 4  # without facets, the trade-off's panels wrap into rows of this many
PANEL_W_PAD = 2.0  # font sizes between two panels side by side (one panel's last x tick label, the next one's first)
OTHERS_GREY = "0.78"  # the other curves of a panel, behind the focal one
OTHERS_LABEL = "other methods (for comparison)"
COMPARISON_GID = "comparison"  # the gid of those grey curves: background, which a point label may cross
# One colour per (method, variant), the same in the trade-off and the best-settings figure: tab10 without its grey
# (the other curves' colour).
CURVE_COLOURS = tuple(f"C{index}" for index in range(10) if index != 7)
DEFAULT_XLABEL = "1 − LPIPS (fidelity to input, unitless; higher = closer)"
DEFAULT_YLABEL = "CLIP score (100 · cosine; higher = better text alignment)"


def curve_colours(curves) -> dict[tuple[str, str], str]:
    """(method, variant) -> its colour, in sorted order."""
    return {curve: CURVE_COLOURS[index % len(CURVE_COLOURS)] for index, curve in enumerate(sorted(set(curves)))}


def facet_combinations(frame: pd.DataFrame, panels_by: Sequence[str]) -> list[tuple]:
    """The value combinations of the `panels_by` columns that `frame` holds, sorted ([()] without facets)."""
    return sorted(set(frame[list(panels_by)].itertuples(index=False, name=None))) if panels_by else [()]


def facet_rows(frame: pd.DataFrame, panels_by: Sequence[str], values: tuple) -> pd.DataFrame:
    for column, value in zip(panels_by, values):
        frame = frame[frame[column] == value]
    return frame


def facet_title(panels_by: Sequence[str], values: tuple) -> str:
    """A facet combination as a reader sees it: "model latent · edit_kind attribute"."""
    return " · ".join(f"{column} {value}" for column, value in zip(panels_by, values))


def _wrap(text: str, inches: float, fontsize: float) -> str:
    """`text` with each of its lines wrapped at spaces to at most `inches` wide at `fontsize` points (measured in
    matplotlib's default font; a single word wider than that stays whole)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    measure, font = TextToPath(), FontProperties(size=fontsize)

    def width(line: str) -> float:
        return measure.get_text_width_height_descent(line, font, ismath=False)[0] / 72

    lines = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            if line and width(f"{line} {word}") > inches:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return "\n".join(lines)


def _draw_references(axes, references: Sequence[ReferenceBand], threshold: float | None) -> None:
    """The reference bands (grey, hatched: over the interquartile range of 1 − distance, a dashed line at the
    median) and the edit threshold (a dotted horizontal line)."""
    for index, band in enumerate(references):
        color, hatch = REFERENCE_STYLES[index % len(REFERENCE_STYLES)]
        axes.axvspan(1.0 - band.q75, 1.0 - band.q25, facecolor=color, edgecolor=color, hatch=hatch, alpha=0.2,
                     lw=0, label=f"{band.label} (median, IQR)", zorder=0)
        axes.axvline(1.0 - band.median, color=color, ls="--", lw=1, zorder=0.5)
    if threshold is not None:
        axes.axhline(threshold, color="0.2", ls=":", lw=1, label=f"edit threshold ({threshold:g})", zorder=0.5)


def _reference_handles(references: Sequence[ReferenceBand], threshold: float | None) -> list:
    """Legend entries for what `_draw_references` draws."""
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = []
    if threshold is not None:
        handles.append(Line2D([], [], color="0.2", ls=":", lw=1, label=f"edit threshold ({threshold:g})"))
    for index, band in enumerate(references):
        color, hatch = REFERENCE_STYLES[index % len(REFERENCE_STYLES)]
        handles.append(Patch(facecolor=to_rgba(color, 0.2), edgecolor=color, hatch=hatch, lw=0,
                             label=f"{band.label} (median, IQR)"))
    return handles


def _curve_points(curve: pd.DataFrame):
    """One curve's settings, x = 1 − mean distance, y = mean text alignment, in setting order, and their error
    bars (2, N) (None where the summary has no interval)."""
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
    return curve["setting"].to_numpy(), x, y, xerr, yerr


def tradeoff_figure(summary: pd.DataFrame, title: str, xlabel: str = DEFAULT_XLABEL, ylabel: str = DEFAULT_YLABEL,
                    references: Sequence[ReferenceBand] = (), panels_by: Sequence[str] = (),
                    threshold: float | None = None):
    """The fidelity / text-alignment trade-off of a `summarise` table as a matplotlib Figure of small multiples:
    one panel per (method, variant) curve.

    x = 1 - mean distance (fidelity to the input), y = mean text alignment, along the curve's setting (Imagic's
    alpha, a baseline's grid value). Each panel is titled with its curve's name and setting range (`_curve_name`)
    and draws that curve in its colour (`curve_colours`) with its error bars, the pair bootstrap intervals [lo, hi]
    (asymmetric, drawn as they are; none with a single pair), and its points labelled with their setting where a
    label fits (`place_point_labels`: the ends first, then where the curve crosses `threshold`, then the others;
    never over another label or the data). Behind it, thin and light grey with no markers, bars or labels, the other
    curves of the same facet combination, for comparison. Every panel has `references` (distance levels, drawn at
    x = 1 - distance: a band over the interquartile range, a dashed line at the median) and `threshold` (the text
    alignment that counts as an edit, config best_alpha.text_min: a dotted line). Axes are shared; one legend below
    the panels names the bands, the threshold and the grey curves.

    Without `panels_by` the panels wrap into rows of `PANELS_PER_ROW` (the spare axes removed). With `panels_by`
    (up to two summary columns, e.g. the model label and the edit kind) there is one row per curve and one column
    per facet value combination, named above the top row; a curve a combination lacks (LEDITS++ on a pixel model)
    gets a "not run here" panel. Panels are `PANEL_SIZE`; the title names the scorer(s) so random-weight numbers
    are recognisable.
    """
    from matplotlib.lines import Line2D

    panels_by = list(panels_by)
    if len(panels_by) > 2:
        raise ValueError(f"at most two facets, got {panels_by}")
    require_columns(summary, [*panels_by, "method", "variant", *SETTING_COLUMNS, f"{DISTANCE_METRIC}_mean",
                              f"{TEXT_METRIC}_mean", "scorer"])
    curves = sorted(summary.groupby(["method", "variant"]).groups)
    colours = curve_colours(curves)
    names = {curve: _curve_name(curve, summary) for curve in curves}
    combinations = facet_combinations(summary, panels_by)
    if panels_by:  # a row per curve, a column per facet combination
        rows, columns = len(curves), len(combinations)
        cells = {(curve, values): (i, j) for i, curve in enumerate(curves) for j, values in enumerate(combinations)}
    else:
        columns = min(PANELS_PER_ROW, len(curves))
        rows = -(-len(curves) // columns)
        cells = {(curve, ()): divmod(k, columns) for k, curve in enumerate(curves)}
    figure = new_figure((PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), FIGURE_DPI)
    grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    labels = {}
    for (curve, values), (i, j) in cells.items():
        axes, panel = grid[i][j], facet_rows(summary, panels_by, values)
        axes.set_title(names[curve], fontsize=8)
        focal = panel[(panel["method"] == curve[0]) & (panel["variant"] == curve[1])]
        if focal.empty:
            axes.text(0.5, 0.5, "not run here", transform=axes.transAxes, ha="center", va="center", fontsize=8,
                      color="0.35")
            continue
        _draw_references(axes, references, threshold)
        for other, other_rows in panel.groupby(["method", "variant"], sort=True):
            if other != curve:
                _, x, y, _, _ = _curve_points(other_rows)
                axes.plot(x, y, color=OTHERS_GREY, lw=0.9, zorder=1, label=OTHERS_LABEL, gid=COMPARISON_GID)
        settings, x, y, xerr, yerr = _curve_points(focal)
        axes.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", markersize=4.5, capsize=2.5, lw=1.3, elinewidth=1,
                      color=colours[curve], zorder=3, label=names[curve])
        axes.grid(True, alpha=0.3)
        axes.margins(y=0.12)  # headroom above and below the top and bottom rows, where labels of saturated curves go
        labels[axes] = [PointLabel(x_i, y_i, text, colours[curve], (priority, order), curve)
                        for priority, order, x_i, y_i, text in _curve_labels(settings, x, y, threshold)]
    used = set(cells.values())
    for i in range(rows):
        for j in range(columns):
            if (i, j) not in used:  # a spare cell of the last row: the panel above it shows the x tick labels
                grid[i][j].remove()
                grid[i - 1][j].xaxis.set_tick_params(labelbottom=True)
    scorer_names = ", ".join(sorted(map(str, summary["scorer"].unique())))
    width = figure.get_figwidth()
    figure.suptitle(_wrap(f"{title}\nscorer: {scorer_names}", width - 0.3, 10), fontsize=10)
    xlabel = _wrap(xlabel, width - 1.0, 9)
    figure.supxlabel(xlabel, fontsize=9)
    # 0.1 inch from the left edge: the default, a fraction of the width, lands on the tick labels of a wide figure
    figure.supylabel(_wrap(ylabel, figure.get_figheight() - 0.6, 9), fontsize=9, x=0.1 / width)
    intervals = any(summary.get(f"{metric}_{end}", pd.Series(dtype=float)).notna().any()
                    for metric in (DISTANCE_METRIC, TEXT_METRIC) for end in ("lo", "hi"))
    handles = [Line2D([], [], color="0.25", marker="o", markersize=4.5, lw=1.3,
                      label=f"the panel's method / variant: mean{', 95 % interval' if intervals else ''}; "
                            "numbers: its setting"),
               Line2D([], [], color=OTHERS_GREY, lw=0.9, label=OTHERS_LABEL),
               *_reference_handles(references, threshold)]
    figure.tight_layout(w_pad=PANEL_W_PAD)
    _fit_titles(figure)
    headers = [_column_header(facet_title(panels_by, values)) for values in combinations] if panels_by else []
    header_lines = max((header.count("\n") + 1 for header in headers), default=0)
    legend_below(figure, figure_legend(figure, handles), top_inches=0.3 * header_lines, w_pad=PANEL_W_PAD)
    _xlabel_under_axes(figure, xlabel)
    if headers:  # above the top row's titles
        renderer = figure.canvas.get_renderer()
        top = max(axes.get_tightbbox(renderer).y1 for axes in grid[0])
        for axes, header in zip(grid[0], headers):
            box = axes.get_position()
            figure.text((box.x0 + box.x1) / 2, (top + 6) / figure.bbox.height, header, ha="center", va="bottom",
                        fontsize=9, fontweight="bold")
    for axes, requests in labels.items():
        place_point_labels(axes, requests)
    return figure


def _column_header(header: str) -> str:
    """A facet header that fits over one trade-off panel (bold, 9 pt): one facet per line where both do not fit on
    one ("model latent_t5_seed1\nedit_kind attribute"), each line wrapped at spaces."""
    room = PANEL_SIZE[0] - 0.5  # the bold font is wider than the regular one _wrap measures
    if _wrap(header, room, 9) == header:
        return header
    return _wrap(header.replace(" · ", "\n"), room, 9)


def _fit_titles(figure) -> None:
    """Break an axes title wider than its axes before its setting range ("name\\n(α 0–1.2)"), then lay out again."""
    renderer = figure.canvas.get_renderer()
    changed = False
    for axes in figure.axes:
        text = axes.title.get_text()
        if " (" in text and "\n" not in text and \
                axes.title.get_window_extent(renderer).width > axes.get_window_extent(renderer).width:
            axes.set_title(text.replace(" (", "\n(", 1), fontsize=axes.title.get_fontsize())
            changed = True
    if changed:
        figure.tight_layout(w_pad=PANEL_W_PAD)


def figure_legend(figure, handles: Sequence, fontsize: float = 8):
    """A figure legend of `handles` at the lower centre, in as many columns as fit the figure's width."""
    renderer = figure.canvas.get_renderer()
    for columns in range(len(handles), 0, -1):
        legend = figure.legend(handles=list(handles), fontsize=fontsize, ncol=columns, loc="lower center",
                               bbox_to_anchor=(0.5, 0.0), bbox_transform=figure.transFigure)
        if columns == 1 or legend.get_window_extent(renderer).width <= figure.bbox.width - 0.2 * figure.dpi:
            return legend
        legend.remove()


def _xlabel_under_axes(figure, xlabel: str) -> None:
    """`xlabel` as the figure's x label, just under the lowest tick labels (in the room the layout kept for it)."""
    renderer = figure.canvas.get_renderer()
    below = min(axes.get_tightbbox(renderer).y0 for axes in figure.axes)
    figure.supxlabel(xlabel, fontsize=9, y=(below - 4) / figure.bbox.height, va="top")


def legend_below(figure, legend, pad_inches: float = 0.08, top_inches: float = 0.0, **layout) -> None:
    """Make the figure taller by `legend`'s height (a legend anchored at the figure's lower centre) and by
    `top_inches` (a strip kept free under the title), and lay the rest out in between (`layout`: more
    `tight_layout` options), so the legend covers neither data nor axis labels."""
    legend.set_in_layout(False)
    height = legend.get_window_extent(figure.canvas.get_renderer()).height / figure.dpi + 2 * pad_inches
    figure.set_figheight(figure.get_figheight() + height + top_inches)
    # a title sits at a fraction of the height (0.98): on a tall figure that is lower than the margin tight_layout
    # keeps for it, over the top panels' titles; keep it 0.1 inch from the top instead
    if figure._suptitle is not None:
        figure._suptitle.set_y(1 - 0.1 / figure.get_figheight())
    legend.set_bbox_to_anchor((0.5, pad_inches / figure.get_figheight()), transform=figure.transFigure)
    figure.tight_layout(rect=(0, height / figure.get_figheight(), 1, 1 - top_inches / figure.get_figheight()),
                        **layout)


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
# White under a label's text, so that it reads where it crosses a grey comparison curve; its pad stays inside
# LABEL_GAP (0.1 of the 8 pt font: ~1.3 px at 120 dpi).
LABEL_BOX = dict(boxstyle="square,pad=0.1", facecolor="white", edgecolor="none", alpha=0.85)


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
                                             fontsize=LABEL_FONTSIZE, color=label.colour,
                                             bbox=LABEL_BOX))
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
    (M, 4) as (x0, y0, x1, y1) (Line2D markers, including error-bar caps). Non-finite points are left out, and so
    are the grey comparison curves (gid `COMPARISON_GID`): background, which a label may cross on its white box."""
    scale = axes.figure.dpi / 72
    segments, widths, markers = [], [], []
    for line in axes.get_lines():
        if not line.get_visible() or line.get_gid() == COMPARISON_GID:
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


BEST_ROW_HEIGHT = 0.3  # inches per method row of the best-settings figure
BEST_PANEL_WIDTH = 3.2  # inches of x axis per panel of it
BEST_PANELS_PER_ROW = 3  # with one facet, its panels wrap into rows of this many
BEST_MIN_WIDTH = 8.0  # inches: room for the title's lines beside a single panel


def _measure_name(ylabel: str) -> str:
    """What a trade-off's y label measures, without its "(... higher = ...)" note or its ": what ..." gloss:
    "100 · P(target digit)"."""
    return re.sub(r"\s*\([^()]*higher[^()]*\)\s*$", "", ylabel).split(": ")[0] or "text alignment"


def _pairs(n: int) -> str:
    return f"{n} pair" if n == 1 else f"{n} pairs"


def best_settings_figure(best: pd.DataFrame, xlabel: str = DEFAULT_XLABEL, ylabel: str = DEFAULT_YLABEL,
                         references: Sequence[ReferenceBand] = (), panels_by: Sequence[str] = (),
                         threshold: float | None = None):
    """Which method keeps the input best while making the edit: a `stats.summarise_best` table as a matplotlib
    Figure, to read before the trade-off curves.

    One row per (method, variant), most faithful first: a dot at its fidelity, 1 − the mean distance over the pairs
    it edits, each at its most faithful setting that edits (text alignment >= `threshold`, config
    best_alpha.text_min), with the 95 % pair bootstrap interval (1 − distance_hi, 1 − distance_lo; none from a single
    edited pair), in the curve's colour of the trade-off (`curve_colours`); at the right of the row "edits
    n_edited / n_pairs pairs". A row that edits no pair keeps its place and text, with no dot; behind, the same
    `references` bands as the trade-off. `panels_by` (up to two columns, the trade-off's facets) gives one panel per
    value combination, rows by the first facet's values and columns by the second's (one facet: rows of up to
    `BEST_PANELS_PER_ROW`), on a shared x axis, with the rows aligned: sorted by the mean fidelity over the panels
    where the method edits, and "not run" where a panel lacks the method. `xlabel` names the fidelity, `ylabel`
    (the trade-off's) what an edit must reach; the title says what the figure shows, n and the threshold.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    panels_by = list(panels_by)
    if len(panels_by) > 2:
        raise ValueError(f"at most two facets, got {panels_by}")
    mean, lo, hi = (f"{DISTANCE_METRIC}_{end}" for end in ("mean", "lo", "hi"))
    require_columns(best, [*panels_by, "method", "variant", "n_pairs", "n_edited", mean])
    curves = sorted(best.groupby(["method", "variant"]).groups)
    colours = curve_colours(curves)
    fidelity = (1.0 - best[mean].astype(float)).groupby([best["method"], best["variant"]]).mean()
    order = sorted(curves, key=lambda curve: (0, -fidelity[curve], curve) if np.isfinite(fidelity[curve])
                   else (1, 0.0, curve))
    combinations = facet_combinations(best, panels_by)
    if len(panels_by) == 2:
        row_values = sorted({values[0] for values in combinations})
        column_values = sorted({values[1] for values in combinations})
        cells = {values: (row_values.index(values[0]), column_values.index(values[1])) for values in combinations}
        rows, columns = len(row_values), len(column_values)
    else:
        columns = min(BEST_PANELS_PER_ROW, len(combinations))
        rows = -(-len(combinations) // columns)
        cells = {values: divmod(k, columns) for k, values in enumerate(combinations)}
    panel_height = len(order) * BEST_ROW_HEIGHT + 0.5
    figure = new_figure((max(BEST_MIN_WIDTH, 2.2 + columns * (BEST_PANEL_WIDTH + 1.3)), rows * panel_height + 1.0),
                        FIGURE_DPI)
    grid = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)
    positions = np.arange(len(order))
    ends = [1.0 - value for band in references for value in (band.q75, band.q25)]
    for values, (i, j) in cells.items():
        axes, panel = grid[i][j], facet_rows(best, panels_by, values)
        _draw_references(axes, references, None)
        counts = []
        for position, curve in zip(positions, order):
            found = panel[(panel["method"] == curve[0]) & (panel["variant"] == curve[1])]
            if found.empty:
                counts.append("not run")
                continue
            row = found.iloc[0]
            counts.append(f"edits {int(row['n_edited'])} / {_pairs(int(row['n_pairs']))}")
            if not np.isfinite(float(row[mean])):
                continue
            errors = None
            if lo in row and hi in row:  # x = 1 - distance: the upper distance bound is the lower fidelity bound
                errors = _interval_errors([row[mean]], [row[lo]], [row[hi]])
                errors = None if errors is None else errors[::-1]
                ends += [1.0 - float(row[end]) for end in (lo, hi) if np.isfinite(float(row[end]))]
            ends.append(1.0 - float(row[mean]))
            axes.errorbar([1.0 - float(row[mean])], [position], xerr=errors, marker="o", markersize=6, capsize=3,
                          lw=1.5, color=colours[curve], zorder=3)
        axes.set_yticks(positions, [f"{method} / {variant}" for method, variant in order])
        axes.tick_params(axis="y", length=0, labelsize=8)
        axes.tick_params(axis="x", labelsize=8)
        axes.xaxis.set_major_locator(MaxNLocator(nbins=6))
        right = axes.secondary_yaxis("right")
        right.set_yticks(positions, counts)
        right.tick_params(length=0, labelsize=8)
        axes.set_ylim(len(order) - 0.5, -0.5)  # the most faithful row at the top
        axes.grid(True, alpha=0.3)
        if panels_by:
            axes.set_title(facet_title(panels_by, values), fontsize=9)
    used = set(cells.values())
    for i in range(rows):
        for j in range(columns):
            if (i, j) not in used:
                grid[i][j].remove()
                grid[i - 1][j].xaxis.set_tick_params(labelbottom=True)
    low, high = (min(ends), max(ends)) if ends else (0.0, 1.0)
    half = max(high - low, 0.2) / 2 * 1.1  # at least 0.2 wide, 5 % to spare on each side
    centre = (low + high) / 2
    grid[0][0].set_xlim(max(0.0, centre - half), min(1.0, centre + half))  # fidelity lies in [0, 1]
    edit = f"{_measure_name(ylabel)} ≥ {threshold:g}" if threshold is not None else "the edit threshold"
    n = sorted({int(value) for value in best["n_pairs"]})
    pairs = f"n = {_pairs(n[0])}" if len(n) == 1 else f"n = {n[0]}–{n[-1]} pairs{' per panel' if panels_by else ''}"
    scorers = ", ".join(sorted(map(str, best["scorer"].unique()))) if "scorer" in best else ""
    width = figure.get_figwidth()
    lines = ["Which method keeps the input best while making the edit?",
             f"Fidelity to the input at each pair's most faithful setting that edits ({edit}),",
             f"mean over the pairs edited with its 95 % pair-bootstrap interval; {pairs}; most faithful first"
             + (" (mean over the panels)" if len(combinations) > 1 else ""),
             *([f"scorer: {scorers}"] if scorers else [])]
    figure.suptitle(_wrap("\n".join(lines), width - 0.3, 10), fontsize=10)
    xlabel = _wrap(xlabel, width - 1.0, 9)
    figure.supxlabel(xlabel, fontsize=9)
    handles = [Line2D([], [], color="0.25", marker="o", markersize=6, lw=1.5,
                      label="mean over the edited pairs, 95 % pair-bootstrap interval"),
               *_reference_handles(references, None)]
    figure.tight_layout()
    legend_below(figure, figure_legend(figure, handles))
    _xlabel_under_axes(figure, xlabel)
    return figure


def plot_best_settings(best: pd.DataFrame, path: str | os.PathLike, **options) -> None:
    """`best_settings_figure` saved as PNG at `path` (atomically); `options` are its xlabel, ylabel, references,
    panels_by, threshold (the trade-off's options)."""
    save_figure(best_settings_figure(best, **options), path)


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


CONTRAST_PANEL_WIDTH = 2.1  # inches of x axis per panel of the model-contrasts figure
CONTRAST_DIFFERENCES = dict(zip(MODEL_DIFFERENCES, ("share of pairs edited", "fidelity, pairs both edit")))


def contrasts_figure(contrasts: pd.DataFrame):
    """Paired model contrasts (`model_comparison.model_contrasts`' table) as a forest plot, a matplotlib Figure.

    One row of panels per contrast ("A − B", in the table's order; under it the factor it varies, where the table
    says), one column per edit kind and difference: the
    share of pairs edited (A − B, in [-1, 1]) and the fidelity (1 − identity distance) over the pairs both models
    edit. In each panel a row per method / variant (the best-settings figure's colours): a dot at the mean
    difference over pairs with its 95 % pair-bootstrap interval, a dashed line at 0 (no difference), "n/a" where the
    two models share no edited pair and "—" where one lacks the method. Right of 0: A edits more often, or more
    faithfully. Each difference keeps one x range down its column, so the panels compare at a glance.
    """
    require_columns(contrasts, ["contrast", "method", "variant", "n_pairs", "n_both_edited",
                                *(f"{d}_{s}" for d in CONTRAST_DIFFERENCES for s in ("mean", "lo", "hi"))])
    names = list(dict.fromkeys(contrasts["contrast"]))
    curves = method_variants(contrasts)
    colours = curve_colours(curves)
    columns = [(kind, difference) for kind in edit_kinds(contrasts) for difference in CONTRAST_DIFFERENCES]
    panel_height = len(curves) * BEST_ROW_HEIGHT + 0.45
    figure = new_figure((1.9 + len(columns) * (CONTRAST_PANEL_WIDTH + 0.25), len(names) * panel_height + 1.2),
                        FIGURE_DPI)
    grid = figure.subplots(len(names), len(columns), sharey=True, squeeze=False)
    positions = np.arange(len(curves))
    reach = {difference: 0.05 for difference in CONTRAST_DIFFERENCES}
    for i, name in enumerate(names):
        contrast = contrasts[contrasts["contrast"] == name]
        for j, (kind, difference) in enumerate(columns):
            axes = grid[i][j]
            rows = contrast if kind is None else contrast[contrast["edit_kind"] == kind]
            axes.axvline(0.0, color="0.35", ls="--", lw=1, zorder=1)
            for position, curve in zip(positions, curves):
                found = rows[(rows["method"] == curve[0]) & (rows["variant"] == curve[1])]
                mean = float(found.iloc[0][f"{difference}_mean"]) if not found.empty else float("nan")
                if not np.isfinite(mean):
                    axes.annotate("—" if found.empty else "n/a", (0.02, position), xycoords=("axes fraction", "data"),
                                  va="center", fontsize=7, color="0.4")
                    continue
                lo, hi = (float(found.iloc[0][f"{difference}_{end}"]) for end in ("lo", "hi"))
                errors = _interval_errors([mean], [lo], [hi])
                reach[difference] = max(reach[difference], *(abs(v) for v in (mean, lo, hi) if np.isfinite(v)))
                axes.errorbar([mean], [position], xerr=errors, marker="o", markersize=5, capsize=2.5, lw=1.4,
                              color=colours[curve], zorder=3)
            axes.set_ylim(len(curves) - 0.5, -0.5)
            axes.set_yticks(positions, [f"{m} / {v}" if m == "imagic" else METHOD_NAMES.get(m, m) for m, v in curves])
            axes.tick_params(axis="y", length=0, labelsize=8)
            axes.tick_params(axis="x", labelsize=7)
            axes.grid(True, axis="x", alpha=0.3)
            if i == 0:
                axes.set_title(f"{kind + ': ' if kind else ''}{CONTRAST_DIFFERENCES[difference]}", fontsize=8.5,
                               fontweight="bold")
            if j == 0:
                varies = rows["varies"].fillna("").iloc[0] if "varies" in rows and len(rows) else ""
                # "A −" and "B" on lines of their own: a long label ("latent_t5 − latent_t5_seed1") stays within
                # its row of panels instead of running into the next row's
                label = name.replace(" − ", " −\n") + (f"\n({varies})" if varies else "")
                axes.set_ylabel(label, fontsize=9, fontweight="bold")
    for j, (_, difference) in enumerate(columns):
        # a share difference lies in [-1, 1]: a little room past the ends keeps a dot at -1 or 1 whole
        half = min(1.08, reach[difference] * 1.1) if difference == "edited_diff" else reach[difference] * 1.15
        for i in range(len(names)):
            grid[i][j].set_xlim(-half, half)
    n = sorted({int(value) for value in contrasts["n_pairs"]})
    pairs = f"n = {_pairs(n[0])}" if len(n) == 1 else f"n = {n[0]}–{n[-1]} pairs"
    title = ("Paired model contrasts, model A − model B on the same pairs (right of 0: A edits more often, or more "
             f"faithfully); mean over pairs with its 95 % pair-bootstrap interval; {pairs} per edit kind; fidelity "
             "over the pairs both models edit (n/a: none; —: a model lacks the method)")
    figure.suptitle(_wrap(title, figure.get_figwidth() - 1.2, 10), fontsize=10)
    figure.supxlabel("difference, model A − model B", fontsize=9)
    figure.tight_layout(w_pad=PANEL_W_PAD)
    # tight_layout leaves the title touching the top panels' titles: keep 0.12 inch between them
    figure.subplots_adjust(top=figure.subplotpars.top - 0.12 / figure.get_figheight())
    return figure


def plot_contrasts(contrasts: pd.DataFrame, path: str | os.PathLike) -> None:
    """`contrasts_figure` saved as PNG at `path` (atomically)."""
    save_figure(contrasts_figure(contrasts), path)
