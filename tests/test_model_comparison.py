"""A several-model run's models side by side (imagic_steps.model_comparison): contrasts oriented as asked, the cells'
tables, the figure, and one-line errors."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from imagic_steps import model_comparison
from imagic_steps.stats import paired_model_differences, summarise_best

SCORER = "colour-digits(test)"
MODELS = ["latent", "pixel", "latent_t5"]
DIFFERENCE_COLUMNS = [f"{d}_{s}" for d in model_comparison.DIFFERENCES for s in ("mean", "lo", "hi")]


def best_table() -> pd.DataFrame:
    """`pick_best_alpha` rows: three models, two edit kinds, 5 pairs each; Imagic on all, LEDITS++ not on pixel;
    the pixel model edits fewer pairs and less faithfully, with a per-pair spread the bootstrap sees."""
    rng = np.random.default_rng(0)
    rows = []
    for model, shift, misses in (("latent", 0.0, 0), ("pixel", 0.15, 2), ("latent_t5", 0.05, 1)):
        for kind in ("attribute", "structure"):
            for method, variant in (("imagic", "tuned"), ("ledits", "ledits")):
                if method == "ledits" and model == "pixel":
                    continue
                for i in range(5):
                    edited = i >= misses
                    rows.append({"pair_id": f"{kind}{i}", "model": model, "edit_kind": kind, "method": method,
                                 "variant": variant, "edited": edited, "text_alignment": 80.0 if edited else 10.0,
                                 "distance": 0.1 + shift + 0.05 * rng.random() if edited else np.nan,
                                 "scorer": SCORER})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def differences() -> pd.DataFrame:
    return paired_model_differences(best_table(), MODELS, by=("edit_kind", "method", "variant"))


def test_a_contrast_stored_the_other_way_round_is_negated_with_its_interval_flipped(differences):
    # the run stores latent - pixel; pixel - latent must equal what the run would store with pixel first
    asked = model_comparison.oriented_contrast(differences, "pixel", "latent")
    direct = paired_model_differences(best_table(), ["pixel", "latent"], by=("edit_kind", "method", "variant"))
    assert (asked["model_a"] == "pixel").all() and (asked["contrast"] == "pixel − latent").all()
    assert asked[DIFFERENCE_COLUMNS].to_numpy() == pytest.approx(direct[DIFFERENCE_COLUMNS].to_numpy(), nan_ok=True)
    assert (asked["edited_diff_mean"] < 0).all() and (asked["fidelity_diff_hi"] < 0).all()
    assert (asked["edited_diff_lo"] <= asked["edited_diff_hi"]).all()
    assert not np.signbit(asked.loc[asked["edited_diff_mean"] == 0, "edited_diff_mean"]).any()  # no "-0.00"
    # the stored direction comes back unchanged
    stored = model_comparison.oriented_contrast(differences, "latent", "pixel")
    assert stored[DIFFERENCE_COLUMNS].to_numpy() == pytest.approx(
        differences[(differences["model_a"] == "latent") & (differences["model_b"] == "pixel")][DIFFERENCE_COLUMNS]
        .to_numpy(), nan_ok=True)


def test_an_unknown_label_or_a_bad_contrast_is_a_one_line_error(differences):
    with pytest.raises(ValueError, match="latent:pixel_clip.*its models are latent, latent_t5, pixel"):
        model_comparison.oriented_contrast(differences, "latent", "pixel_clip")
    for text in ("latent", "latent:latent", "latent:", "a:b:c"):
        with pytest.raises(ValueError, match="A:B"):
            model_comparison.parse_contrast(text)
    with pytest.raises(ValueError, match="no contrast to report"):
        model_comparison.model_contrasts(differences, [])


def test_the_tables_show_each_contrast_and_cell_with_its_interval_and_mark_missing_methods(differences):
    contrasts = model_comparison.model_contrasts(differences, [("latent", "pixel"), ("latent_t5", "latent")])
    text = model_comparison.contrasts_markdown(contrasts, "edited_diff")
    header = "| attribute: share of pairs edited, A − B | latent − pixel | latent_t5 − latent |"
    assert header in text and text.count("\n| imagic / tuned |") == 2  # one table per edit kind
    # latent edits 5 / 5, pixel 3 / 5: +0.40; the pixel model has no LEDITS++, so that contrast has none
    assert "| imagic / tuned | +0.40 [" in text and "| ledits | — | -0.20 [" in text
    best = best_table()
    cells = model_comparison.model_cells_markdown(summarise_best(best, by=("model", "edit_kind", "method", "variant")),
                                                  MODELS)
    summary = summarise_best(best, by=("model", "edit_kind", "method", "variant")).set_index(
        ["model", "edit_kind", "method"])
    pixel = summary.loc[("pixel", "attribute", "imagic")]
    assert f"3 / 5, {1 - pixel['distance_mean']:.2f} [{1 - pixel['distance_hi']:.2f}, " \
           f"{1 - pixel['distance_lo']:.2f}]" in cells
    assert "| ledits | 5 / 5, " in cells and " | — | 4 / 5, " in cells.split("| ledits |")[1].split("\n")[0]


def test_the_figure_has_a_row_of_panels_per_contrast_and_a_column_per_edit_kind_and_difference(differences):
    from imagic_steps.figures import contrasts_figure

    contrasts = model_comparison.model_contrasts(differences, [("latent", "pixel"), ("latent_t5", "latent")])
    figure = contrasts_figure(contrasts)
    assert len(figure.axes) == 2 * 4
    assert [figure.axes[4 * i].get_ylabel() for i in range(2)] == ["latent −\npixel", "latent_t5 −\nlatent"]
    assert [axes.get_title() for axes in figure.axes[:4]] == [
        "attribute: share of pairs edited", "attribute: fidelity, pairs both edit",
        "structure: share of pairs edited", "structure: fidelity, pairs both edit"]
    # latent - pixel: the Imagic dot sits right of 0 (latent edits more), LEDITS++ has none (pixel lacks it)
    dots = [line for line in figure.axes[0].lines if len(line.get_xdata()) == 1 and line.get_marker() == "o"]
    assert len(dots) == 1 and dots[0].get_xdata()[0] == pytest.approx(0.4)
    assert "—" in [text.get_text() for text in figure.axes[0].texts]
    # the share columns keep one x range, inside [-1.08, 1.08], down the figure
    assert figure.axes[0].get_xlim() == figure.axes[4].get_xlim() and figure.axes[0].get_xlim()[1] <= 1.08


def test_the_default_contrasts_vary_one_registered_factor_each_with_its_first_level_as_a():
    models = {"latent": "colour-digits-latent", "pixel": "colour-digits-pixel", "latent_t5": "colour-digits-latent-t5",
              "pixel_clip": "colour-digits-pixel-clip", "latent_seed1": "colour-digits-latent-seed1",
              "latent_t5_seed1": "colour-digits-latent-t5-seed1", "sd": "runwayml/stable-diffusion-v1-5"}
    assert model_comparison.one_factor_contrasts(models) == [
        ("latent", "pixel_clip", "space"), ("latent_t5", "pixel", "space"),
        ("latent", "latent_t5", "text encoder"), ("pixel_clip", "pixel", "text encoder"),
        ("latent_seed1", "latent_t5_seed1", "text encoder"),
        ("latent", "latent_seed1", "training seed"), ("latent_t5", "latent_t5_seed1", "training seed")]
    # latent and pixel differ in space and text encoder: no one-factor contrast; unregistered models have none
    assert model_comparison.one_factor_contrasts({"latent": "colour-digits-latent", "pixel": "colour-digits-pixel",
                                                  "sd": "runwayml/stable-diffusion-v1-5"}) == []


def test_the_command_writes_tables_and_a_figure_from_a_run_folder(tmp_path, differences, capsys):
    tables = tmp_path / "tables"
    tables.mkdir()
    summarise_best(best_table(), by=("model", "edit_kind", "method", "variant")).to_csv(
        tables / "best_summary.csv", index=False)
    differences.to_csv(tables / "model_differences.csv", index=False)
    # no --contrast: the one-factor contrasts of the plan's models (plan.json sorts its keys; config order wins)
    (tmp_path / "plan.json").write_text(json.dumps({"models": {
        "latent": {"id": "colour-digits-latent"}, "latent_t5": {"id": "colour-digits-latent-t5"},
        "pixel": {"id": "colour-digits-pixel"}}}))
    model_comparison.main([str(tmp_path)])
    written = pd.read_csv(tables / "model_contrasts.csv")
    assert list(dict.fromkeys(zip(written["contrast"], written["varies"]))) == [
        ("latent_t5 − pixel", "space"), ("latent − latent_t5", "text encoder")]
    assert "latent_t5 − pixel (space)" in (tables / "model_contrasts.md").read_text()
    model_comparison.main([str(tmp_path), "--contrast", "pixel:latent", "--contrast", "latent:latent_t5"])
    written = pd.read_csv(tables / "model_contrasts.csv")
    assert list(dict.fromkeys(written["contrast"])) == ["pixel − latent", "latent − latent_t5"]
    assert "resamples pairs" in (tables / "model_contrasts.md").read_text()
    assert (tables / "model_cells.md").read_text().count("| latent | latent_t5 | pixel |") == 2  # alphabetical
    assert Image.open(tmp_path / "figures" / "model_contrasts.png").width > 800
    with pytest.raises(SystemExit) as stop:
        model_comparison.main([str(tmp_path), "--contrast", "latent:pixel_clip"])
    error = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "\n" not in error and "pixel_clip" in error
    with pytest.raises(SystemExit):
        model_comparison.main([str(tmp_path / "nowhere"), "--contrast", "latent:pixel"])
    assert "best_summary.csv is missing" in capsys.readouterr().err
