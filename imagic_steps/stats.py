"""Summary statistics, best-alpha selection and summary tables of score tables (numbers only; figures.py draws).

A score table has one row per scored sample with at least the columns pair_id, variant, method
("imagic" or a baseline's name: "sdedit", "ledits", "ddim_inversion"), seed, one setting column per method
(`SETTING_COLUMNS`: Imagic's alpha, SDEdit's strength, LEDITS++'s edit_guidance, DDIM inversion's
target_guidance; the others empty in a row), text_alignment, distance, image_similarity and scorer; other columns
are ignored. What
the metric columns measure depends on the scorer, named in the scorer column (imagic_steps/score.py).

The unit of replication is the pair: every seed of a pair shares one optimised embedding and one
fine-tuned UNet, so its seeds are not independent evidence. Summaries therefore average the seeds of
each pair first and then treat the pairs as the sample: the mean over pairs, with a 95% percentile
bootstrap interval that resamples pairs with replacement. A percentile interval of a mean lies inside
the range of the pair means, hence inside the metric's own range (e.g. [0, 100] for the digits'
100 * P(target)); with a single pair it is undefined (NaN).
"""

from __future__ import annotations

from itertools import combinations
from typing import Sequence

import numpy as np
import pandas as pd

from .plan import BASELINES

UNIT = "pair_id"  # the unit of replication: seeds are averaged within it, then units are resampled
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed, so every table and figure is reproducible bit for bit
CONFIDENCE = 0.95
TEXT_METRIC = "text_alignment"  # higher = better (CLIP: 100 * cosine; digits: 100 * P(target digit))
DISTANCE_METRIC = "distance"  # to the input, lower = closer (CLIP scorer: LPIPS; digits: identity distance)
METRICS = (TEXT_METRIC, DISTANCE_METRIC, "image_similarity")  # what summaries report
# an edit's setting, one column per method (the others empty): Imagic's alpha, then each baseline's grid setting
SETTING_COLUMNS = ("alpha", *(baseline.setting for baseline in BASELINES.values()))


def with_setting_columns(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with every setting column, a missing one empty (e.g. an Imagic-only table)."""
    missing = {column: np.nan for column in SETTING_COLUMNS if column not in table.columns}
    return table.assign(**missing) if missing else table


def edit_setting(table: pd.DataFrame) -> pd.Series:
    """Each row's position along its method's edit axis: its one non-empty setting column (alpha for Imagic,
    strength for SDEdit, ...)."""
    setting = table[SETTING_COLUMNS[0]]
    for column in SETTING_COLUMNS[1:]:
        setting = setting.fillna(table[column])
    return setting


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


def require_columns(table: pd.DataFrame, columns: Sequence[str]) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise KeyError(f"score table lacks columns {missing}")


def summarise(
    table: pd.DataFrame,
    by: Sequence[str] = ("method", "variant", *SETTING_COLUMNS),
    metrics: Sequence[str] = METRICS,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """Per group: the mean over pairs of each pair's seed-mean score, with a 95% pair bootstrap interval.

    Seeds are averaged within each pair first (they share the pair's embedding and fine-tuned UNet),
    then pairs are resampled with replacement (`bootstrap_mean_interval`). Every pair weighs the same,
    however many seeds it has. NaN values are ignored; a pair without any value of a metric is left
    out of that metric (e.g. directional_similarity of a pair without a source prompt).

    Returns:
        One row per group, sorted by `by`, with columns by..., n_pairs (pairs in the group), n_seeds
        (distinct seeds in the group), <metric>_mean, <metric>_lo and <metric>_hi for each metric (lo
        and hi NaN with fewer than two pairs), and scorer.

    Raises:
        ValueError: if a group mixes scorers.
    """
    by = list(by)
    table = with_setting_columns(table)
    require_columns(table, [*by, UNIT, "seed", *metrics, "scorer"])
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
    also: Sequence[str] = (),
) -> pd.DataFrame:
    """Per group (a pair's method and variant): the most faithful setting (Imagic's alpha, a baseline's grid
    value) among those that achieve the edit.

    Scores are first averaged over seeds for each setting. A setting edits when its mean `text` score is at
    least `text_min`; among those, the one with the lowest mean `distance` wins (ties: the smallest
    setting). A group where no setting edits gets edited=False and NaN settings, `text` and
    `distance`: there is no best setting to report, only the highest text score it reached.

    Returns:
        One row per group with columns by..., edited (bool), the SETTING_COLUMNS (the best setting; the others
        NaN), text_alignment, distance and the `also` metrics (the seed means at that setting; the `text` and
        `distance` columns), text_alignment_max (the highest seed-mean text score of any setting), text_min and scorer.

    Raises:
        ValueError: if a group mixes scorers.
    """
    by = list(by)
    table = with_setting_columns(table)
    require_columns(table, [*by, text, distance, *also, "scorer"])
    reported = [text, distance, *also]
    rows = []
    for key, group in table.groupby(by, sort=True, dropna=False):
        per_setting = (group.groupby(list(SETTING_COLUMNS), sort=True, dropna=False)[reported].mean()
                       .reset_index())
        editing = per_setting[(per_setting[text] >= text_min) & per_setting[distance].notna()]
        edited = not editing.empty
        # first minimum = the smallest setting (rows are sorted by setting)
        best = per_setting.loc[editing[distance].idxmin()] if edited else None
        rows.append(
            {
                **dict(zip(by, key)),
                "edited": edited,
                **{column: best[column] if edited else np.nan for column in (*SETTING_COLUMNS, *reported)},
                f"{text}_max": per_setting[text].max(),
                "text_min": float(text_min),
                "scorer": _single_scorer(group, key),
            }
        )
    columns = [*by, "edited", *SETTING_COLUMNS, *reported, f"{text}_max", "text_min", "scorer"]
    return pd.DataFrame(rows, columns=columns)


def summarise_best(
    best: pd.DataFrame,
    by: Sequence[str],
    metrics: Sequence[str] = (TEXT_METRIC, DISTANCE_METRIC),
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """Per group of `pick_best_alpha` rows (one per pair): how often the edit was achieved, and what it cost.

    Returns:
        One row per group, sorted by `by`, with n_pairs, n_edited, edited_percent_mean / _lo / _hi (100 x the
        fraction of pairs where some setting edits, with a pair bootstrap interval, inside [0, 100]) and, for
        each metric, <metric>_mean / _lo / _hi over the **edited** pairs at their best settings (n_edited of
        them: a pair that never edits has no best setting to measure), and scorer.
    """
    by = list(by)
    require_columns(best, [*by, "edited", *metrics, "scorer"])
    rows = []
    for key, group in best.groupby(by, sort=True, dropna=False):
        edited = group[group["edited"].astype(bool)]
        row = {**dict(zip(by, key)), "n_pairs": len(group), "n_edited": len(edited)}
        row["edited_percent_mean"], row["edited_percent_lo"], row["edited_percent_hi"] = bootstrap_mean_interval(
            100.0 * group["edited"].to_numpy(dtype=np.float64), n_resamples=n_resamples, seed=seed)
        for metric in metrics:
            row[f"{metric}_mean"], row[f"{metric}_lo"], row[f"{metric}_hi"] = bootstrap_mean_interval(
                edited[metric].to_numpy(dtype=np.float64), n_resamples=n_resamples, seed=seed)
        row["scorer"] = _single_scorer(group, key)
        rows.append(row)
    columns = [*by, "n_pairs", "n_edited",
               *(f"{m}_{stat}" for m in ("edited_percent", *metrics) for stat in ("mean", "lo", "hi")), "scorer"]
    return pd.DataFrame(rows, columns=columns)


MODEL = "model"  # the model label column of a several-model run's tables
MODEL_DIFFERENCES = ("edited_diff", "fidelity_diff")  # paired_model_differences' measures, each _mean / _lo / _hi


def method_variants(table: pd.DataFrame) -> list[tuple[str, str]]:
    """The (method, variant) pairs of `table`, Imagic's variants first, then the baselines, each sorted."""
    pairs = table[["method", "variant"]].drop_duplicates()
    return sorted(map(tuple, pairs.to_numpy()), key=lambda mv: (mv[0] != "imagic", mv[0], mv[1]))


def edit_kinds(table: pd.DataFrame) -> list:
    """The sorted edit_kind values of `table`, or [None] for a table without that facet."""
    return sorted(table["edit_kind"].unique()) if "edit_kind" in table else [None]


def paired_model_differences(
    best: pd.DataFrame,
    models: Sequence[str],
    by: Sequence[str] = ("method", "variant"),
    distance: str = DISTANCE_METRIC,
    n_resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> pd.DataFrame:
    """Model A - model B at each pair's most faithful editing setting, paired by pair, for every two of `models`.

    `best` is `pick_best_alpha`'s table with a MODEL column (one row per pair, model and group `by`: method,
    variant and the facets fixed by the pair, such as edit_kind); the models edited the same pairs, so each pair
    gives one difference per model pair (a paired comparison). Per (A, B, group) over the pairs both models have:
      * edited: edited_A - edited_B per pair (1 / 0 each, so in {-1, 0, 1});
      * fidelity: (1 - distance_A) - (1 - distance_B) per pair, at each model's own best setting, over the pairs
        both models edit (the others have no best setting to measure).
    Each mean comes with a 95 % percentile bootstrap interval that resamples pairs with replacement, keeping a
    pair's two models together (`bootstrap_mean_interval` of the per-pair differences): it is inside the range of
    the differences, so inside [-1, 1] for [0, 1] metrics, and NaN with fewer than two pairs. A (method, variant)
    one of the two models lacks (LEDITS++ on a pixel model) has no row.

    Args:
        models: the model labels in config order; A comes before B (A - B for every `combinations(models, 2)`).

    Returns:
        One row per (model_a, model_b, *by), in that order, with n_pairs (pairs both models have), n_both_edited,
        edited_diff_mean / _lo / _hi, fidelity_diff_mean / _lo / _hi and scorer.

    Raises:
        ValueError: a pair has two rows for one model and group, or the two models' rows have different scorers.
    """
    by = list(by)
    if len(models) > 1:  # a one-model run's table has no MODEL column, and nothing to compare
        require_columns(best, [UNIT, MODEL, *by, "edited", distance, "scorer"])
    rows = []
    for model_a, model_b in combinations(models, 2):
        both = best[best[MODEL] == model_a].merge(best[best[MODEL] == model_b], on=[UNIT, *by], suffixes=("_a", "_b"),
                                                  validate="one_to_one")
        for key, group in both.groupby(by, sort=True, dropna=False):
            key = key if isinstance(key, tuple) else (key,)
            scorers = set(group["scorer_a"]) | set(group["scorer_b"])
            if len(scorers) != 1:
                raise ValueError(f"models {model_a} and {model_b} at {key} have scorers {sorted(map(str, scorers))}")
            edited = group["edited_a"].astype(float) - group["edited_b"].astype(float)
            fidelity = (1 - group[f"{distance}_a"]) - (1 - group[f"{distance}_b"])  # NaN unless both edit
            row = {"model_a": model_a, "model_b": model_b, **dict(zip(by, key)), "n_pairs": len(group),
                   "n_both_edited": int(fidelity.notna().sum())}
            for name, values in zip(MODEL_DIFFERENCES, (edited, fidelity)):
                row[f"{name}_mean"], row[f"{name}_lo"], row[f"{name}_hi"] = bootstrap_mean_interval(
                    values.to_numpy(dtype=np.float64), n_resamples=n_resamples, seed=seed)
            row["scorer"] = scorers.pop()
            rows.append(row)
    columns = ["model_a", "model_b", *by, "n_pairs", "n_both_edited",
               *(f"{name}_{stat}" for name in MODEL_DIFFERENCES for stat in ("mean", "lo", "hi")),
               "scorer"]
    return pd.DataFrame(rows, columns=columns)


def format_interval(mean: float, lo: float, hi: float, float_digits: int, signed: bool = False) -> str:
    """"mean [lo, hi]" with `float_digits` decimals (`signed`: each with its sign, for differences); "n/a" without a
    mean, "mean [n/a: < 2 pairs]" without an interval."""
    spec = f"{'+' if signed else ''}.{float_digits}f"
    if not np.isfinite(mean):
        return "n/a"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{mean:{spec}} [n/a: < 2 pairs]"
    return f"{mean:{spec}} [{lo:{spec}}, {hi:{spec}}]"


def markdown_table(summary: pd.DataFrame, float_digits: int = 3) -> str:
    """Render a `summarise` table as Markdown, each metric as one "mean [lo, hi]" column; setting columns that
    are empty in every row are left out, the others' missing values are empty cells."""
    metrics = [
        column[: -len("_mean")]
        for column in summary.columns
        if column.endswith("_mean") and {f"{column[: -len('_mean')]}_{b}" for b in ("lo", "hi")} <= set(summary.columns)
    ]
    table = summary.copy()
    for metric in metrics:
        table[f"{metric}_mean"] = [
            format_interval(mean, lo, hi, float_digits)
            for mean, lo, hi in zip(summary[f"{metric}_mean"], summary[f"{metric}_lo"], summary[f"{metric}_hi"])
        ]
    table = table.drop(columns=[f"{metric}_{bound}" for metric in metrics for bound in ("lo", "hi")])
    # a setting column no row uses (a method not configured) is left out of the rendering, not of the table
    table = table.drop(columns=[c for c in SETTING_COLUMNS if c in table.columns and table[c].isna().all()])
    table = table.rename(columns={f"{metric}_mean": metric for metric in metrics})
    return blank_missing(table)


def blank_missing(table: pd.DataFrame) -> str:
    """`table` as Markdown with its missing values (a setting another method varies: alpha on a baseline's row) as
    empty cells, not "nan"; numeric columns stay numbers, right-aligned."""
    return table.astype(object).where(table.notna(), None).to_markdown(index=False, missingval="")


def sweep_means(table: pd.DataFrame, sweep: dict, metrics: Sequence[str], by: Sequence[str] = ()) -> pd.DataFrame:
    """Means over pairs and seeds of `metrics` per (*by, alpha, swept value); `sweep` maps variant name -> value.

    Returns:
        columns *by, alpha, value, *metrics; one row per (*by, alpha, value), sorted.
    """
    rows = table[table["variant"].isin(list(sweep))].copy()
    rows["value"] = rows["variant"].map(sweep)
    return rows.groupby([*by, "alpha", "value"], sort=True)[list(metrics)].mean().reset_index()
