"""A several-model run's models side by side: each model's cells, and named paired contrasts between two models.

    python -m imagic_steps.model_comparison results-analysis                 # the one-factor contrasts
    python -m imagic_steps.model_comparison results-analysis --contrast latent:pixel_clip   # or named ones

The run's evaluation already holds everything: `tables/best_summary.csv` (per model, edit kind, method and variant:
how many pairs some setting edits, and the identity distance at each edited pair's most faithful editing setting)
and `tables/model_differences.csv` (every two models, A - B per pair, with the pair bootstrap; config order decides
which model is A). This command reads them and writes what a reader compares:

* `tables/model_cells.md`: per edit kind, one row per method / variant and one column per model (alphabetical, so
  a second training seed stands beside its first): "edited / n, fidelity [95 % interval]" (fidelity = 1 - identity
  distance, over the edited pairs);
* `tables/model_contrasts.csv` / `.md`: each contrast A - B whichever order the run stored it in (the difference
  negated and its interval flipped where the run has B - A), per edit kind, method and variant: the difference in
  the share of pairs edited and in fidelity over the pairs both edit, each with its interval. Without `--contrast`,
  the contrasts are every two of the run's coloured-digits models that differ in one factor of their training
  (`locations.COLOUR_DIGITS_MODELS`: space, text encoder, training seed), A the first level (latent before pixel,
  CLIP before T5, seed 0 before 1), so each contrast isolates one factor;
* `figures/model_contrasts.png`: those contrasts as a forest plot (`figures.contrasts_figure`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from .io import atomic_path, write_text
from .locations import COLOUR_DIGITS_MODELS
from .stats import (BOOTSTRAP_RESAMPLES, CONFIDENCE, DISTANCE_METRIC, MODEL, MODEL_DIFFERENCES, edit_kinds,
                    format_interval, method_variants, require_columns)

DIFFERENCES = MODEL_DIFFERENCES  # the columns each contrast reports, with _mean / _lo / _hi
DIFFERENCE_NAMES = {"edited_diff": "share of pairs edited, A − B",
                    "fidelity_diff": "fidelity (1 − identity distance), A − B, over the pairs both edit"}
CONTRAST = "contrast"  # the column naming a contrast: "A − B"
VARIES = "varies"  # the column naming the one factor a contrast varies ("" for a contrast named on the command line)
FACTORS = ("space", "text encoder", "training seed")  # COLOUR_DIGITS_MODELS' tuple, in its order


def contrast_name(model_a: str, model_b: str) -> str:
    return f"{model_a} − {model_b}"


def one_factor_contrasts(models: dict[str, str]) -> list[tuple[str, str, str]]:
    """(A, B, factor) for every two of `models` (label -> model id, in config order) whose ids are registered
    coloured-digits models (`COLOUR_DIGITS_MODELS`) differing in exactly one factor; A has that factor's first
    level (latent < pixel, clip < t5, seed 0 < 1). Sorted by factor (`FACTORS`' order), then config order."""
    known = [(label, COLOUR_DIGITS_MODELS[model_id]) for label, model_id in models.items()
             if model_id in COLOUR_DIGITS_MODELS]
    found = []
    for i, (label_a, levels_a) in enumerate(known):
        for label_b, levels_b in known[i + 1:]:
            differ = [k for k in range(len(FACTORS)) if levels_a[k] != levels_b[k]]
            if len(differ) == 1:
                first = levels_a[differ[0]] < levels_b[differ[0]]
                found.append((differ[0], *((label_a, label_b) if first else (label_b, label_a))))
    return [(a, b, FACTORS[k]) for k, a, b in sorted(found, key=lambda item: item[0])]


def parse_contrast(text: str) -> tuple[str, str]:
    """"A:B" -> (A, B), two different model labels."""
    parts = text.split(":")
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise ValueError(f"--contrast '{text}': give two different model labels as A:B (e.g. latent:pixel)")
    return parts[0], parts[1]


def oriented_contrast(differences: pd.DataFrame, model_a: str, model_b: str, varies: str = "") -> pd.DataFrame:
    """The rows of `differences` (`stats.paired_model_differences`' table) for model A - model B, whichever of the
    two the run stored as A: stored as B - A, each mean is negated and each interval flipped ([lo, hi] ->
    [-hi, -lo], the same percentile interval of the negated differences). Adds CONTRAST and VARIES (`varies`: the
    factor the two models differ in, if known) columns first.

    Raises:
        ValueError: the run has no rows for the two models (a label it does not have), naming the labels it has.
    """
    require_columns(differences, ["model_a", "model_b",
                                  *(f"{d}_{s}" for d in DIFFERENCES for s in ("mean", "lo", "hi"))])
    forward = differences[(differences["model_a"] == model_a) & (differences["model_b"] == model_b)]
    backward = differences[(differences["model_a"] == model_b) & (differences["model_b"] == model_a)]
    if forward.empty and backward.empty:
        labels = sorted(set(differences["model_a"]) | set(differences["model_b"]))
        raise ValueError(f"--contrast {model_a}:{model_b}: the run has no model differences between these labels; "
                         f"its models are {', '.join(labels) or 'none (fewer than two models)'}")
    rows = forward.copy() if not forward.empty else backward.copy()
    if forward.empty:
        rows["model_a"], rows["model_b"] = model_a, model_b
        for name in DIFFERENCES:
            mean, lo, hi = (rows[f"{name}_{stat}"] for stat in ("mean", "lo", "hi"))
            rows[f"{name}_mean"], rows[f"{name}_lo"], rows[f"{name}_hi"] = 0.0 - mean, 0.0 - hi, 0.0 - lo  # no -0.0
    rows.insert(0, CONTRAST, contrast_name(model_a, model_b))
    rows.insert(1, VARIES, varies)
    return rows.reset_index(drop=True)


def model_contrasts(differences: pd.DataFrame, contrasts: Sequence[tuple[str, ...]]) -> pd.DataFrame:
    """Every contrast in `contrasts` ((A, B) or (A, B, factor)) as A - B (`oriented_contrast`), in the order given."""
    if not contrasts:
        raise ValueError("no contrast to report: name one as --contrast A:B (two model labels of the run)")
    return pd.concat([oriented_contrast(differences, *contrast) for contrast in contrasts], ignore_index=True)


def contrast_header(contrasts: pd.DataFrame, name: str) -> str:
    """A contrast's name with the factor it varies, if known: "latent − pixel_clip (space)"."""
    varies = contrasts.loc[contrasts[CONTRAST] == name, VARIES].fillna("").iloc[0] if VARIES in contrasts else ""
    return f"{name} ({varies})" if varies else name


def _method_label(method: str, variant: str) -> str:
    return method if method == variant else f"{method} / {variant}"


def _per_edit_kind(table: pd.DataFrame, column: str, values: Sequence[str], headers: Sequence[str], what: str,
                   cell) -> str:
    """One Markdown table per edit kind of `table`: a row per method / variant, a column per value of `column` (with
    its header), each cell `cell(row)` of the table's row there, "—" where there is none."""
    parts = []
    for kind in edit_kinds(table):
        rows = table if kind is None else table[table["edit_kind"] == kind]
        lines = [f"| {kind or 'all'}: {what} | " + " | ".join(headers) + " |", "|---|" + "---|" * len(headers)]
        for method, variant in method_variants(rows):
            found = rows[(rows["method"] == method) & (rows["variant"] == variant)].set_index(column)
            cells = [cell(found.loc[value]) if value in found.index else "—" for value in values]
            lines.append(f"| {_method_label(method, variant)} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def contrasts_markdown(contrasts: pd.DataFrame, difference: str, digits: int = 2) -> str:
    """One Markdown table per edit kind: a row per method / variant, a column per contrast, each cell "mean [lo,
    hi]" of `difference` (edited_diff or fidelity_diff), "n/a" where the two models share no edited pair, "—" where
    one of them lacks the method (LEDITS++ on a pixel model)."""
    names = list(dict.fromkeys(contrasts[CONTRAST]))
    return _per_edit_kind(
        contrasts, CONTRAST, names, [contrast_header(contrasts, name) for name in names], DIFFERENCE_NAMES[difference],
        lambda row: format_interval(*(float(row[f"{difference}_{s}"]) for s in ("mean", "lo", "hi")), digits,
                                    signed=True))


def _fidelity_cell(row: pd.Series, digits: int) -> str:
    cell = f"{int(row['n_edited'])} / {int(row['n_pairs'])}"
    mean, lo, hi = (float(row[f"{DISTANCE_METRIC}_{s}"]) for s in ("mean", "lo", "hi"))
    if np.isfinite(mean) and np.isfinite(lo) and np.isfinite(hi):
        cell += f", {1 - mean:.{digits}f} [{1 - hi:.{digits}f}, {1 - lo:.{digits}f}]"
    return cell


def model_cells_markdown(best_summary: pd.DataFrame, models: Sequence[str], digits: int = 2) -> str:
    """One Markdown table per edit kind from a run's `tables/best_summary.csv`: a row per method / variant, a column
    per model (in `models`' order), each cell "edited / n_pairs, fidelity [lo, hi]" (fidelity = 1 - identity
    distance over the edited pairs, at each one's most faithful editing setting; its interval is 1 - the distance
    interval's ends), "edited / n_pairs" alone where one pair or none edits (no interval), "—" where the model lacks
    the method."""
    require_columns(best_summary, [MODEL, "method", "variant", "n_pairs", "n_edited",
                                   *(f"{DISTANCE_METRIC}_{s}" for s in ("mean", "lo", "hi"))])
    return _per_edit_kind(best_summary, MODEL, models, models, "edited / n, fidelity [95 % CI]",
                          lambda row: _fidelity_cell(row, digits))


TABLE_NOTE = (f"Means over pairs; [lo, hi] is a {CONFIDENCE:.0%} percentile bootstrap interval that resamples pairs "
              f"with replacement ({BOOTSTRAP_RESAMPLES} resamples), a pair's two models together in a contrast.")


def write_comparison(results: str | Path, contrasts: Sequence[tuple[str, ...]] = ()) -> pd.DataFrame:
    """Write the run's model cells, contrasts and contrast figure (the module docstring lists the files); returns
    the contrasts' table. No `contrasts`: the one-factor contrasts of the run's models (its plan.json)."""
    from .figures import plot_contrasts  # imported here: the tables need no matplotlib

    results = Path(results)
    tables = results / "tables"
    for name in ("best_summary.csv", "model_differences.csv"):
        if not (tables / name).is_file():
            raise FileNotFoundError(f"{tables / name} is missing: give the results folder of a finished several-model "
                                    "run (snakemake writes it in its last step)")
    best_summary = pd.read_csv(tables / "best_summary.csv")
    differences = pd.read_csv(tables / "model_differences.csv")
    order = list(dict.fromkeys([*differences["model_a"], *differences["model_b"]]))  # config order
    if not contrasts:
        plan = json.loads((results / "plan.json").read_text()) if (results / "plan.json").is_file() else {}
        ids = {label: spec["id"] for label, spec in plan.get("models", {}).items()}  # plan.json sorts its keys
        models = {label: ids[label]
                  for label in sorted(ids, key=lambda m: order.index(m) if m in order else len(order))}
        contrasts = one_factor_contrasts(models)
        if not contrasts:
            raise ValueError(f"no --contrast given, and no two of the run's models ({', '.join(models) or 'none'}, "
                             f"{results / 'plan.json'}) are coloured-digits models differing in one factor: name "
                             "the contrasts as --contrast A:B")
    table = model_contrasts(differences, contrasts)
    with atomic_path(tables / "model_contrasts.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_text(tables / "model_contrasts.md",
               f"{TABLE_NOTE}\n\n" + "\n".join(contrasts_markdown(table, d) for d in DIFFERENCES))
    models = sorted(best_summary[MODEL].unique()) if MODEL in best_summary else []  # a seed beside its sibling
    write_text(tables / "model_cells.md", f"{TABLE_NOTE}\n\n" + model_cells_markdown(best_summary, models))
    plot_contrasts(table, results / "figures" / "model_contrasts.png")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imagic_steps.model_comparison",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a finished several-model run's results folder (its tables/)")
    parser.add_argument("--contrast", action="append", default=[], metavar="A:B",
                        help="two model labels of the run: report A - B (repeat for more contrasts; none: every "
                             "one-factor contrast of the run's coloured-digits models)")
    args = parser.parse_args(argv)
    try:
        table = write_comparison(args.results, [parse_contrast(text) for text in args.contrast])
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"error: {error}\n")
    print(f"{len(table)} contrast rows -> {Path(args.results) / 'tables' / 'model_contrasts.md'}, model_cells.md, "
          "figures/model_contrasts.png")


if __name__ == "__main__":
    main()
