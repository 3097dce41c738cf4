"""Summary statistics, best-alpha selection, trade-off plots and tables for score tables.

A score table has one row per scored sample with at least the columns pair_id, variant, method
("imagic" or "sdedit"), seed, alpha (SDEdit's strength is stored in alpha), clip_score,
clip_image_sim, lpips, directional_clip and scorer; other columns are ignored.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from .io import atomic_path


def mean_ci95(values: np.ndarray) -> tuple[float, float, int]:
    """Mean and half-width of the two-sided 95% Student-t confidence interval.

    Args:
        values: shape (N,); NaN entries are ignored (e.g. directional_clip without a source prompt).

    Returns:
        (mean, half_width, n) with n the number of non-NaN values; the half-width is NaN when
        n < 2 and the mean is NaN when n == 0.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[~np.isnan(values)]
    n = int(values.size)
    if n == 0:
        return float("nan"), float("nan"), 0
    mean = float(values.mean())
    if n < 2:
        return mean, float("nan"), n
    half_width = scipy_stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return mean, float(half_width), n


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
) -> pd.DataFrame:
    """Mean and 95% CI half-width of each metric per group.

    Returns:
        One row per group, sorted by `by`, with columns by..., n (rows in the group),
        <metric>_mean and <metric>_ci95 for each metric (NaN values ignored), and scorer.

    Raises:
        ValueError: if a group mixes scorers.
    """
    by = list(by)
    _require_columns(table, [*by, *metrics, "scorer"])
    rows = []
    for key, group in table.groupby(by, sort=True, dropna=False):
        row = dict(zip(by, key))
        row["n"] = len(group)
        for metric in metrics:
            row[f"{metric}_mean"], row[f"{metric}_ci95"], _ = mean_ci95(group[metric].to_numpy())
        row["scorer"] = _single_scorer(group, key)
        rows.append(row)
    columns = [*by, "n", *(f"{m}_{stat}" for m in metrics for stat in ("mean", "ci95")), "scorer"]
    return pd.DataFrame(rows, columns=columns)


def pick_best_alpha(
    table: pd.DataFrame,
    lpips_max: float = 0.6,
    by: Sequence[str] = ("pair_id", "method", "variant"),
) -> pd.DataFrame:
    """Per group, the alpha with the best text alignment that still stays close to the input.

    Scores are first averaged over seeds for each alpha. Among alphas whose mean lpips is
    <= `lpips_max`, the one with the highest mean clip_score wins (ties: the smallest alpha); if
    none qualifies, the alpha with the lowest mean lpips is returned with qualified=False.

    Returns:
        One row per group with columns by..., alpha, clip_score, lpips (the seed means at that
        alpha), qualified (bool) and scorer.

    Raises:
        ValueError: if a group mixes scorers.
    """
    by = list(by)
    _require_columns(table, [*by, "alpha", "clip_score", "lpips", "scorer"])
    rows = []
    for key, group in table.groupby(by, sort=True, dropna=False):
        per_alpha = group.groupby("alpha", sort=True)[["clip_score", "lpips"]].mean()
        candidates = per_alpha[per_alpha["lpips"] <= lpips_max]
        qualified = not candidates.empty
        best_alpha = candidates["clip_score"].idxmax() if qualified else per_alpha["lpips"].idxmin()
        rows.append(
            {
                **dict(zip(by, key)),
                "alpha": best_alpha,
                "clip_score": per_alpha.at[best_alpha, "clip_score"],
                "lpips": per_alpha.at[best_alpha, "lpips"],
                "qualified": qualified,
                "scorer": _single_scorer(group, key),
            }
        )
    return pd.DataFrame(rows, columns=[*by, "alpha", "clip_score", "lpips", "qualified", "scorer"])


def _finite_or_none(errors: np.ndarray) -> np.ndarray | None:
    """Error-bar lengths with non-finite entries drawn as zero; None when no entry is finite."""
    errors = np.asarray(errors, dtype=np.float64)
    finite = np.isfinite(errors)
    return np.where(finite, errors, 0.0) if finite.any() else None


def plot_tradeoff(summary: pd.DataFrame, path: str | os.PathLike, title: str,
                  xlabel: str = "1 − LPIPS (fidelity to input, unitless; higher = closer)",
                  ylabel: str = "CLIP score (100 · cosine; higher = better text alignment)") -> None:
    """Plot the fidelity / text-alignment trade-off of a `summarise` table and save it as PNG.

    x = 1 - mean LPIPS (fidelity to the input), y = mean CLIP score; one line per
    (method, variant), ordered by alpha, each point labelled with its alpha and with 95% CI error
    bars where defined. The title names the scorer(s) so random-weight numbers are recognisable.
    """
    _require_columns(summary, ["method", "variant", "alpha", "lpips_mean", "clip_score_mean", "scorer"])
    # A bare Figure on the Agg canvas: no pyplot global state, no display backend needed.
    figure = Figure(figsize=(7, 5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for (method, variant), curve in summary.groupby(["method", "variant"], sort=True):
        curve = curve.sort_values("alpha")
        x = 1.0 - curve["lpips_mean"].to_numpy(dtype=np.float64)
        y = curve["clip_score_mean"].to_numpy(dtype=np.float64)
        xerr = _finite_or_none(curve["lpips_ci95"]) if "lpips_ci95" in curve else None
        yerr = _finite_or_none(curve["clip_score_ci95"]) if "clip_score_ci95" in curve else None
        axes.errorbar(x, y, xerr=xerr, yerr=yerr, marker="o", capsize=3, label=f"{method} / {variant}")
        for alpha, x_i, y_i in zip(curve["alpha"], x, y):
            axes.annotate(f"{alpha:g}", (x_i, y_i), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    scorer_names = ", ".join(sorted(map(str, summary["scorer"].unique())))
    axes.set_title(f"{title}\nscorer: {scorer_names}", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(title="method / variant", fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def _format_mean_ci(mean: float, ci95: float, float_digits: int) -> str:
    ci = f"{ci95:.{float_digits}f}" if np.isfinite(ci95) else "n/a"
    return f"{mean:.{float_digits}f} ± {ci}"


def markdown_table(summary: pd.DataFrame, float_digits: int = 3) -> str:
    """Render a `summarise` table as Markdown, each metric as one "mean ± ci95" column."""
    metrics = [
        column[: -len("_mean")]
        for column in summary.columns
        if column.endswith("_mean") and f"{column[: -len('_mean')]}_ci95" in summary.columns
    ]
    table = summary.copy()
    for metric in metrics:
        table[f"{metric}_mean"] = [
            _format_mean_ci(mean, ci, float_digits)
            for mean, ci in zip(summary[f"{metric}_mean"], summary[f"{metric}_ci95"])
        ]
    table = table.drop(columns=[f"{metric}_ci95" for metric in metrics])
    table = table.rename(columns={f"{metric}_mean": metric for metric in metrics})
    return table.to_markdown(index=False)
