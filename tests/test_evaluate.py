import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imagic_steps.evaluate import score_table, scorer_note, write_evaluation
from imagic_steps.sdedit import SdeditParams, sdedit


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


def fake_scores(rows, path, scorer="tiny-random(clip+lpips-alex)"):
    frame = pd.DataFrame({
        "sample": [r["sample"] for r in rows],
        "clip_score": [10 + 10 * r["alpha"] + r["seed"] for r in rows],
        "clip_image_sim": [1 - 0.3 * r["alpha"] for r in rows],
        "lpips": [0.1 + 0.4 * r["alpha"] for r in rows],
        "directional_clip": np.nan,
        "scorer": scorer,
    })
    frame.to_csv(path, index=False)


def test_score_table_joins_every_sample_and_refuses_missing_scores(tmp_path):
    rows = sample_rows(tmp_path)
    fake_scores(rows[:5], tmp_path / "s1.csv")
    fake_scores(rows[5:], tmp_path / "s2.csv")
    table = score_table(rows, [tmp_path / "s1.csv", tmp_path / "s2.csv"])
    assert len(table) == len(rows)
    assert table.loc[table["sample"] == rows[7]["sample"], "clip_score"].item() == 10 + 10 * rows[7]["alpha"] + rows[7]["seed"]
    with pytest.raises(ValueError, match="no score"):
        score_table(rows, [tmp_path / "s1.csv"])
    assert "plumbing" in scorer_note(table)


def test_write_evaluation_outputs(tmp_path):
    rows = sample_rows(tmp_path)
    fake_scores(rows, tmp_path / "scores.csv")
    image = tmp_path / "input.png"
    Image.new("RGB", (64, 64), "white").save(image)
    out = {name: str(tmp_path / "out" / name) for name in
           ("scores_csv", "scores_parquet", "summary_csv", "summary_md", "tradeoff", "tradeoff_pairs", "best_alpha",
            "best_edits", "sweeps")}
    out["tradeoff"] += ".png"
    out["best_edits"] += ".png"
    write_evaluation(rows, [tmp_path / "scores.csv"], images={"p1": str(image), "p2": str(image)}, lpips_max=0.3,
                     sweeps={"s": {"field": "finetune.steps", "variants": {"b": 10}}}, out=out)
    summary = pd.read_csv(out["summary_csv"])
    first = summary[(summary["variant"] == "a") & (summary["alpha"] == 1.0)].iloc[0]
    # clip = 20 + seed over 2 pairs x 2 seeds -> mean 20.5
    assert first["n"] == 4 and first["clip_score_mean"] == pytest.approx(20.5)
    assert "±" in open(out["summary_md"]).read()
    best = pd.read_csv(out["best_alpha"])
    assert list(best["variant"]) == ["a", "a"]  # sweep variants are left to the sweep figure
    assert (best["alpha"] == 0.0).all()  # alpha 1 has lpips 0.5 > 0.3
    assert pd.read_parquet(out["scores_parquet"]).shape[0] == len(rows)
    assert Image.open(out["best_edits"]).size[1] > 2 * 16
    # the sweep's variants are plotted in the sweep figure; the main trade-off keeps the others
    assert (tmp_path / "out" / "sweeps" / "s.png").stat().st_size > 0


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
