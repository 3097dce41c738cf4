from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imagic_steps.figures import NO_EDIT_GREY, tradeoff_figure
from imagic_steps.evaluate import score_table, scorer_note, tradeoff_options, write_evaluation, write_pair_tradeoff
from imagic_steps.sdedit import sdedit
from imagic_steps.variants import SdeditParams
from imagic_steps.stats import summarise


def sample_rows(tmp_path, pairs=("p1", "p2"), variants=("a", "b"), seeds=(0, 1), alphas=(0.0, 1.0)):
    rows = []
    for pair in pairs:
        for variant in variants:
            for seed in seeds:
                for alpha in alphas:
                    path = tmp_path / f"{pair}_{variant}_{seed}_{alpha}.png"
                    Image.new("RGB", (16, 16), (int(alpha * 200), seed * 50, 10)).save(path)
                    rows.append({"pair_id": pair, "variant": variant, "method": "imagic", "seed": seed,
                                 "alpha": alpha, "sample": str(path)})
    return rows


def fake_scores(rows, path, scorer="tiny-random(clip+lpips-alex)", offsets=None):
    """clip_score 10 + 10 · alpha + seed (+ a per-pair offset), lpips 0.1 + 0.4 · alpha."""
    offsets = offsets or {}
    frame = pd.DataFrame({
        "sample": [r["sample"] for r in rows],
        "text_alignment": [10 + 10 * r["alpha"] + r["seed"] + offsets.get(r["pair_id"], 0.0) for r in rows],
        "image_similarity": [1 - 0.3 * r["alpha"] for r in rows],
        "distance": [0.1 + 0.4 * r["alpha"] for r in rows],
        "directional_similarity": np.nan,
        "scorer": scorer,
    })
    frame.to_csv(path, index=False)


def test_score_table_joins_every_sample_and_refuses_missing_scores(tmp_path):
    rows = sample_rows(tmp_path)
    fake_scores(rows[:5], tmp_path / "s1.csv")
    fake_scores(rows[5:], tmp_path / "s2.csv")
    table = score_table(rows, [tmp_path / "s1.csv", tmp_path / "s2.csv"])
    assert len(table) == len(rows)
    assert table.loc[table["sample"] == rows[7]["sample"], "text_alignment"].item() == 10 + 10 * rows[7]["alpha"] + rows[7]["seed"]
    with pytest.raises(ValueError, match="no score"):
        score_table(rows, [tmp_path / "s1.csv"])
    assert "plumbing" in scorer_note(table)


def evaluation_outputs(tmp_path):
    out = {name: str(tmp_path / "out" / name) for name in
           ("scores_csv", "scores_parquet", "summary_csv", "summary_md", "tradeoff", "best_alpha",
            "best_summary_csv", "best_summary_md", "best_settings", "best_edits", "sweeps",
            "model_differences_csv", "model_differences_md")}
    for name in ("tradeoff", "best_settings", "best_edits"):
        out[name] += ".png"
    return out


def input_images(tmp_path):
    image = tmp_path / "input.png"
    Image.new("RGB", (64, 64), "white").save(image)
    return {"p1": str(image), "p2": str(image)}


def test_write_evaluation_outputs(tmp_path):
    rows = sample_rows(tmp_path)
    fake_scores(rows, tmp_path / "scores.csv")
    out = evaluation_outputs(tmp_path)
    # text_min 15: alpha 0 (seed-mean clip 10.5, lpips 0.1) is the more faithful but does not edit; alpha 1 does
    write_evaluation(rows, [tmp_path / "scores.csv"], images=input_images(tmp_path), text_min=15.0,
                     sweeps={"s": {"field": "finetune.steps", "variants": {"b": 10}}}, out=out)
    summary = pd.read_csv(out["summary_csv"])
    first = summary[(summary["variant"] == "a") & (summary["alpha"] == 1.0)].iloc[0]
    # clip = 20 + seed: each pair's seed mean is 20.5, so the mean and both interval ends are 20.5
    assert (first["n_pairs"], first["n_seeds"]) == (2, 2)
    assert (first["text_alignment_mean"], first["text_alignment_lo"], first["text_alignment_hi"]) == pytest.approx((20.5,) * 3)
    assert "n" not in summary.columns and not any(c.endswith("_ci95") for c in summary.columns)
    markdown = open(out["summary_md"]).read()
    assert "20.500 [20.500, 20.500]" in markdown and "n_pairs" in markdown and "bootstrap" in markdown
    best = pd.read_csv(out["best_alpha"])
    assert list(best["variant"]) == ["a", "a"]  # sweep variants are left to the sweep figure
    assert best["edited"].all() and (best["alpha"] == 1.0).all()
    assert pd.read_parquet(out["scores_parquet"]).shape[0] == len(rows)
    assert Image.open(out["best_edits"]).size[1] > 2 * 16
    assert Image.open(out["best_settings"]).format == "PNG"
    # the sweep's variants are plotted in the sweep figure; the main trade-off keeps the others
    assert (tmp_path / "out" / "sweeps" / "s.png").stat().st_size > 0
    # a pair's own figure (rule pair_tradeoff) from its rows and scores alone
    p1 = [row for row in rows if row["pair_id"] == "p1"]
    write_pair_tradeoff(p1, [tmp_path / "scores.csv"], tmp_path / "p1.png", text_min=15.0,
                        sweeps={"s": {"field": "finetune.steps", "variants": {"b": 10}}})
    assert Image.open(tmp_path / "p1.png").format == "PNG"
    best_summary = pd.read_csv(out["best_summary_csv"]).iloc[0]
    assert (best_summary["n_pairs"], best_summary["n_edited"], best_summary["edited_percent_mean"]) == (2, 2, 100.0)
    assert best_summary["distance_mean"] == pytest.approx(0.5)  # alpha 1's distance, the best setting of both pairs
    assert "n_edited" in open(out["best_summary_md"]).read()
    # one model: the declared output holds the header only
    differences = pd.read_csv(out["model_differences_csv"])
    assert differences.empty and {"model_a", "model_b", "fidelity_diff_mean", "n_pairs"} <= set(differences.columns)


def test_facets_split_summaries_best_settings_panels_and_sweeps(tmp_path):
    """Two models (the model label) x two edit kinds (a score column, fixed per pair): every table row and figure
    is per facet value; a pair's own figure and the best-edits montage split by the model only."""
    for model in ("latent", "pixel"):
        (tmp_path / model).mkdir(exist_ok=True)
    rows = [{**row, "model": model} for model in ("latent", "pixel")
            for row in sample_rows(tmp_path / model, pairs=("p1", "p2"))]
    fake_scores(rows, tmp_path / "scores.csv", offsets={"p2": -10.0})
    scores = pd.read_csv(tmp_path / "scores.csv")
    scores["edit_kind"] = ["attribute" if "/p1_" in path else "structure" for path in scores["sample"]]
    scores["preserved"] = 50.0
    scores.to_csv(tmp_path / "scores.csv", index=False)
    out = evaluation_outputs(tmp_path)
    write_evaluation(rows, [tmp_path / "scores.csv"], images=input_images(tmp_path), text_min=15.0,
                     sweeps={"s": {"field": "finetune.steps", "variants": {"b": 10}}}, out=out,
                     facets=["model", "edit_kind"], models=["latent", "pixel"])
    summary = pd.read_csv(out["summary_csv"])
    assert set(zip(summary["model"], summary["edit_kind"])) == {(m, k) for m in ("latent", "pixel")
                                                                for k in ("attribute", "structure")}
    assert (summary["n_pairs"] == 1).all() and "preserved_mean" in summary
    best = pd.read_csv(out["best_summary_csv"]).set_index(["model", "edit_kind", "variant"])
    assert best.loc[("pixel", "attribute", "a"), "edited_percent_mean"] == 100.0
    assert best.loc[("pixel", "structure", "a"), "edited_percent_mean"] == 0.0  # p2 peaks at 10.5 < 15
    assert best.loc[("latent", "attribute", "a"), "preserved_mean"] == 50.0
    # latent - pixel per edit kind, paired by pair: the same fake scores, so no difference; p2 edits in neither
    differences = pd.read_csv(out["model_differences_csv"]).set_index("edit_kind")
    assert list(differences.columns[:2]) == ["model_a", "model_b"] and len(differences) == 2
    assert (differences["model_a"] == "latent").all() and (differences["model_b"] == "pixel").all()
    assert differences.loc["attribute", ["n_pairs", "n_both_edited", "fidelity_diff_mean"]].tolist() == [1, 1, 0.0]
    assert differences.loc["structure", ["n_both_edited", "edited_diff_mean"]].tolist() == [0, 0.0]
    assert "resamples pairs" in open(out["model_differences_md"]).read()
    assert sorted(p.name for p in (tmp_path / "out" / "sweeps").iterdir()) == [
        f"s_{m}_{k}.png" for m in ("latent", "pixel") for k in ("attribute", "structure")]
    # panels: a column per (model, edit kind) (4 for the one curve); a pair's own figure a column per model (2)
    write_pair_tradeoff([row for row in rows if row["pair_id"] == "p1"], [tmp_path / "scores.csv"],
                        tmp_path / "p1.png", text_min=15.0, sweeps={"s": {"field": "finetune.steps", "variants": {"b": 10}}},
                        facets=["model", "edit_kind"])
    whole, pair = Image.open(out["tradeoff"]).size, Image.open(tmp_path / "p1.png").size
    assert 1.7 * pair[0] < whole[0] < 2.1 * pair[0]
    assert Image.open(out["best_settings"]).size[0] > whole[0] / 2  # a panel per (model, edit kind), 2 x 2
    montage = Image.open(out["best_edits"])
    assert montage.size[0] > 3 * 64  # input + latent a + pixel a


def test_pairs_without_an_editing_alpha_are_no_edit_in_table_and_montage(tmp_path):
    rows = sample_rows(tmp_path, variants=("a",))
    fake_scores(rows, tmp_path / "scores.csv", offsets={"p2": -10.0})  # p2 peaks at 10.5 < 15
    out = evaluation_outputs(tmp_path)
    write_evaluation(rows, [tmp_path / "scores.csv"], images=input_images(tmp_path), text_min=15.0, sweeps={},
                     out=out)
    best = pd.read_csv(out["best_alpha"]).set_index("pair_id")
    assert bool(best.loc["p1", "edited"]) and best.loc["p1", "alpha"] == 1.0
    assert not bool(best.loc["p2", "edited"]) and np.isnan(best.loc["p2", "alpha"])
    assert best.loc["p2", "text_alignment_max"] == pytest.approx(10.5)
    montage = np.asarray(Image.open(out["best_edits"]).convert("RGB"))
    # p1's cell: seed 0's sample at alpha 1 (16 px, enlarged 6 x to a 96 px cell); p2's: a grey "no edit" tile
    edited = np.argwhere(np.all(montage == (200, 0, 10), axis=-1))
    assert len(edited) == 96 * 96 and (edited.max(axis=0) - edited.min(axis=0) == 95).all()
    grey = np.all(montage == NO_EDIT_GREY, axis=-1)  # the tile (anti-aliased text elsewhere has a few such pixels)
    rows, columns = np.flatnonzero(grey.sum(axis=1) > 48), np.flatnonzero(grey.sum(axis=0) > 48)
    (top, bottom), (left, right) = rows[[0, -1]], columns[[0, -1]]
    assert (bottom - top, right - left) == (95, 95) and left == edited[:, 1].min() and top > edited[:, 0].max()
    assert (montage[top:bottom, left:right].min(axis=-1) > 220).any()  # the white "no edit" text


def test_sdedit_is_seeded_and_follows_strength(tiny):
    from imagic_steps.images import load_image

    image = load_image("config/images/chelsea.png", 64)
    params = SdeditParams(steps=6)
    a = np.asarray(sdedit(tiny, image, "a cat", 0.5, [0], params)[0], dtype=float)
    b = np.asarray(sdedit(tiny, image, "a cat", 0.5, [0], params)[0], dtype=float)
    other_seed = np.asarray(sdedit(tiny, image, "a cat", 0.5, [1], params)[0], dtype=float)
    weak = np.asarray(sdedit(tiny, image, "a cat", 0.2, [0], params)[0], dtype=float)
    full = np.asarray(sdedit(tiny, image, "a cat", 1.0, [0], params)[0], dtype=float)
    original = np.asarray(image, dtype=float)
    assert np.array_equal(a, b) and not np.array_equal(a, other_seed)
    assert np.abs(weak - original).mean() < np.abs(full - original).mean()
    with pytest.raises(ValueError, match="strength"):
        sdedit(tiny, image, "a cat", 0.0, [0], params)[0]


def reference_labels(table: pd.DataFrame) -> list[str]:
    """The reference bands' legend entries of the trade-off figure `write_evaluation` would draw for `table`."""
    figure = tradeoff_figure(summarise(table), "t", **tradeoff_options(table))
    return [t.get_text() for t in figure.legends[0].get_texts() if t.get_text().endswith("(median, IQR)")]


def test_tradeoff_draws_the_calibration_bands_for_the_digits_scorer_only(tmp_path):
    rows = sample_rows(tmp_path)
    fake_scores(rows, tmp_path / "clip.csv")
    fake_scores(rows, tmp_path / "digits.csv", scorer="digits-classifier")
    clip = score_table(rows, [tmp_path / "clip.csv"])
    digits = score_table(rows, [tmp_path / "digits.csv"])
    assert reference_labels(clip) == []
    assert reference_labels(digits) == [f"{label} (median, IQR)" for label in
                                        ("same digit, other writer", "target digit, other writer", "blank")]
    assert "identity" in tradeoff_options(digits)["xlabel"] and "identity distance" in scorer_note(digits)
    out = evaluation_outputs(tmp_path)
    write_evaluation(rows, [tmp_path / "digits.csv"], images=input_images(tmp_path), text_min=15.0, sweeps={}, out=out)
    assert Path(out["tradeoff"]).stat().st_size > 0


def test_scorer_names_match_the_scorers_and_every_random_weight_scorer_is_flagged():
    from imagic_steps.digits.classifier import SCORER_NAME
    from imagic_steps.evaluate import DIGITS_SCORER, RANDOM_WEIGHT_SCORERS
    from imagic_steps.score import ScorerSpec

    assert SCORER_NAME == DIGITS_SCORER
    random_names = [ScorerSpec(tiny=True).name, ScorerSpec(random_weights=True).name]
    assert [name.startswith(RANDOM_WEIGHT_SCORERS) for name in random_names] == [True, True]
    assert not ScorerSpec().name.startswith(RANDOM_WEIGHT_SCORERS)
    for name in random_names:  # the SD-shaped run's random-init CLIP must not read as real CLIP numbers
        note = scorer_note(pd.DataFrame({"scorer": [name]}))
        assert "mean nothing about quality" in note and "= CLIP score" not in note
    assert "= CLIP score" in scorer_note(pd.DataFrame({"scorer": [ScorerSpec().name]}))
