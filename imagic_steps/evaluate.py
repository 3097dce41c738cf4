"""From per-sample scores to the analysis: tables, pair bootstrap intervals, trade-off curves, best alphas, sweeps."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw, ImageFont

from .aggregate import MIN_CELL, row_label_width
from .figures import image_grid
from .images import load_image
from .io import atomic_path, save_image, write_text
from .stats import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE, markdown_table, pick_best_alpha, plot_tradeoff,
                    summarise)

SUMMARY_KEYS = ("method", "variant", "alpha")


def score_table(sample_rows: Sequence[dict], score_csvs: Sequence[str | Path]) -> pd.DataFrame:
    """Sample rows (pair, variant, seed, alpha, parameters, `sample` path) joined with their scores."""
    samples = pd.DataFrame(list(sample_rows))
    scores = pd.concat([pd.read_csv(path) for path in score_csvs], ignore_index=True).drop_duplicates("sample")
    table = samples.merge(scores, on="sample", how="left", validate="many_to_one")
    missing = table["scorer"].isna()
    if missing.any():
        raise ValueError(f"{int(missing.sum())} samples have no score, e.g. {table.loc[missing, 'sample'].iloc[0]}")
    return table


def write_table_files(table: pd.DataFrame, csv_path, parquet_path) -> None:
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(parquet_path) as tmp:
        table.to_parquet(tmp, index=False)


def summary_markdown(summary: pd.DataFrame, scorer_note: str) -> str:
    return (f"Each cell: mean [lo, hi]. The mean is over pairs of each pair's mean over seeds; [lo, hi] is a "
            f"{CONFIDENCE:.0%} percentile bootstrap interval that resamples pairs with replacement "
            f"({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}). The pair is the unit of replication: all "
            "seeds of a pair share one optimised embedding and one fine-tuned UNet, so n_pairs, not "
            "n_pairs × n_seeds, is the sample size. With a single pair there is no interval (n/a). "
            f"Scorer: {scorer_note}.\n\n"
            + markdown_table(summary) + "\n")


def tradeoff_options(table: pd.DataFrame) -> dict:
    """Trade-off plot options that say what the scorer measured: axis labels and, for the digits classifier,
    its calibrated reference bands of the identity distance (imagic_steps/toy/classifier.py)."""
    if table["scorer"].str.startswith("digits-classifier").all():
        # imported here: the CLIP path needs neither the classifier nor its calibration file
        from .toy.classifier import reference_bands

        return {"xlabel": "identity similarity to input (1 − classifier-feature cosine distance; higher = closer)",
                "ylabel": "100 · P(target digit) (digit classifier; higher = edit achieved)",
                "references": reference_bands()}
    return {}


def scorer_note(table: pd.DataFrame) -> str:
    names = sorted(table["scorer"].unique())
    note = ", ".join(names)
    if any(name.startswith("tiny-random") for name in names):
        note += " (random-weight scorers: these numbers check the plumbing and mean nothing about quality)"
    if any(name.startswith("digits-classifier") for name in names):
        note += (" (digits domain: clip_score = 100 · P(target digit) from a digit classifier, lpips = identity"
                 " distance, 1 − cosine similarity of the classifier's features, calibrated in"
                 " imagic_steps/presets/digits_classifier/calibration.json; clip_image_sim = SSIM; pixel_fidelity"
                 " = 1 − RMSE of grey levels)")
    return note


NO_EDIT_GREY = (128, 128, 128)


def no_edit_tile(size: int, label: str = "no edit") -> Image.Image:
    """A grey `size` x `size` tile saying `label`: the cell of a pair where no alpha achieved the edit."""
    tile = Image.new("RGB", (size, size), NO_EDIT_GREY)
    draw = ImageDraw.Draw(tile)
    font = ImageFont.load_default()
    left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
    draw.text(((size - (right - left)) // 2, (size - (bottom - top)) // 2), label, fill="white", font=font)
    return tile


def best_edits_montage(best: pd.DataFrame, table: pd.DataFrame, images: dict[str, str], seed: int) -> Image.Image:
    """One row per pair: the input, then each (method, variant)'s sample at its best alpha for `seed`.

    A (pair, method, variant) without a best alpha (edited False in `pick_best_alpha`) gets a grey
    "no edit" tile, or "missing" where the table lacks it entirely.
    """
    columns = sorted({(m, v) for m, v in zip(best["method"], best["variant"])})
    pairs = sorted(best["pair_id"].unique())
    seed_rows = table[table["seed"] == seed]
    lookup = seed_rows.set_index(["pair_id", "method", "variant", "alpha"])["sample"]
    with Image.open(seed_rows["sample"].iloc[0]) as first:
        width = first.width
    cell = max(width, MIN_CELL)
    picks = best.set_index(["pair_id", "method", "variant"])
    rows = []
    for pair in pairs:
        row = [load_image(images[pair], width)]
        for method, variant in columns:
            if (pair, method, variant) not in picks.index:
                row.append(no_edit_tile(cell, "missing"))
            elif not bool(picks.at[(pair, method, variant), "edited"]):
                row.append(no_edit_tile(cell))
            else:
                row.append(Image.open(lookup[(pair, method, variant, picks.at[(pair, method, variant), "alpha"])]))
        rows.append(row)
    labels = ["input"] + [f"{v}" for _, v in columns]
    return image_grid(rows, column_labels=labels, row_labels=pairs, cell=cell, row_label_width=row_label_width(pairs))


def plot_sweep(table: pd.DataFrame, sweep: dict, path, title: str) -> None:
    """Text alignment and identity preservation against a swept parameter, one line per alpha.

    `sweep` maps variant name -> swept value. Means over pairs and seeds.
    """
    rows = table[table["variant"].isin(list(sweep))].copy()
    rows["value"] = rows["variant"].map(sweep)
    means = rows.groupby(["alpha", "value"], sort=True)[["clip_score", "lpips", "clip_image_sim"]].mean().reset_index()
    figure = Figure(figsize=(10, 3.6), dpi=110)
    FigureCanvasAgg(figure)
    panels = [("clip_score", "CLIP score (text alignment)"), ("lpips", "1 − distance (LPIPS; digits: identity)"),
              ("clip_image_sim", "CLIP image similarity (identity)")]
    for index, (metric, label) in enumerate(panels):
        axes = figure.add_subplot(1, 3, index + 1)
        for alpha, curve in means.groupby("alpha"):
            y = 1 - curve[metric] if metric == "lpips" else curve[metric]
            axes.plot(curve["value"], y, marker="o", label=f"a={alpha:g}")
        axes.set_xlabel(title.split(":")[0])
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
    figure.axes[0].legend(fontsize=7)
    figure.suptitle(f"{title}\nscorer: {scorer_note(rows)}", fontsize=9)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


def write_evaluation(
    sample_rows: Sequence[dict],
    score_csvs: Sequence[str | Path],
    *,
    images: dict[str, str],
    text_min: float,
    sweeps: dict[str, dict],
    out: dict[str, str],
) -> pd.DataFrame:
    """Everything downstream of the scores; `out` names the files (see workflow/rules/aggregate.smk).

    `text_min` (config best_alpha.text_min) is the seed-mean text score (clip_score column) an alpha must
    reach to count as an edit; `pick_best_alpha` explains the choice among those.
    """
    table = score_table(sample_rows, score_csvs)
    for folder in ("tradeoff_pairs", "sweeps"):  # declared outputs even when empty (no sweep configured)
        Path(out[folder]).mkdir(parents=True, exist_ok=True)
    write_table_files(table, out["scores_csv"], out["scores_parquet"])
    note = scorer_note(table)
    summary = summarise(table, by=SUMMARY_KEYS)
    with atomic_path(out["summary_csv"]) as tmp:
        summary.to_csv(tmp, index=False)
    write_text(out["summary_md"], summary_markdown(summary, note))
    swept = table["variant"].isin([v for sweep in sweeps.values() for v in sweep["variants"]])
    main = table[~swept] if (~swept).any() else table  # the sweep's own variants get the sweep figure
    options = tradeoff_options(table)
    plot_tradeoff(summarise(main, by=SUMMARY_KEYS), out["tradeoff"],
                  "text alignment vs fidelity along alpha (SDEdit: strength)\n"
                  f"mean over pairs of seed means, {CONFIDENCE:.0%} pair bootstrap intervals", **options)
    for pair, pair_rows in main.groupby("pair_id"):
        plot_tradeoff(summarise(pair_rows, by=SUMMARY_KEYS), Path(out["tradeoff_pairs"]) / f"{pair}.png",
                      f"pair {pair}: text alignment vs fidelity along alpha\nmean over seeds (one pair: no interval)",
                      **options)
    best = pick_best_alpha(main, text_min=text_min)
    with atomic_path(out["best_alpha"]) as tmp:
        best.to_csv(tmp, index=False)
    save_image(best_edits_montage(best, main, images, seed=int(main["seed"].min())), out["best_edits"])
    for name, sweep in sweeps.items():
        plot_sweep(table, sweep["variants"], Path(out["sweeps"]) / f"{name}.png", f"{sweep['field']}: sweep '{name}'")
    return table
