"""Summary statistics, best-alpha selection, trade-off plots and tables for score tables.

A score table has one row per scored sample with at least the columns pair_id, variant, method
("imagic" or "sdedit"), seed, alpha (SDEdit's strength is stored in alpha), clip_score,
clip_image_sim, lpips, directional_clip and scorer; other columns are ignored.

The unit of replication is the pair: every seed of a pair shares one optimised embedding and one
fine-tuned UNet, so its seeds are not independent evidence. Summaries therefore average the seeds of
each pair first and then treat the pairs as the sample: the mean over pairs, with a 95% percentile
bootstrap interval that resamples pairs with replacement. A percentile interval of a mean lies inside
the range of the pair means, hence inside the metric's own range (e.g. [0, 100] for the digits'
100 * P(target)); with a single pair it is undefined (NaN).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .io import atomic_path

UNIT = "pair_id"  # the unit of replication: seeds are averaged within it, then units are resampled
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed, so every table and figure is reproducible bit for bit
CONFIDENCE = 0.95
TEXT_METRIC = "clip_score"  # text alignment, higher = better (digits: 100 * P(target digit))
DISTANCE_METRIC = "lpips"  # distance to the input, lower = closer (digits: the classifier's identity distance)


def unit_means(table: pd.DataFrame, metric: str, unit: str = UNIT) -> np.ndarray:
    """The seed mean of `metric` for each unit (pair), NaN values ignored; units without a value are left out.

    Returns:
        shape (U,), float64, in the order of the sorted unit ids.
    """
    means = table.groupby(unit, sort=True)[metric].mean().to_numpy(dtype=np.float64)
    return means[~np.isnan(means)]


def bootstrap_mean_interval(
    values: np.ndarray,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float]:
    """Mean of `values` and its percentile bootstrap interval.

    Args:
        values: shape (U,), one value per independent unit (a pair's seed mean); NaN entries are ignored.
        n_resamples: bootstrap resamples; each draws U values with replacement.
        seed: seeds a fresh numpy Generator, so the interval depends only on `values` and `seed`
            (not on what else was computed before).
        confidence: coverage of the two-sided interval, e.g. 0.95 for the 2.5th and 97.5th percentiles.

    Returns:
        (mean, lo, hi); lo and hi are NaN with fewer than two values (no spread to resample), and all
        three are NaN without values. min(values) <= lo <= hi <= max(values) always holds.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if values.size < 2:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    resampled = values[rng.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    lo, hi = np.percentile(resampled, [tail, 100.0 - tail])
    # A mean of values in [min, max] is in [min, max]; the clip only absorbs the last-bit rounding of
    # a floating-point mean, never a statistical overshoot.
    lo, hi = np.clip([lo, hi], values.min(), values.max())
    return mean, float(lo), float(hi)


def _single_scorer(group: pd.DataFrame, key) -> str:
    """The one scorer name of a group; numbers from different scorers must never be averaged."""
    scorers = group["scorer"].unique()
    if len(scorers) != 1:
        raise ValueError(f"group {key} mixes scorers {sorted(map(str, scorers))}")
    return scorers[0]


def _require_columns(table: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise KeyError(f"score table lacks columns {missing}")


def summarise(
    table: pd.DataFrame,
    by: Sequence[str] = ("method", "variant", "alpha"),
    metrics: Sequence[str] = ("clip_score", "lpips", "clip_image_sim"),
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """Per group: the mean over pairs of each pair's seed-mean score, with a 95% pair bootstrap interval.

    Seeds are averaged within each pair first (they share the pair's embedding and fine-tuned UNet),
    then pairs are resampled with replacement (`bootstrap_mean_interval`). Every pair weighs the same,
    however many seeds it has. NaN values are ignored; a pair without any value of a metric is left
    out of that metric (e.g. directional_clip of a pair without a source prompt).

    Returns:
        One row per group, sorted by `by`, with columns by..., n_pairs (pairs in the group), n_seeds
        (distinct seeds in the group), <metric>_mean, <metric>_lo and <metric>_hi for each metric (lo
        and hi NaN with fewer than two pairs), and scorer.

    Raises:
        ValueError: if a group mixes scorers.
    """
    by = list(by)
    _require_columns(table, [*by, UNIT, "seed", *metrics, "scorer"])
    rows = []
    for key, group in table.groupby(by, sort=True, dropna=False):
        row = dict(zip(by, key))
        row["n_pairs"] = group[UNIT].nunique()
        row["n_seeds"] = group["seed"].nunique()
        for metric in metrics:
            row[f"{metric}_mean"], row[f"{metric}_lo"], row[f"{metric}_hi"] = bootstrap_mean_interval(
                unit_means(group, metric), n_resamples=n_resamples, seed=seed)
        row["scorer"] = _single_scorer(group, key)
        rows.append(row)
    columns = [*by, "n_pairs", "n_seeds", *(f"{m}_{stat}" for m in metrics for stat in ("mean", "lo", "hi")), "scorer"]
    return pd.DataFrame(rows, columns=columns)


def pick_best_alpha(
    table: pd.DataFrame,
    text_min: float,
    by: Sequence[str] = ("pair_id", "method", "variant"),
    text: str = TEXT_METRIC,
    distance: str = DISTANCE_METRIC,
) -> pd.DataFrame:
    """Per group (a pair's method and variant): the most faithful alpha among those that achieve the edit.

    Scores are first averaged over seeds for each alpha. An alpha edits when its mean `text` score is at
    least `text_min`; among those, the one with the lowest mean `distance` wins (ties: the smallest
    alpha). A group where no alpha edits gets edited=False and NaN alpha, `text` and `distance`: there is
    no best alpha to report, only the highest text score it reached.

    Returns:
        One row per group with columns by..., edited (bool), alpha, clip_score, lpips (the seed means at
        that alpha; the `text` and `distance` columns), clip_score_max (the highest seed-mean text score
        of any alpha), text_min and scorer.

    Raises:
        ValueError: if a group mixes scorers.
    """
    by = list(by)
    _require_columns(table, [*by, "alpha", text, distance, "scorer"])
    rows = []
    for key, group in table.groupby(by, sort=True, dropna=False):
        per_alpha = group.groupby("alpha", sort=True)[[text, distance]].mean()
        editing = per_alpha[(per_alpha[text] >= text_min) & per_alpha[distance].notna()]
        edited = not editing.empty
        best = editing[distance].idxmin() if edited else None  # first minimum = the smallest alpha
        rows.append(
            {
                **dict(zip(by, key)),
                "edited": edited,
                "alpha": best if edited else np.nan,
                text: per_alpha.at[best, text] if edited else np.nan,
                distance: per_alpha.at[best, distance] if edited else np.nan,
                f"{text}_max": per_alpha[text].max(),
                "text_min": float(text_min),
                "scorer": _single_scorer(group, key),
            }
        )
    columns = [*by, "edited", "alpha", text, distance, f"{text}_max", "text_min", "scorer"]
    return pd.DataFrame(rows, columns=columns)


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
                    references: Sequence[ReferenceBand] = ()) -> Figure:
    """The fidelity / text-alignment trade-off of a `summarise` table as a matplotlib Figure.

    x = 1 - mean LPIPS (fidelity to the input), y = mean CLIP score; one line per (method, variant),
    ordered by alpha, each point labelled with its alpha. Error bars are the pair bootstrap intervals
    [lo, hi] (asymmetric, drawn as they are: they lie inside the metric's range by construction; none
    with a single pair). Each of `references` (distance levels, drawn at x = 1 - distance) is a vertical
    band over its interquartile range with a dashed line at its median, named in the legend, so a curve's
    fidelity reads against what e.g. another writer's drawing of the same digit scores. The title names
    the scorer(s) so random-weight numbers are recognisable.
    """
    _require_columns(summary, ["method", "variant", "alpha", "lpips_mean", "clip_score_mean", "scorer"])
    # A bare Figure on the Agg canvas: no pyplot global state, no display backend needed.
    figure = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for index, band in enumerate(references):
        color, hatch = REFERENCE_STYLES[index % len(REFERENCE_STYLES)]
        axes.axvspan(1.0 - band.q75, 1.0 - band.q25, facecolor=color, edgecolor=color, hatch=hatch, alpha=0.2,
                     lw=0, label=f"{band.label} (median, IQR)")
        axes.axvline(1.0 - band.median, color=color, ls="--", lw=1)
    for (method, variant), curve in summary.groupby(["method", "variant"], sort=True):
        curve = curve.sort_values("alpha")
        lpips_mean = curve["lpips_mean"].to_numpy(dtype=np.float64)
        x = 1.0 - lpips_mean
        y = curve["clip_score_mean"].to_numpy(dtype=np.float64)
        xerr = yerr = None
        if {"lpips_lo", "lpips_hi"} <= set(curve.columns):
            # x = 1 - lpips: the upper lpips bound is the lower fidelity bound, so the two lengths swap.
            xerr = _interval_errors(lpips_mean, curve["lpips_lo"], curve["lpips_hi"])
            xerr = None if xerr is None else xerr[::-1]
        if {"clip_score_lo", "clip_score_hi"} <= set(curve.columns):
            yerr = _interval_errors(y, curve["clip_score_lo"], curve["clip_score_hi"])
        axes.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", capsize=3, label=f"{method} / {variant}")
        for alpha, x_i, y_i in zip(curve["alpha"], x, y):
            axes.annotate(f"{alpha:g}", (x_i, y_i), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    scorer_names = ", ".join(sorted(map(str, summary["scorer"].unique())))
    axes.set_title(f"{title}\nscorer: {scorer_names}", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(title="method / variant" + (", reference" if references else ""), fontsize=8)
    figure.tight_layout()
    return figure


def plot_tradeoff(summary: pd.DataFrame, path: str | os.PathLike, title: str, **options) -> None:
    """`tradeoff_figure` saved as PNG at `path` (atomically); `options` are its xlabel, ylabel, references."""
    figure = tradeoff_figure(summary, title, **options)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def _format_interval(mean: float, lo: float, hi: float, float_digits: int) -> str:
    if not np.isfinite(mean):
        return "n/a"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{mean:.{float_digits}f} [n/a: < 2 pairs]"
    return f"{mean:.{float_digits}f} [{lo:.{float_digits}f}, {hi:.{float_digits}f}]"


def markdown_table(summary: pd.DataFrame, float_digits: int = 3) -> str:
    """Render a `summarise` table as Markdown, each metric as one "mean [lo, hi]" column."""
    metrics = [
        column[: -len("_mean")]
        for column in summary.columns
        if column.endswith("_mean") and {f"{column[: -len('_mean')]}_{b}" for b in ("lo", "hi")} <= set(summary.columns)
    ]
    table = summary.copy()
    for metric in metrics:
        table[f"{metric}_mean"] = [
            _format_interval(mean, lo, hi, float_digits)
            for mean, lo, hi in zip(summary[f"{metric}_mean"], summary[f"{metric}_lo"], summary[f"{metric}_hi"])
        ]
    table = table.drop(columns=[f"{metric}_{bound}" for metric in metrics for bound in ("lo", "hi")])
    table = table.rename(columns={f"{metric}_mean": metric for metric in metrics})
    return table.to_markdown(index=False)
