"""From per-sample scores to the analysis: the tables (samples, scores, summaries with pair bootstrap intervals, best
alphas) and the figures made from them (best settings, trade-off curves, best edits, sweeps; drawn by `figures`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from .figures import (SWEEP_METRICS, ReferenceBand, best_edits_montage, plot_best_settings, plot_sweep,
                      plot_tradeoff)
from .io import atomic_path, write_text
from .stats import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE, DISTANCE_METRIC, METRICS, MODEL,
                    SETTING_COLUMNS, TEXT_METRIC, blank_missing, markdown_table, paired_model_differences,
                    pick_best_alpha, summarise, summarise_best, sweep_means, with_setting_columns)

SUMMARY_KEYS = ("method", "variant", *SETTING_COLUMNS)
PRESERVED_METRIC = "preserved"  # the coloured-digits scorer's 100 * P(the attribute the edit must keep)


def write_table(rows: Sequence[dict], csv_path, markdown_path, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per sample as CSV (all columns) and Markdown (`columns`, default all; a missing value, such as a
    baseline's alpha, as an empty cell)."""
    table = pd.DataFrame(list(rows))
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(markdown_path) as tmp:
        tmp.write_text(blank_missing(table[list(columns)] if columns else table) + "\n", encoding="utf-8")
    return table


def score_table(sample_rows: Sequence[dict], score_csvs: Sequence[str | Path]) -> pd.DataFrame:
    """Sample rows (pair, variant, seed, the method's setting, parameters, `sample` path) joined with their
    scores."""
    samples = pd.DataFrame(list(sample_rows))
    scores = pd.concat([pd.read_csv(path) for path in score_csvs], ignore_index=True).drop_duplicates("sample")
    table = samples.merge(scores, on="sample", how="left", validate="many_to_one")
    table = with_setting_columns(table)
    for column in SETTING_COLUMNS:  # numbers even where no row has one (e.g. no baseline configured)
        table[column] = table[column].astype(float)
    missing = table["scorer"].isna()
    if missing.any():
        raise ValueError(f"{int(missing.sum())} samples have no score, e.g. {table.loc[missing, 'sample'].iloc[0]}")
    return table


def write_table_files(table: pd.DataFrame, csv_path, parquet_path) -> None:
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(parquet_path) as tmp:
        table.to_parquet(tmp, index=False)


INTERVAL_NOTE = (f"[lo, hi] is a {CONFIDENCE:.0%} percentile bootstrap interval that resamples pairs with replacement "
                 f"({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}). The pair is the unit of replication: all "
                 "seeds of a pair share one optimised embedding and one fine-tuned UNet, so n_pairs, not "
                 "n_pairs × n_seeds, is the sample size. With a single pair there is no interval (n/a).")


def summary_markdown(summary: pd.DataFrame, scorer_note: str) -> str:
    return (f"Each cell: mean [lo, hi]. The mean is over pairs of each pair's mean over seeds; {INTERVAL_NOTE} "
            f"Scorer: {scorer_note}.\n\n"
            + markdown_table(summary) + "\n")


def best_summary_markdown(summary: pd.DataFrame, text_min: float, scorer_note: str) -> str:
    return (f"One row per {' / '.join(summary.columns[:list(summary.columns).index('n_pairs')])}. edited_percent: "
            f"the percentage of pairs where some setting edits (seed-mean text_alignment >= {text_min:g}); the other "
            "columns: means over the n_edited pairs that edit, each at its most faithful editing setting "
            f"(tables/best_alpha.csv: the lowest seed-mean distance among the editing settings). {INTERVAL_NOTE} "
            f"Scorer: {scorer_note}.\n\n"
            + markdown_table(summary) + "\n")


def model_differences_markdown(differences: pd.DataFrame, text_min: float, scorer_note: str) -> str:
    if differences.empty:
        return "Fewer than two models (or no method and variant two models share): no model differences.\n"
    return ("One row per model_a - model_b (every two models, in config order) and "
            f"{' / '.join(differences.columns[2:list(differences.columns).index('n_pairs')])}, over the pairs both "
            "models have (n_pairs; the models edit the same inputs, so each pair is a paired comparison). "
            f"edited_diff: each pair's edited (some setting reaches seed-mean text_alignment >= {text_min:g}: 1, else "
            "0) of model A minus model B; fidelity_diff: each pair's (1 - distance) of A minus B, each at its most "
            "faithful editing setting (tables/best_alpha.csv), over the n_both_edited pairs both models edit. "
            f"Means over pairs; [lo, hi] is a {CONFIDENCE:.0%} percentile bootstrap interval that resamples pairs "
            f"with replacement, a pair's two models together ({BOOTSTRAP_RESAMPLES} resamples, seed "
            f"{BOOTSTRAP_SEED}); with a single pair there is no interval (n/a). Scorer: {scorer_note}.\n\n"
            + markdown_table(differences) + "\n")


# Scorer names as imagic_steps.score.ScorerSpec.name and imagic_steps.digits.classifier.SCORER_NAME write them (not
# imported: either module would load torch into the evaluate job).
DIGITS_SCORER = "digits-classifier"
COLOUR_DIGITS_SCORER = "colour-digits"  # imagic_steps.colour_digits.scorer.SCORER_NAME's start
RANDOM_WEIGHT_SCORERS = ("tiny-random", "random-init")  # ScorerSpec(tiny=True), ScorerSpec(random_weights=True)


def scored_by_digits_classifier(table: pd.DataFrame) -> bool:
    return bool(table["scorer"].str.startswith(DIGITS_SCORER).all())


def scored_by_colour_digits(table: pd.DataFrame) -> bool:
    return bool(table["scorer"].str.startswith(COLOUR_DIGITS_SCORER).all())


def tradeoff_options(table: pd.DataFrame) -> dict:
    """Trade-off plot options that say what the scorer measured: axis labels and, for the digits classifier,
    its calibrated reference bands of the identity distance (imagic_steps/digits/classifier.py; the coloured digits'
    distance is the same one, on the inks)."""
    colour = scored_by_colour_digits(table)
    if scored_by_digits_classifier(table) or colour:
        # imported here: the CLIP path needs neither the classifier nor its calibration file
        from .digits.classifier import REFERENCE_LABELS, load_calibration

        levels = load_calibration()["levels"]
        ink = " of the inks" if colour else ""
        target = "P(target colour) or P(target digit): what the edit changes" if colour else "P(target digit)"
        return {"xlabel": f"identity similarity to input{ink} (1 − classifier-feature cosine distance; higher = closer)",
                "ylabel": f"100 · {target} (higher = edit achieved)",
                "references": [ReferenceBand(label, levels[key]["q25"], levels[key]["median"], levels[key]["q75"])
                               for key, label in REFERENCE_LABELS.items()]}
    return {}


def metric_labels(table: pd.DataFrame) -> dict[str, str]:
    """What the metric columns measure with the table's scorer, short enough for an axis."""
    if scored_by_digits_classifier(table):
        return {TEXT_METRIC: "100 · P(target digit)", DISTANCE_METRIC: "identity distance", "image_similarity": "SSIM"}
    if scored_by_colour_digits(table):
        return {TEXT_METRIC: "100 · P(edit target)", DISTANCE_METRIC: "identity distance (ink)",
                "image_similarity": "SSIM (ink)"}
    return {TEXT_METRIC: "CLIP score (100 · cosine)", DISTANCE_METRIC: "LPIPS",
            "image_similarity": "CLIP image similarity"}


def scorer_note(table: pd.DataFrame) -> str:
    names = sorted(table["scorer"].unique())
    note = ", ".join(names)
    random_weights = any(name.startswith(RANDOM_WEIGHT_SCORERS) for name in names)
    if random_weights:
        note += " (random-weight scorers: these numbers check the plumbing and mean nothing about quality)"
    if any(name.startswith(DIGITS_SCORER) for name in names):
        note += (" (digits domain: text_alignment = 100 · P(target digit) from a digit classifier, distance = identity"
                 " distance, 1 − cosine similarity of the classifier's features, calibrated in"
                 " imagic_steps/presets/digits_classifier/calibration.json; image_similarity = SSIM; pixel_fidelity"
                 " = 1 − RMSE of grey levels)")
    elif any(name.startswith(COLOUR_DIGITS_SCORER) for name in names):
        note += (" (coloured digits: text_alignment = 100 · P(what the edit asks for: the target colour for an"
                 " attribute edit, the target digit for a structure edit), preserved = 100 · P(what it must keep: the"
                 " input's digit, resp. colour), distance = the digits identity distance of the inks (shape only),"
                 " image_similarity = SSIM of the inks; imagic_steps/colour_digits/README.md)")
    elif not random_weights:
        note += (" (text_alignment = CLIP score, distance = LPIPS, image_similarity = CLIP image cosine,"
                 " directional_similarity = directional CLIP)")
    return note


def write_evaluation(
    sample_rows: Sequence[dict],
    score_csvs: Sequence[str | Path],
    *,
    images: dict[str, str],
    text_min: float,
    sweeps: dict[str, dict],
    out: dict[str, str],
    facets: Sequence[str] = (),
    models: Sequence[str] = (),
) -> pd.DataFrame:
    """Everything downstream of the scores; `out` names the files (see workflow/rules/evaluate.smk).

    `facets` (score-table columns: the model label of a several-model run, the coloured digits' edit_kind) split
    the summaries, the best settings (a panel each in their figure) and the trade-off figure's columns (at most two
    facets), and the sweep figures (one per facet value combination).

    `text_min` (config best_alpha.text_min) is the seed-mean text_alignment an alpha (or a baseline's setting) must
    reach to count as an edit; `pick_best_alpha` explains the choice among those.

    `models` (the model labels in config order): with two or more, `tables/model_differences.csv` compares every two
    of them pair by pair (`paired_model_differences`); with fewer it holds the header only.
    """
    table = score_table(sample_rows, score_csvs)
    facets = list(facets)
    Path(out["sweeps"]).mkdir(parents=True, exist_ok=True)  # a declared output even when empty (no sweep configured)
    write_table_files(table, out["scores_csv"], out["scores_parquet"])
    note = scorer_note(table)
    keys = (*facets, *SUMMARY_KEYS)
    metrics = [*METRICS, *([PRESERVED_METRIC] if table.get(PRESERVED_METRIC, pd.Series()).notna().any() else [])]
    summary = summarise(table, by=keys, metrics=metrics)
    with atomic_path(out["summary_csv"]) as tmp:
        summary.to_csv(tmp, index=False)
    write_text(out["summary_md"], summary_markdown(summary, note))
    main = without_sweeps(table, sweeps)
    options = {**tradeoff_options(table), "panels_by": facets, "threshold": text_min}  # the line an edit must reach
    plot_tradeoff(summarise(main, by=keys), out["tradeoff"],
                  "text alignment vs fidelity along alpha (baselines: their grid setting)\n"
                  f"mean over pairs of seed means, {CONFIDENCE:.0%} pair bootstrap intervals", **options)
    reported = [metric for metric in metrics if metric not in (TEXT_METRIC, DISTANCE_METRIC)]
    best = pick_best_alpha(main, text_min=text_min, by=("pair_id", *facets, "method", "variant"), also=reported)
    with atomic_path(out["best_alpha"]) as tmp:
        best.to_csv(tmp, index=False)
    best_summary = summarise_best(best, by=(*facets, "method", "variant"), metrics=metrics)
    with atomic_path(out["best_summary_csv"]) as tmp:
        best_summary.to_csv(tmp, index=False)
    write_text(out["best_summary_md"], best_summary_markdown(best_summary, text_min, note))
    pair_facets = [facet for facet in facets if facet != MODEL]
    differences = paired_model_differences(best, models, by=(*pair_facets, "method", "variant"))
    with atomic_path(out["model_differences_csv"]) as tmp:
        differences.to_csv(tmp, index=False)
    write_text(out["model_differences_md"], model_differences_markdown(differences, text_min, note))
    plot_best_settings(best_summary, out["best_settings"], **options)
    best_edits_montage(best, main, images, seed=int(main["seed"].min()),
                       keys=varying_within_pairs(main, facets)).save(out["best_edits"])
    for name, sweep in sweeps.items():
        rows = table[table["variant"].isin(list(sweep["variants"]))]
        scorers = ", ".join(sorted(rows["scorer"].unique()))
        groups = rows.groupby(facets, sort=True) if facets else [((), rows)]
        for values, group in groups:
            values = values if isinstance(values, tuple) else (values,)
            suffix = "".join(f"_{value}" for value in values)
            where = "".join(f", {facet} {value}" for facet, value in zip(facets, values))
            plot_sweep(sweep_means(group, sweep["variants"], SWEEP_METRICS), Path(out["sweeps"]) / f"{name}{suffix}.png",
                       f"{sweep['field']}: sweep '{name}'{where}, means over pairs and seeds; scorer: {scorers}",
                       xlabel=sweep["field"], labels=metric_labels(group))
    return table


def without_sweeps(table: pd.DataFrame, sweeps: dict[str, dict]) -> pd.DataFrame:
    """The rows of the trade-off figures and best settings: all but the sweeps' own variants (they get the sweep
    figure), unless nothing else is left."""
    swept = table["variant"].isin([v for sweep in sweeps.values() for v in sweep["variants"]])
    return table[~swept] if (~swept).any() else table


def write_pair_tradeoff(sample_rows: Sequence[dict], score_csvs: Sequence[str | Path], png, *, text_min: float,
                        sweeps: dict[str, dict], facets: Sequence[str] = ()) -> None:
    """One pair's trade-off figure (rule pair_tradeoff: drawn once the pair's scores exist, beside the other pairs'
    stages, not after every pair): `sample_rows` and `score_csvs` are the pair's; the same curves as the all-pairs
    figure, means over seeds, a panel per facet that varies within the pair (the model label)."""
    table = without_sweeps(score_table(sample_rows, score_csvs), sweeps)
    pair = table["pair_id"].iloc[0]
    plot_tradeoff(summarise(table, by=(*facets, *SUMMARY_KEYS)), png,
                  f"pair {pair}: text alignment vs fidelity along alpha\nmean over seeds (one pair: no interval)",
                  **tradeoff_options(table), panels_by=varying_within_pairs(table, facets), threshold=text_min)


def varying_within_pairs(table: pd.DataFrame, facets: Sequence[str]) -> list[str]:
    """The facets that take several values within some pair (the model label), not those fixed by the pair (the
    edit kind): a pair's own figures split by those only."""
    return [facet for facet in facets if (table.groupby("pair_id")[facet].nunique() > 1).any()]
