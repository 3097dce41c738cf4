"""Tests of imagic_steps.stats on small hand-made score tables with known answers."""

import numpy as np
import pandas as pd
import pytest

from imagic_steps.stats import (SETTING_COLUMNS, bootstrap_mean_interval, markdown_table, paired_model_differences,
                                pick_best_alpha, summarise, unit_means)

SCORER = "tiny-random(clip+lpips-alex)"
DIGITS = "digits-classifier"


def score_table() -> pd.DataFrame:
    """One pair: two imagic alphas (3 seeds each) and one sdedit strength (2 seeds)."""
    rows = [
        # method, alpha, seed, clip_score, lpips, clip_image_sim
        ("imagic", 0.9, 0, 20.0, 0.30, 0.80),
        ("imagic", 0.9, 1, 22.0, 0.32, 0.82),
        ("imagic", 0.9, 2, 24.0, 0.34, 0.84),
        ("imagic", 1.1, 0, 26.0, 0.50, 0.70),
        ("imagic", 1.1, 1, 26.0, 0.52, 0.72),
        ("imagic", 1.1, 2, 26.0, 0.54, 0.74),
        ("sdedit", 0.6, 0, 25.0, 0.40, 0.75),
        ("sdedit", 0.6, 1, 27.0, 0.44, 0.77),
    ]
    table = pd.DataFrame(rows, columns=["method", "alpha", "seed", "text_alignment", "distance", "image_similarity"])
    table["pair_id"] = "cat"
    table["variant"] = "original"
    table["directional_similarity"] = np.nan
    table["scorer"] = SCORER
    table["sample_path"] = [f"s{i}.png" for i in range(len(table))]  # an extra column to be ignored
    return as_sdedit_where(table, table["method"] == "sdedit")


def as_sdedit_where(table: pd.DataFrame, rows: pd.Series) -> pd.DataFrame:
    """SDEdit's setting is its strength: the alpha of `rows` moves to the strength column (alpha left empty)."""
    table = table.copy()
    table["strength"] = table["alpha"].where(rows)
    table["alpha"] = table["alpha"].where(~rows)
    return table


def pair_table(pair_seed_scores: dict[str, list[float]], metric: str = "text_alignment", scorer: str = DIGITS,
               alpha: float = 1.0) -> pd.DataFrame:
    """One imagic variant at one alpha; `pair_seed_scores` maps pair -> its seeds' values of `metric`."""
    rows = [{"pair_id": pair, "seed": seed, metric: value}
            for pair, values in pair_seed_scores.items() for seed, value in enumerate(values)]
    table = pd.DataFrame(rows)
    table["method"], table["variant"], table["alpha"], table["scorer"] = "imagic", "imagic", alpha, scorer
    table["strength"] = np.nan
    return table


def one_row(table: pd.DataFrame, metric: str = "text_alignment") -> pd.Series:
    summary = summarise(table, metrics=(metric,))
    assert len(summary) == 1
    return summary.iloc[0]


# --- the bootstrap itself ------------------------------------------------------------------------------------------

def test_bootstrap_constant_values_give_a_point_interval():
    assert bootstrap_mean_interval(np.zeros(5)) == (0.0, 0.0, 0.0)
    assert bootstrap_mean_interval(np.full(4, 100.0)) == (100.0, 100.0, 100.0)


def test_bootstrap_zero_one_pairs_known_answer():
    # Pair means 0, 1, 1: a resample of 3 pairs is all zeros with probability 1/27 = 3.7% > 2.5%, all ones with
    # probability 8/27 = 30% > 2.5%, so the 95% percentile interval is exactly [0, 1]; the mean is 2/3.
    mean, lo, hi = bootstrap_mean_interval(np.array([0.0, 1.0, 1.0]))
    assert mean == pytest.approx(2 / 3) and (lo, hi) == (0.0, 1.0)


def test_bootstrap_is_deterministic_and_seeded():
    values = np.random.default_rng(7).uniform(0, 100, size=12)
    assert bootstrap_mean_interval(values) == bootstrap_mean_interval(values.copy())
    assert bootstrap_mean_interval(values, seed=1) != bootstrap_mean_interval(values, seed=2)


def test_bootstrap_interval_stays_within_the_values_and_is_about_normal_for_many_pairs():
    rng = np.random.default_rng(3)
    for _ in range(20):
        values = rng.choice([0.0, 100.0, rng.uniform(0, 100)], size=rng.integers(2, 9))
        mean, lo, hi = bootstrap_mean_interval(values)
        assert values.min() <= lo <= hi <= values.max()
    # 200 pairs: the percentile interval is close to the normal one, mean ± 1.96 · sd / sqrt(n)
    values = rng.normal(50, 10, size=200)
    mean, lo, hi = bootstrap_mean_interval(values)
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert lo == pytest.approx(mean - half, abs=0.15 * half) and hi == pytest.approx(mean + half, abs=0.15 * half)


def test_bootstrap_undefined_with_fewer_than_two_values():
    mean, lo, hi = bootstrap_mean_interval(np.array([3.0, np.nan]))
    assert mean == 3.0 and np.isnan(lo) and np.isnan(hi)
    assert all(np.isnan(v) for v in bootstrap_mean_interval(np.array([np.nan])))


# --- summaries: seeds averaged within a pair, pairs resampled --------------------------------------------------------

def test_summary_of_an_all_zero_metric_is_zero_zero():
    row = one_row(pair_table({"p1": [0, 0], "p2": [0, 0], "p3": [0, 0]}))
    assert (row["text_alignment_mean"], row["text_alignment_lo"], row["text_alignment_hi"]) == (0.0, 0.0, 0.0)


def test_summary_zero_one_pairs_known_answer_and_counts():
    # 100 · P(target) with a 0/1 outcome per seed: pair means 0, 100, 100
    row = one_row(pair_table({"p1": [0, 0], "p2": [100, 100], "p3": [100, 100]}))
    assert row["text_alignment_mean"] == pytest.approx(200 / 3)
    assert (row["text_alignment_lo"], row["text_alignment_hi"]) == (0.0, 100.0)
    assert (row["n_pairs"], row["n_seeds"]) == (3, 2)
    assert "n" not in row.index and "text_alignment_ci95" not in row.index


def test_seeds_are_averaged_within_a_pair_before_resampling():
    # Seeds that vary inside a pair must give exactly the numbers of the table holding each pair's seed mean.
    varying = pair_table({"p1": [0, 100, 50], "p2": [100, 100, 100], "p3": [10, 20, 30], "p4": [90, 0, 60]})
    means = pair_table({"p1": [50], "p2": [100], "p3": [20], "p4": [50]})
    a, b = one_row(varying), one_row(means)
    for column in ("text_alignment_mean", "text_alignment_lo", "text_alignment_hi", "n_pairs"):
        assert a[column] == pytest.approx(b[column]), column
    assert (a["n_seeds"], b["n_seeds"]) == (3, 1)
    # Pooling the 12 samples as independent would give another, narrower interval: not what is reported.
    pooled = bootstrap_mean_interval(varying["text_alignment"].to_numpy())
    assert (pooled[1], pooled[2]) != (a["text_alignment_lo"], a["text_alignment_hi"])


def test_every_pair_weighs_the_same_however_many_seeds_it_has():
    row = one_row(pair_table({"p1": [0], "p2": [100, 100, 100]}))
    assert row["text_alignment_mean"] == 50.0 and row["n_seeds"] == 3


def test_intervals_lie_within_the_pair_means_and_the_metric_range():
    rng = np.random.default_rng(11)
    for _ in range(10):
        table = pair_table({f"p{i}": list(rng.choice([0.0, 100.0, rng.uniform(0, 100)], size=3))
                            for i in range(rng.integers(2, 7))})
        row = one_row(table)
        means = unit_means(table, "text_alignment")
        assert means.min() <= row["text_alignment_lo"] <= row["text_alignment_mean"] <= row["text_alignment_hi"] <= means.max()
        assert 0.0 <= row["text_alignment_lo"] and row["text_alignment_hi"] <= 100.0


def test_summary_is_deterministic():
    table = pair_table({"p1": [3, 9], "p2": [40, 41], "p3": [77, 70], "p4": [12, 15]})
    first = summarise(table, metrics=("text_alignment",))
    again = summarise(table.sample(frac=1.0, random_state=0), metrics=("text_alignment",))  # row order does not matter
    pd.testing.assert_frame_equal(first, again, check_exact=True)
    assert first["text_alignment_lo"].item() < first["text_alignment_hi"].item()


def test_one_pair_has_no_interval():
    summary = summarise(score_table())
    settings = summary["alpha"].fillna(summary["strength"])  # SDEdit's setting is its strength, alpha empty
    assert list(zip(summary["method"], settings)) == [("imagic", 0.9), ("imagic", 1.1), ("sdedit", 0.6)]
    assert summary["alpha"].isna().tolist() == [False, False, True]
    assert summary["strength"].isna().tolist() == [True, True, False]
    assert summary["n_pairs"].tolist() == [1, 1, 1] and summary["n_seeds"].tolist() == [3, 3, 2]
    assert summary["text_alignment_mean"].tolist() == pytest.approx([22.0, 26.0, 26.0])
    assert summary["distance_mean"].tolist() == pytest.approx([0.32, 0.52, 0.42])
    assert summary[["text_alignment_lo", "text_alignment_hi", "distance_lo", "distance_hi"]].isna().all().all()
    assert (summary["scorer"] == SCORER).all()
    assert "sample_path" not in summary.columns
    assert list(summary.columns[:2 + len(SETTING_COLUMNS) + 2]) == ["method", "variant", *SETTING_COLUMNS, "n_pairs", "n_seeds"]


def test_summarise_ignores_nan_metric_values():
    summary = summarise(score_table(), metrics=("directional_similarity",))
    assert summary["directional_similarity_mean"].isna().all()
    table = pair_table({"p1": [1.0, np.nan], "p2": [np.nan, np.nan], "p3": [0.5, 0.5]}, metric="directional_similarity")
    row = one_row(table, metric="directional_similarity")
    assert row["directional_similarity_mean"] == pytest.approx(0.75)  # p2 has no value and is left out
    assert (row["directional_similarity_lo"], row["directional_similarity_hi"]) == (0.5, 1.0)


def test_summarise_rejects_mixed_scorers():
    table = score_table()
    table.loc[0, "scorer"] = "clip:ViT-B-32/laion2b_s34b_b79k+lpips:alex"
    with pytest.raises(ValueError, match="mixes scorers"):
        summarise(table)


# --- best alpha: the most faithful alpha that edits -----------------------------------------------------------------

def best_alpha_table(per_alpha: dict, pair: str = "three_to_eight") -> pd.DataFrame:
    """One pair, two seeds per alpha; `per_alpha` maps alpha -> (seed-mean clip_score, seed-mean lpips)."""
    rows = []
    for alpha, (clip, lpips) in per_alpha.items():
        for seed, offset in [(0, -1.0), (1, 1.0)]:
            rows.append((pair, "imagic", "imagic", seed, alpha, clip + 5 * offset, lpips + 0.01 * offset))
    table = pd.DataFrame(rows, columns=["pair_id", "method", "variant", "seed", "alpha", "text_alignment", "distance"])
    table["scorer"] = DIGITS
    return table


def test_a_faithful_alpha_that_does_not_edit_is_never_picked():
    # The old rule picked 0.6 here (lowest distance; P(target) ~ 0). Now 1.0 wins: the most faithful alpha
    # reaching 50, ahead of 1.2 (edits too, but further from the input).
    table = best_alpha_table({0.0: (0.0, 0.05), 0.6: (2.5e-7, 0.10), 1.0: (80.0, 0.30), 1.2: (95.0, 0.40)})
    best = pick_best_alpha(table, text_min=50.0)
    assert len(best) == 1
    row = best.iloc[0]
    assert bool(row["edited"]) and row["alpha"] == 1.0
    assert row["text_alignment"] == pytest.approx(80.0) and row["distance"] == pytest.approx(0.30)
    assert row["text_alignment_max"] == pytest.approx(95.0) and row["text_min"] == 50.0
    assert np.isnan(row["strength"])  # an Imagic row: its setting is alpha
    assert list(best.columns) == ["pair_id", "method", "variant", "edited", *SETTING_COLUMNS, "text_alignment",
                                  "distance", "text_alignment_max", "text_min", "scorer"]


def test_threshold_applies_to_the_seed_mean():
    # alpha 1.0: seeds score 47 and 57, mean 52 >= 50: it edits although one seed is below the threshold.
    table = best_alpha_table({1.0: (52.0, 0.3), 1.2: (90.0, 0.5)})
    assert pick_best_alpha(table, text_min=50.0).iloc[0]["alpha"] == 1.0
    # alpha 1.0 at mean 48 (one seed at 53): it does not edit
    table = best_alpha_table({1.0: (48.0, 0.3), 1.2: (90.0, 0.5)})
    assert pick_best_alpha(table, text_min=50.0).iloc[0]["alpha"] == 1.2


def test_a_pair_where_no_alpha_edits_is_reported_as_no_edit():
    table = pd.concat([
        best_alpha_table({0.0: (0.0, 0.05), 0.6: (1.0, 0.1), 1.0: (30.0, 0.3)}, pair="one_to_seven"),
        best_alpha_table({0.0: (0.0, 0.05), 1.0: (70.0, 0.3)}, pair="three_to_eight"),
    ])
    best = pick_best_alpha(table, text_min=50.0).set_index("pair_id")
    none = best.loc["one_to_seven"]
    assert not bool(none["edited"])
    assert np.isnan(none["alpha"]) and np.isnan(none["text_alignment"]) and np.isnan(none["distance"])
    assert none["text_alignment_max"] == pytest.approx(30.0)
    assert bool(best.loc["three_to_eight", "edited"]) and best.loc["three_to_eight", "alpha"] == 1.0


def test_best_alpha_never_names_an_alpha_below_the_threshold():
    rng = np.random.default_rng(5)
    tables = []
    for p in range(8):
        per_alpha = {alpha: (rng.uniform(0, 100), rng.uniform(0, 1)) for alpha in (0.0, 0.4, 0.8, 1.2)}
        tables.append(best_alpha_table(per_alpha, pair=f"p{p}"))
    table = pd.concat(tables)
    for text_min in (0.0, 40.0, 70.0, 101.0):
        best = pick_best_alpha(table, text_min=text_min)
        seed_means = table.groupby(["pair_id", "alpha"])[["text_alignment", "distance"]].mean()
        for row in best.itertuples():
            if row.edited:
                assert seed_means.at[(row.pair_id, row.alpha), "text_alignment"] >= text_min
                editing = seed_means.loc[row.pair_id]
                editing = editing[editing["text_alignment"] >= text_min]
                assert row.distance == pytest.approx(editing["distance"].min())
            else:
                assert np.isnan(row.alpha) and (seed_means.loc[row.pair_id, "text_alignment"] < text_min).all()
        if text_min > 100:
            assert not best["edited"].any()


# --- markdown ------------------------------------------------------------------------------------------------

def multi_pair_table() -> pd.DataFrame:
    """Three pairs with 0/1 digit outcomes: intervals reach the ends of the metric's range."""
    tables = []
    for alpha, outcomes in [(0.0, [0, 0, 0]), (0.6, [0, 100, 100]), (1.0, [100, 100, 100])]:
        table = pair_table({f"p{i}": [o, o] for i, o in enumerate(outcomes)}, alpha=alpha)
        table["distance"] = [0.05 + 0.5 * alpha + 0.1 * (i % 3) for i in range(len(table))]
        table["image_similarity"] = 1 - table["distance"]
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    both = pd.concat([table, table.assign(method="sdedit", variant="sdedit")], ignore_index=True)
    return as_sdedit_where(both, both["method"] == "sdedit")


def test_markdown_table_prints_mean_and_interval():
    text = markdown_table(summarise(multi_pair_table()), float_digits=2)
    assert "66.67 [0.00, 100.00]" in text and "0.00 [0.00, 0.00]" in text
    assert "n_pairs" in text and "n_seeds" in text
    assert "text_alignment_lo" not in text and "±" not in text and DIGITS in text
    one_pair = markdown_table(summarise(score_table()), float_digits=2)
    assert "22.00 [n/a: < 2 pairs]" in one_pair


def best_rows(model: str, distances: dict[str, float | None], edit_kind: str = "attribute") -> list[dict]:
    """`pick_best_alpha` rows of one model: pair -> distance at its best setting (None: no setting edits)."""
    return [{"pair_id": pair, "model": model, "edit_kind": edit_kind, "method": "imagic", "variant": "tuned",
             "edited": distance is not None, "distance": np.nan if distance is None else distance, "scorer": DIGITS}
            for pair, distance in distances.items()]


def differences(*models: list[dict], labels=("latent", "pixel")) -> pd.DataFrame:
    best = pd.DataFrame([row for rows in models for row in rows])
    return paired_model_differences(best, labels, by=("edit_kind", "method", "variant"))


def test_model_differences_are_per_pair_a_minus_b_with_a_paired_interval():
    # fidelity = 1 - distance: latent - pixel = 0.2, 0.1, 0.3 per pair (mean 0.2); both edit every pair
    table = differences(best_rows("latent", {"p1": 0.1, "p2": 0.2, "p3": 0.3}),
                        best_rows("pixel", {"p1": 0.3, "p2": 0.3, "p3": 0.6}))
    row = table.iloc[0]
    assert len(table) == 1 and (row["model_a"], row["model_b"], row["edit_kind"]) == ("latent", "pixel", "attribute")
    assert (row["n_pairs"], row["n_both_edited"]) == (3, 3)
    assert row["fidelity_diff_mean"] == pytest.approx(0.2)
    assert 0.1 - 1e-12 <= row["fidelity_diff_lo"] <= 0.2 <= row["fidelity_diff_hi"] <= 0.3 + 1e-12
    assert (row["edited_diff_mean"], row["edited_diff_lo"], row["edited_diff_hi"]) == (0.0, 0.0, 0.0)
    # the interval is bootstrap_mean_interval of the per-pair differences, nothing else
    assert (row["fidelity_diff_lo"], row["fidelity_diff_hi"]) == pytest.approx(
        bootstrap_mean_interval(np.array([0.2, 0.1, 0.3]))[1:])


def test_a_pair_one_model_lacks_is_dropped_and_fidelity_needs_both_edits():
    # p4 only the latent model has; p3 the pixel model does not edit: edited 1 - 0 there, no fidelity difference
    table = differences(best_rows("latent", {"p1": 0.1, "p2": 0.2, "p3": 0.3, "p4": 0.0}),
                        best_rows("pixel", {"p1": 0.3, "p2": 0.4, "p3": None}))
    row = table.iloc[0]
    assert (row["n_pairs"], row["n_both_edited"]) == (3, 2)
    assert row["edited_diff_mean"] == pytest.approx(1 / 3) and row["fidelity_diff_mean"] == pytest.approx(0.2)
    assert 0.0 <= row["edited_diff_lo"] <= row["edited_diff_mean"] <= row["edited_diff_hi"] <= 1.0


def test_model_differences_stay_in_minus_one_to_one_and_one_pair_has_no_interval():
    # the extreme: A edits every pair at distance 0, B edits none, or edits at distance 1
    extreme = differences(best_rows("latent", {"p1": 0.0, "p2": 0.0, "p3": 0.0}),
                          best_rows("pixel", {"p1": None, "p2": 1.0, "p3": 1.0})).iloc[0]
    assert (extreme["edited_diff_mean"], extreme["edited_diff_hi"]) == (pytest.approx(1 / 3), 1.0)
    assert extreme["fidelity_diff_lo"] == extreme["fidelity_diff_hi"] == 1.0
    reversed_ = differences(best_rows("latent", {"p1": 0.9, "p2": 1.0}), best_rows("pixel", {"p1": 0.0, "p2": 0.0}))
    assert -1.0 <= reversed_["fidelity_diff_lo"].item() <= reversed_["fidelity_diff_hi"].item() <= -0.9
    single = differences(best_rows("latent", {"p1": 0.1}), best_rows("pixel", {"p1": 0.3})).iloc[0]
    assert single["fidelity_diff_mean"] == pytest.approx(0.2) and np.isnan(single["fidelity_diff_lo"])


def test_pairing_keeps_a_constant_difference_exact_where_unpaired_intervals_are_wide():
    # the pairs differ a lot in difficulty (distance 0 to 0.8), the pixel model is 0.1 worse on every one
    base = dict(zip([f"p{i}" for i in range(8)], np.linspace(0.0, 0.8, 8)))
    row = differences(best_rows("latent", base), best_rows("pixel", {p: d + 0.1 for p, d in base.items()})).iloc[0]
    assert row["fidelity_diff_mean"] == pytest.approx(0.1)
    assert row["fidelity_diff_hi"] - row["fidelity_diff_lo"] < 1e-9  # every resample's mean difference is 0.1
    # resampling each model's pairs separately (unpaired) would give intervals 0.3+ wide for each model alone
    _, lo, hi = bootstrap_mean_interval(1 - np.array(list(base.values())))
    assert hi - lo > 0.3


def test_every_two_models_in_config_order_and_per_facet():
    rows = [row for model, shift in (("latent", 0.0), ("pixel", 0.2), ("latent_t5", 0.1))
            for kind in ("attribute", "structure")
            for row in best_rows(model, {f"{kind}{i}": 0.1 * i + shift for i in range(3)}, kind)]
    table = paired_model_differences(pd.DataFrame(rows), ["latent", "pixel", "latent_t5"],
                                     by=("edit_kind", "method", "variant"))
    assert list(zip(table["model_a"], table["model_b"], table["edit_kind"])) == [
        (a, b, kind) for a, b in (("latent", "pixel"), ("latent", "latent_t5"), ("pixel", "latent_t5"))
        for kind in ("attribute", "structure")]
    assert table["fidelity_diff_mean"].tolist() == pytest.approx([0.2, 0.2, 0.1, 0.1, -0.1, -0.1])
    assert (table["n_pairs"] == 3).all()
    # one model: nothing to compare, the columns stay
    one = paired_model_differences(pd.DataFrame(rows).drop(columns="model"), ["latent"], by=("method", "variant"))
    assert one.empty and "fidelity_diff_mean" in one.columns
