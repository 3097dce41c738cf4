"""Each model's own settings of a variant, chosen from a tuning run by one rule: the same search on every model.

    python -m imagic_steps.tuning results-analysis-tuning --variant tuned

A tuning run (e.g. `config/analysis_tuning.yaml`) runs a grid of Imagic settings, one variant per grid point, on
tuning pairs that are not the evaluation's. Per model, each setting is scored over all the run's pairs: how many it
edits (some alpha reaches the run's `best_alpha.text_min` in seed-mean text alignment) and the mean identity
distance at each edited pair's most faithful editing alpha (both from the run's `tables/best_alpha.csv`, the rule
the evaluation's best-setting tables use). The chosen setting edits the most tuning pairs and, of those, has the
smallest mean distance (then the variant name, so ties resolve the same way every time). The grid's fields are the
ones whose values differ between the run's variants (from its `plan.json`); the command writes every setting's row
to `<run>/tables/tuning.csv` (`chosen` marks each model's pick) and prints the evaluation config's `models:` entries
that give each model its chosen values of those fields under `--variant`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .io import write_text

SECTIONS = ("embed", "finetune", "sample")


def grid_fields(variants: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The (section, field) pairs whose values differ between `variants` (name -> Variant.to_dict()): the grid."""
    fields = []
    for section in SECTIONS:
        for field in sorted(next(iter(variants.values()))[section]):
            if len({json.dumps(v[section][field]) for v in variants.values()}) > 1:
                fields.append((section, field))
    return fields


def setting_scores(best_alpha: pd.DataFrame, variants: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per model and Imagic setting (variant) of a tuning run: the grid fields' values, n_pairs, n_edited
    and distance_mean (mean identity distance over the edited pairs, each at its most faithful editing alpha; NaN
    when it edits none), and `chosen` (each model's pick: most pairs edited, then smallest distance_mean, then
    the variant name)."""
    imagic = best_alpha[best_alpha["method"] == "imagic"]
    fields = grid_fields(variants)
    rows = []
    for (model, variant), group in imagic.groupby(["model", "variant"], sort=True):
        edited = group[group["edited"].astype(bool)]
        rows.append({"model": model, "variant": variant,
                     **{f"{section}.{field}": variants[variant][section][field] for section, field in fields},
                     "n_pairs": len(group), "n_edited": len(edited),
                     "distance_mean": edited["distance"].mean() if len(edited) else float("nan")})
    return choose(pd.DataFrame(rows)).sort_values(["model", "variant"]).reset_index(drop=True)


def choose(scores: pd.DataFrame) -> pd.DataFrame:
    """`scores` (rows of model, variant, n_edited, distance_mean) with `chosen` set on each model's pick: the most
    pairs edited, then the smallest distance_mean, then the variant name."""
    order = scores.assign(_edited=-scores["n_edited"], _distance=scores["distance_mean"].fillna(float("inf")))
    picks = order.sort_values(["model", "_edited", "_distance", "variant"]).groupby("model").head(1).index
    return scores.assign(chosen=scores.index.isin(picks))


def model_overrides(scores: pd.DataFrame, variant: str) -> dict[str, dict[str, Any]]:
    """{model: {"variants": {variant: {section: {field: value}}}}}: each model's chosen grid values, the `models:`
    entries (besides each model's id) an evaluation config gives them."""
    fields = [column for column in scores.columns if column.partition(".")[0] in SECTIONS]
    overrides = {}
    for row in scores[scores["chosen"]].to_dict("records"):
        settings: dict[str, dict[str, Any]] = {}
        for column in fields:
            section, _, field = column.partition(".")
            value = row[column]
            settings.setdefault(section, {})[field] = value.item() if hasattr(value, "item") else value
        overrides[row["model"]] = {"variants": {variant: settings}}
    return overrides


def run_variants(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A run's Imagic variants (name -> Variant.to_dict()) from its plan.json; a variant's settings are the same on
    every model of a tuning run, so the first run of each name stands for it."""
    variants = {}
    for run in plan["runs"]:
        variants.setdefault(run["variant"]["name"], run["variant"])
    return variants


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m imagic_steps.tuning", description=__doc__.splitlines()[0])
    parser.add_argument("results", help="the tuning run's results folder (its plan.json and tables/best_alpha.csv)")
    parser.add_argument("--variant", default="tuned", help="the evaluation config's variant the choice sets")
    args = parser.parse_args(argv)
    results = Path(args.results)
    try:
        plan = json.loads((results / "plan.json").read_text(encoding="utf-8"))
        best_alpha = pd.read_csv(results / "tables" / "best_alpha.csv")
    except FileNotFoundError as error:
        raise SystemExit(f"{error.filename}: missing; run the tuning config to the end first "
                         f"(snakemake --cores 2 --configfile config/analysis_tuning.yaml)") from None
    scores = setting_scores(best_alpha, run_variants(plan))
    write_text(results / "tables" / "tuning.csv", scores.to_csv(index=False))
    shown = {column: scores[column].map("{:.0e}".format if column.endswith(".lr") else "{:.3f}".format)
             for column in scores if scores[column].dtype == float}
    print(scores.assign(**shown).to_markdown(index=False, disable_numparse=True))
    print(f"\n# {results}/tables/tuning.csv: each model's chosen setting of variant '{args.variant}'")
    print(yaml.safe_dump({"models": model_overrides(scores, args.variant)}, sort_keys=False), end="")


if __name__ == "__main__":
    main()
