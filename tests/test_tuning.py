"""The tuning budget's rule (imagic_steps.tuning) and the analysis config's tuned settings against the shipped choice."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from imagic_steps import tuning
from imagic_steps.variants import resolve_variant

REPO = Path(__file__).resolve().parents[1]


def variant(name, lr, steps, guidance):
    return resolve_variant(name, {"preset": "original", "finetune": {"lr": lr, "steps": steps},
                                  "sample": {"guidance_scale": guidance}}).to_dict()


VARIANTS = {"a": variant("a", 1e-6, 150, 3.0), "b": variant("b", 1e-5, 150, 3.0), "c": variant("c", 1e-5, 300, 1.0)}


def best_alpha(rows):
    """best_alpha.csv rows from (model, variant, pair, edited, distance); a baseline row the rule must ignore."""
    table = [{"pair_id": pair, "model": model, "method": "imagic", "variant": name, "edited": edited,
              "distance": distance} for model, name, pair, edited, distance in rows]
    table.append({"pair_id": "p1", "model": "m", "method": "sdedit", "variant": "sdedit", "edited": True,
                  "distance": 0.0})
    return pd.DataFrame(table)


def test_the_rule_edits_most_pairs_then_keeps_most_of_the_input():
    rows = [("m", "a", "p1", True, 0.10), ("m", "a", "p2", False, 0.90),       # 1 edited, distance 0.10
            ("m", "b", "p1", True, 0.30), ("m", "b", "p2", True, 0.50),        # 2 edited, 0.40
            ("m", "c", "p1", True, 0.20), ("m", "c", "p2", True, 0.40),        # 2 edited, 0.30: the pick
            ("n", "a", "p1", False, 0.1), ("n", "a", "p2", False, 0.1),        # edits nothing
            ("n", "b", "p1", True, 0.25), ("n", "b", "p2", False, 0.0),        # tie with c on both counts:
            ("n", "c", "p1", True, 0.25), ("n", "c", "p2", False, 0.0)]        # the name decides
    scores = tuning.setting_scores(best_alpha(rows), VARIANTS)
    assert list(scores.columns[:5]) == ["model", "variant", "finetune.lr", "finetune.steps", "sample.guidance_scale"]
    by = scores.set_index(["model", "variant"])
    assert by.loc[("m", "b"), "n_edited"] == 2 and by.loc[("m", "b"), "distance_mean"] == pytest.approx(0.4)
    assert pd.isna(by.loc[("n", "a"), "distance_mean"]) and by.loc[("n", "a"), "n_pairs"] == 2
    assert scores.loc[scores["chosen"], ["model", "variant"]].values.tolist() == [["m", "c"], ["n", "b"]]
    overrides = tuning.model_overrides(scores, "tuned")
    assert overrides == {"m": {"variants": {"tuned": {"finetune": {"lr": 1e-5, "steps": 300},
                                                      "sample": {"guidance_scale": 1.0}}}},
                         "n": {"variants": {"tuned": {"finetune": {"lr": 1e-5, "steps": 150},
                                                      "sample": {"guidance_scale": 3.0}}}}}
    assert yaml.safe_load(yaml.safe_dump(overrides)) == overrides  # plain numbers, not numpy scalars


def test_the_command_writes_the_table_and_prints_the_config_blocks(tmp_path, capsys):
    (tmp_path / "tables").mkdir()
    rows = [("m", name, "p1", name != "a", 0.2 if name == "b" else 0.3) for name in VARIANTS]
    best_alpha(rows).to_csv(tmp_path / "tables" / "best_alpha.csv", index=False)
    runs = [{"model": "m", "pair_id": "p1", "variant": spec} for spec in VARIANTS.values()]
    (tmp_path / "plan.json").write_text(json.dumps({"runs": runs}))
    tuning.main([str(tmp_path)])
    printed = capsys.readouterr().out
    written = pd.read_csv(tmp_path / "tables" / "tuning.csv")
    assert written.loc[written["chosen"], "variant"].tolist() == ["b"]
    block = yaml.safe_load(printed[printed.index("models:"):])
    assert block == {"models": {"m": {"variants": {"tuned": {"finetune": {"lr": 1e-5, "steps": 150},
                                                             "sample": {"guidance_scale": 3.0}}}}}}
    with pytest.raises(SystemExit, match="plan.json: missing; run the tuning config"):
        tuning.main([str(tmp_path / "elsewhere")])


def test_the_analysis_runs_each_models_pick_of_the_shipped_tuning_run():
    """docs/tables/analysis_tuning.csv is the tuning run's tables/tuning.csv (docs/results.md names its command and
    commit): the rule picks again what it marks, config/analysis.yaml gives each model that pick as its `tuned`, and
    config/analysis_seed1.yaml each second seed its sibling's."""
    shipped = pd.read_csv(REPO / "docs" / "tables" / "analysis_tuning.csv")
    assert tuning.choose(shipped.drop(columns="chosen"))["chosen"].tolist() == shipped["chosen"].tolist()
    picks = tuning.model_overrides(shipped, "tuned")
    analysis = yaml.safe_load((REPO / "config" / "analysis.yaml").read_text())["models"]
    assert set(picks) == set(analysis)
    for label, block in picks.items():
        assert analysis[label]["variants"] == block["variants"], label
    for label, block in yaml.safe_load((REPO / "config" / "analysis_seed1.yaml").read_text())["models"].items():
        assert block["variants"] == analysis[label.removesuffix("_seed1")]["variants"], label
