"""Tests of imagic_steps.stats on small hand-made score tables."""

import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imagic_steps.stats import markdown_table, mean_ci95, pick_best_alpha, plot_tradeoff, summarise

SCORER = "tiny-random(clip+lpips-alex)"


def test_mean_ci95_known_answer():
    mean, half_width, n = mean_ci95(np.array([1.0, 2.0, 3.0, 4.0]))
    # t_{0.975, 3} = 3.182446, sample std of [1, 2, 3, 4] = sqrt(5/3) = 1.290994, sqrt(4) = 2.
    assert n == 4
    assert mean == pytest.approx(2.5)
    assert half_width == pytest.approx(3.182446 * 1.290994 / 2, rel=1e-6)


def test_mean_ci95_small_samples():
    mean, half_width, n = mean_ci95(np.array([3.0]))
    assert (mean, n) == (3.0, 1) and math.isnan(half_width)
    mean, half_width, n = mean_ci95(np.array([np.nan, 1.0, 3.0]))
    assert n == 2 and mean == pytest.approx(2.0)
    assert half_width == pytest.approx(12.706205 * math.sqrt(2) / math.sqrt(2), rel=1e-6)


def score_table() -> pd.DataFrame:
    """Two imagic alphas (3 seeds each) and one sdedit strength (2 seeds) on one pair."""
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
    table = pd.DataFrame(rows, columns=["method", "alpha", "seed", "clip_score", "lpips", "clip_image_sim"])
    table["pair_id"] = "cat"
    table["variant"] = "original"
    table["directional_clip"] = np.nan
    table["scorer"] = SCORER
    table["sample_path"] = [f"s{i}.png" for i in range(len(table))]  # an extra column to be ignored
    return table


def test_summarise_groups_and_counts():
    summary = summarise(score_table())
    assert list(summary[["method", "alpha"]].itertuples(index=False, name=None)) == [
        ("imagic", 0.9),
        ("imagic", 1.1),
        ("sdedit", 0.6),
    ]
    assert summary["n"].tolist() == [3, 3, 2]
    assert summary["clip_score_mean"].tolist() == pytest.approx([22.0, 26.0, 26.0])
    assert summary["lpips_mean"].tolist() == pytest.approx([0.32, 0.52, 0.42])
    # Constant clip scores at alpha 1.1 give a zero-width interval; [20, 22, 24] has std 2.
    assert summary["clip_score_ci95"].tolist()[:2] == pytest.approx([4.302653 * 2 / math.sqrt(3), 0.0], rel=1e-6)
    assert (summary["scorer"] == SCORER).all()
    assert "sample_path" not in summary.columns


def test_summarise_ignores_nan_metric_values():
    summary = summarise(score_table(), metrics=("directional_clip",))
    assert summary["directional_clip_mean"].isna().all()


def test_summarise_rejects_mixed_scorers():
    table = score_table()
    table.loc[0, "scorer"] = "clip:ViT-B-32/laion2b_s34b_b79k+lpips:alex"
    with pytest.raises(ValueError, match="mixes scorers"):
        summarise(table)


def best_alpha_table(lpips_at_high_alpha: float, lpips_at_low_alpha: float) -> pd.DataFrame:
    """One pair, alphas 0.8 / 1.0 / 1.2 with rising CLIP score, two seeds each."""
    rows = []
    for alpha, clip, lpips in [(0.8, 20.0, 0.2), (1.0, 24.0, lpips_at_low_alpha), (1.2, 30.0, lpips_at_high_alpha)]:
        for seed, offset in [(0, -0.05), (1, 0.05)]:
            rows.append(("cat", "imagic", "original", seed, alpha, clip + 10 * offset, lpips + offset))
    table = pd.DataFrame(rows, columns=["pair_id", "method", "variant", "seed", "alpha", "clip_score", "lpips"])
    table["scorer"] = SCORER
    return table


def test_pick_best_alpha_respects_lpips_threshold():
    # alpha 1.2 has the highest CLIP score but mean lpips 0.7 > 0.6, so 1.0 (mean lpips 0.5) wins;
    # one seed of alpha 1.0 exceeds 0.6, which must not matter because seeds are averaged first.
    best = pick_best_alpha(best_alpha_table(lpips_at_high_alpha=0.7, lpips_at_low_alpha=0.58), lpips_max=0.6)
    assert len(best) == 1
    row = best.iloc[0]
    assert row["alpha"] == 1.0
    assert row["clip_score"] == pytest.approx(24.0) and row["lpips"] == pytest.approx(0.58)
    assert bool(row["qualified"]) is True
    assert list(best.columns[:5]) == ["pair_id", "method", "variant", "alpha", "clip_score"]


def test_pick_best_alpha_falls_back_to_lowest_lpips():
    table = best_alpha_table(lpips_at_high_alpha=0.9, lpips_at_low_alpha=0.8)
    table.loc[table["alpha"] == 0.8, "lpips"] += 0.5  # now 0.7 at alpha 0.8: nothing qualifies
    best = pick_best_alpha(table, lpips_max=0.6).iloc[0]
    assert best["alpha"] == 0.8
    assert best["lpips"] == pytest.approx(0.7)
    assert bool(best["qualified"]) is False


def test_plot_tradeoff_writes_png(tmp_path):
    table = score_table()
    table = pd.concat([table, table.assign(variant="modified", clip_score=table["clip_score"] + 1)])
    path = tmp_path / "plots" / "tradeoff.png"
    plot_tradeoff(summarise(table), path, title="cat: imagic vs sdedit")
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100
    assert [p.name for p in path.parent.iterdir()] == ["tradeoff.png"]  # no temporary file left behind


def test_markdown_table_has_mean_plus_minus_ci():
    text = markdown_table(summarise(score_table()), float_digits=2)
    assert "±" in text
    assert "22.00 ± 4.97" in text  # clip_score at alpha 0.9: 4.302653 * 2 / sqrt(3) = 4.968
    assert "clip_score_ci95" not in text and SCORER in text
