"""Tests of imagic_steps.figures: the trade-off plot draws the summaries' intervals and the reference bands."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from PIL import Image

from imagic_steps.figures import ReferenceBand, plot_tradeoff, tradeoff_figure
from imagic_steps.stats import SETTING_COLUMNS, summarise
from test_stats import multi_pair_table, score_table


def test_tradeoff_error_bars_are_the_intervals_and_stay_in_range():
    summary = summarise(multi_pair_table())
    assert summary["text_alignment_lo"].min() == 0.0 and summary["text_alignment_hi"].max() == 100.0
    figure = tradeoff_figure(summary, title="digits")
    bars = [s for c in figure.axes[0].collections if isinstance(c, LineCollection) for s in c.get_segments()]
    assert bars
    ends = np.concatenate(bars)
    assert ends[:, 1].min() >= 0.0 and ends[:, 1].max() <= 100.0  # 100 · P(target) in [0, 100], nothing clipped
    assert ends[:, 0].min() >= 0.0 and ends[:, 0].max() <= 1.0  # 1 − distance in [0, 1]
    # the alpha-0.6 bar spans the whole interval [0, 100]
    vertical = [s for s in bars if s[0, 0] == s[1, 0]]
    assert any(sorted(s[:, 1]) == [0.0, 100.0] for s in vertical)


def test_plot_tradeoff_writes_png(tmp_path):
    table = multi_pair_table()
    path = tmp_path / "plots" / "tradeoff.png"
    plot_tradeoff(summarise(table), path, title="imagic vs sdedit")
    single = tmp_path / "plots" / "one_pair.png"
    plot_tradeoff(summarise(score_table()), single, title="one pair: no interval")  # NaN intervals: no bars
    for png in (path, single):
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size[0] > 100
    assert sorted(p.name for p in path.parent.iterdir()) == ["one_pair.png", "tradeoff.png"]  # no temporary file


def test_reference_bands_are_drawn_at_one_minus_the_distance_and_named_in_the_legend():
    bands = [ReferenceBand("same digit, other writer", 0.16, 0.24, 0.34), ReferenceBand("blank", 0.62, 0.67, 0.71)]
    figure = tradeoff_figure(summarise(multi_pair_table()), title="digits", references=bands)
    axes = figure.axes[0]
    spans = [patch for patch in axes.patches if patch.get_label().endswith("(median, IQR)")]
    assert len(spans) == 2
    for patch, band in zip(spans, bands):
        assert (patch.get_x(), patch.get_x() + patch.get_width()) == pytest.approx((1 - band.q75, 1 - band.q25))
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert "same digit, other writer (median, IQR)" in legend and "blank (median, IQR)" in legend
    medians = sorted(line.get_xdata()[0] for line in axes.get_lines() if line.get_linestyle() == "--")
    assert medians == pytest.approx([1 - 0.67, 1 - 0.24])
    plain = tradeoff_figure(summarise(multi_pair_table()), title="digits").axes[0]
    assert not [patch for patch in plain.patches if patch.get_label().endswith("(median, IQR)")]


def test_panels_share_one_legend_and_one_colour_per_method_though_a_panel_lacks_one():
    """Split by model, where one model has no SDEdit curve (as LEDITS++ is missing on IF): each (method, variant)
    keeps its colour in every panel, and one figure legend names every curve once."""
    from matplotlib.colors import to_hex

    table = multi_pair_table()
    both = pd.concat([table.assign(model="latent"), table[table["method"] != "sdedit"].assign(model="pixel")],
                     ignore_index=True)
    figure = tradeoff_figure(summarise(both, by=["model", "method", "variant", *SETTING_COLUMNS]), title="t",
                             panels_by=["model"])
    panels = [axes for axes in figure.axes if axes.get_title()]
    assert [axes.get_title() for axes in panels] == ["model latent", "model pixel"]
    colours = [{label: to_hex(handle[0].get_color()) for handle, label in zip(*axes.get_legend_handles_labels())}
               for axes in panels]
    assert set(colours[0]) == {"imagic / imagic", "sdedit / sdedit"} and set(colours[1]) == {"imagic / imagic"}
    assert colours[1]["imagic / imagic"] == colours[0]["imagic / imagic"] != colours[0]["sdedit / sdedit"]
    assert all(axes.get_legend() is None for axes in panels) and len(figure.legends) == 1
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["imagic / imagic", "sdedit / sdedit"]
