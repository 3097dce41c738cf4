"""Tests of imagic_steps.figures: the trade-off plot draws the summaries' intervals and the reference bands; its point
labels, legends and texts overlap neither each other nor the data (nor do the sweep figure's). The montages show every
method of a pair, label it in a TrueType font with texts that fit their slots, and enlarge small samples by whole
factors without new colours; the Markdown tables print no "nan"."""

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection
from matplotlib.text import Text
from PIL import Image

from imagic_steps.evaluate import best_summary_markdown, summary_markdown, write_table
from imagic_steps.figures import (COMPARISON_GID, NO_EDIT_GREY, OTHERS_GREY, OTHERS_LABEL, ReferenceBand,
                                  best_edits_montage, best_settings_figure, label_font, pair_montage,
                                  plot_best_settings, plot_tradeoff, sweep_figure, tradeoff_figure)
from imagic_steps.stats import SETTING_COLUMNS, pick_best_alpha, summarise, summarise_best, with_setting_columns
from test_stats import multi_pair_table, score_table


def test_tradeoff_error_bars_are_the_intervals_and_stay_in_range():
    summary = summarise(multi_pair_table())
    assert summary["text_alignment_lo"].min() == 0.0 and summary["text_alignment_hi"].max() == 100.0
    figure = tradeoff_figure(summary, title="digits")
    bars = [s for axes in figure.axes for c in axes.collections if isinstance(c, LineCollection)
            for s in c.get_segments()]
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


def test_reference_bands_are_drawn_at_one_minus_the_distance_in_every_panel_and_named_in_the_legend():
    bands = [ReferenceBand("same digit, other writer", 0.16, 0.24, 0.34), ReferenceBand("blank", 0.62, 0.67, 0.71)]
    figure = tradeoff_figure(summarise(multi_pair_table()), title="digits", references=bands, threshold=50)
    assert len(figure.axes) == 2  # imagic, sdedit
    for axes in figure.axes:
        spans = [patch for patch in axes.patches if patch.get_label().endswith("(median, IQR)")]
        assert len(spans) == 2
        for patch, band in zip(spans, bands):
            assert (patch.get_x(), patch.get_x() + patch.get_width()) == pytest.approx((1 - band.q75, 1 - band.q25))
        medians = sorted(line.get_xdata()[0] for line in axes.get_lines() if line.get_linestyle() == "--")
        assert medians == pytest.approx([1 - 0.67, 1 - 0.24])
        assert [line.get_ydata()[0] for line in axes.get_lines() if line.get_linestyle() == ":"] == [50]
    assert len(figure.legends) == 1 and all(axes.get_legend() is None for axes in figure.axes)
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert "same digit, other writer (median, IQR)" in legend and "blank (median, IQR)" in legend
    assert "edit threshold (50)" in legend and OTHERS_LABEL in legend
    plain = tradeoff_figure(summarise(multi_pair_table()), title="digits")
    assert not [patch for axes in plain.axes for patch in axes.patches]
    assert not [text for text in plain.legends[0].get_texts() if text.get_text().endswith("(median, IQR)")]


def panel_curves(axes) -> tuple[list, list]:
    """A trade-off panel's curves: the coloured ones (Line2D with markers: (colour, error-bar collections of that
    colour)) and the grey comparison ones (Line2D)."""
    from matplotlib.colors import to_hex
    from matplotlib.container import ErrorbarContainer

    coloured = []
    for container in axes.containers:
        if isinstance(container, ErrorbarContainer):
            line, _, bars = container.lines
            coloured.append((to_hex(line.get_color()), [to_hex(c) for bar in bars for c in bar.get_colors()]))
    grey = [line for line in axes.get_lines() if line.get_gid() == COMPARISON_GID]
    return coloured, grey


def column_headers(figure) -> list[str]:
    """The facet headers above the top row of panels, left to right, each checked to stand over its column."""
    renderer = figure.canvas.get_renderer()
    top = [axes for axes in figure.axes if axes.get_subplotspec().rowspan.start == 0]
    headers = sorted((text for text in figure.texts if text.get_fontweight() == "bold"),
                     key=lambda text: text.get_window_extent(renderer).x0)
    assert len(headers) == len(top)
    for text, axes in zip(headers, sorted(top, key=lambda axes: axes.get_position().x0)):
        box, frame = text.get_window_extent(renderer), axes.get_window_extent(renderer)
        assert frame.x0 < (box.x0 + box.x1) / 2 < frame.x1 and box.y0 > frame.y1
    return [text.get_text() for text in headers]


def test_panels_by_facet_keep_one_colour_per_curve_though_a_facet_lacks_one():
    """Split by model, where one model has no SDEdit curve (as LEDITS++ is missing on the pixel model): one row per
    curve, one column per model; each curve keeps its colour in every column, the missing one gets a "not run here"
    panel, and each panel compares with the other curves of its own model only."""
    table = multi_pair_table()
    both = pd.concat([table.assign(model="latent"), table[table["method"] != "sdedit"].assign(model="pixel")],
                     ignore_index=True)
    figure = tradeoff_figure(summarise(both, by=["model", "method", "variant", *SETTING_COLUMNS]), title="t",
                             panels_by=["model"])
    imagic, sdedit = "imagic / imagic (α 0–1)", "sdedit / sdedit (strength 0–1)"  # the titles name the setting
    assert [axes.get_title() for axes in figure.axes] == [imagic, imagic, sdedit, sdedit]  # row by row
    assert column_headers(figure) == ["model latent", "model pixel"]
    (latent_imagic, latent_grey), (pixel_imagic, pixel_grey), (latent_sdedit, _), (pixel_sdedit, _) = \
        map(panel_curves, figure.axes)
    assert len(latent_imagic) == len(pixel_imagic) == len(latent_sdedit) == 1 and not pixel_sdedit
    assert latent_imagic[0][0] == pixel_imagic[0][0] != latent_sdedit[0][0]
    assert len(latent_grey) == 1 and not pixel_grey  # SDEdit behind Imagic on latent; nothing else on pixel
    assert [text.get_text() for text in figure.axes[3].texts] == ["not run here"]
    assert_readable(figure)


# The default digits run's trade-off (config/config.yaml, 3 pairs: summary.csv without the sweep's variants), rounded:
# (method, variant) -> [(setting, text mean, lo, hi, distance mean, lo, hi)]. Its labels piled up at P = 100 and at
# identity similarity ~1 (issue 35).
DEFAULT_RUN = {
    ("ddim_inversion", "ddim_inversion"): [
        (0, 0.0, 0.0, 0.0, 0.002, 0.001, 0.003), (0.5, 0.0, 0.0, 0.0, 0.036, 0.018, 0.061),
        (1, 66.7, 0.0, 100.0, 0.269, 0.215, 0.319), (2, 86.5, 59.4, 100.0, 0.434, 0.394, 0.462),
        (3, 100.0, 100.0, 100.0, 0.487, 0.418, 0.544), (5, 99.8, 99.5, 100.0, 0.516, 0.460, 0.570),
    ],
    ("imagic", "embed_only"): [
        (0, 0.0, 0.0, 0.0, 0.265, 0.069, 0.365), (0.6, 100.0, 100.0, 100.0, 0.444, 0.376, 0.546),
        (1, 100.0, 100.0, 100.0, 0.448, 0.398, 0.537), (1.2, 100.0, 100.0, 100.0, 0.449, 0.399, 0.537),
    ],
    ("imagic", "finetune_only"): [
        (0, 0.0, 0.0, 0.0, 0.012, 0.010, 0.015), (0.6, 0.0, 0.0, 0.0, 0.012, 0.010, 0.015),
        (1, 0.0, 0.0, 0.0, 0.012, 0.010, 0.015), (1.2, 0.0, 0.0, 0.0, 0.012, 0.010, 0.015),
    ],
    ("imagic", "imagic"): [
        (0, 0.0, 0.0, 0.0, 0.011, 0.006, 0.015), (0.6, 0.0, 0.0, 0.0, 0.080, 0.017, 0.199),
        (1, 90.2, 70.7, 100.0, 0.324, 0.137, 0.511), (1.2, 100.0, 100.0, 100.0, 0.390, 0.306, 0.512),
    ],
    ("imagic", "modified"): [
        (0, 33.3, 0.0, 100.0, 0.177, 0.056, 0.298), (0.6, 100.0, 100.0, 100.0, 0.326, 0.288, 0.364),
        (1, 100.0, 100.0, 100.0, 0.374, 0.333, 0.407), (1.2, 100.0, 100.0, 100.0, 0.384, 0.340, 0.424),
    ],
    ("ledits", "ledits"): [
        (0, 0.0, 0.0, 0.0, 0.002, 0.001, 0.003), (1, 64.9, 0.0, 100.0, 0.162, 0.038, 0.315),
        (2, 83.5, 50.4, 100.0, 0.369, 0.360, 0.386), (3, 100.0, 100.0, 100.0, 0.416, 0.376, 0.463),
        (5, 100.0, 100.0, 100.0, 0.437, 0.383, 0.506), (10, 100.0, 100.0, 100.0, 0.452, 0.391, 0.539),
    ],
    ("sdedit", "sdedit"): [
        (0.1, 0.0, 0.0, 0.0, 0.004, 0.002, 0.004), (0.3, 0.0, 0.0, 0.0, 0.023, 0.013, 0.033),
        (0.5, 18.4, 0.0, 52.9, 0.123, 0.048, 0.234), (0.7, 84.4, 53.2, 100.0, 0.343, 0.210, 0.416),
        (0.9, 100.0, 100.0, 100.0, 0.424, 0.350, 0.471),
    ],
}
SETTING_OF = {"imagic": "alpha", "sdedit": "strength", "ledits": "edit_guidance", "ddim_inversion": "target_guidance"}
DIGITS_BANDS = [ReferenceBand("same digit, other writer", 0.161, 0.242, 0.336),  # the digits classifier's calibration
                ReferenceBand("target digit, other writer", 0.43, 0.497, 0.565),
                ReferenceBand("blank", 0.624, 0.668, 0.711)]

# The default run's best-setting summary (tables/best_summary.csv of that run, rounded): (method, variant) ->
# (n_pairs, n_edited, distance mean, lo, hi); finetune_only edits no pair.
DEFAULT_BEST = {("ddim_inversion", "ddim_inversion"): (3, 3, 0.327, 0.215, 0.447),
                ("imagic", "embed_only"): (3, 3, 0.440, 0.376, 0.537),
                ("imagic", "finetune_only"): (3, 0, np.nan, np.nan, np.nan),
                ("imagic", "imagic"): (3, 3, 0.324, 0.137, 0.511),
                ("imagic", "modified"): (3, 3, 0.305, 0.288, 0.328),
                ("ledits", "ledits"): (3, 3, 0.269, 0.132, 0.361),
                ("sdedit", "sdedit"): (3, 3, 0.282, 0.210, 0.404)}
# config/analysis.yaml's best-setting summary (docs/results.md): (model, edit kind) -> (method, variant) -> as above;
# no LEDITS++ on the pixel model, a single editing pair has no interval.
ANALYSIS_CURVES = [("imagic", "original"), ("imagic", "modified"), ("imagic", "tuned"), ("imagic", "tuned_guidance1"),
                   ("sdedit", "sdedit"), ("ddim_inversion", "ddim_inversion"), ("ledits", "ledits")]
NONE = (np.nan, np.nan, np.nan)  # no pair edits: no distance
ANALYSIS_BEST = {
    ("latent", "attribute"): [(4, 4, 0.189, 0.084, 0.332), (4, 4, 0.207, 0.133, 0.284), (4, 3, 0.033, 0.013, 0.046),
                              (4, 1, 0.021, np.nan, np.nan), (4, 4, 0.153, 0.104, 0.209), (4, 4, 0.027, 0.011, 0.042),
                              (4, 4, 0.212, 0.140, 0.281)],
    ("latent", "structure"): [(4, 4, 0.415, 0.345, 0.484), (4, 4, 0.417, 0.366, 0.468), (4, 3, 0.363, 0.282, 0.479),
                              (4, 2, 0.215, 0.178, 0.253), (4, 4, 0.428, 0.360, 0.510), (4, 4, 0.366, 0.242, 0.491),
                              (4, 4, 0.399, 0.303, 0.463)],
    ("pixel", "attribute"): [(4, 1, 0.631, np.nan, np.nan), (4, 4, 0.191, 0.105, 0.278), (4, 0, *NONE),
                             (4, 0, *NONE), (4, 2, 0.245, 0.181, 0.310), (4, 4, 0.314, 0.227, 0.390)],
    ("pixel", "structure"): [(4, 0, *NONE), (4, 3, 0.242, 0.209, 0.290), (4, 0, *NONE), (4, 0, *NONE), (4, 0, *NONE),
                             (4, 4, 0.504, 0.439, 0.569)],
}
ANALYSIS_SETTINGS = {"imagic": (0, 0.4, 0.7, 1, 1.2), "sdedit": (0.5, 0.8), "ddim_inversion": (1, 3, 5),
                     "ledits": (5, 10)}


def best_of(rows: dict, **columns) -> pd.DataFrame:
    """A `summarise_best`-shaped table of `rows` ((method, variant) -> (n_pairs, n_edited, distance mean, lo, hi))."""
    return pd.DataFrame([{"method": method, "variant": variant, "n_pairs": n_pairs, "n_edited": n_edited,
                          "edited_percent_mean": 100.0 * n_edited / n_pairs, "distance_mean": mean,
                          "distance_lo": lo, "distance_hi": hi, "scorer": "digits-classifier", **columns}
                         for (method, variant), (n_pairs, n_edited, mean, lo, hi) in rows.items()])


def analysis_best() -> pd.DataFrame:
    return pd.concat([best_of(dict(zip(ANALYSIS_CURVES, rows)), model=model, edit_kind=kind)
                      for (model, kind), rows in ANALYSIS_BEST.items()], ignore_index=True)


def analysis_run(seed: int = 0) -> pd.DataFrame:
    """A trade-off summary in config/analysis.yaml's shape: two models x two edit kinds, the 7 curves of
    `ANALYSIS_CURVES` (LEDITS++ on the latent model only) along their settings, n = 4 pairs: each curve from near
    the input (identity ~0.95-1, no edit) towards an edit, with long intervals, several saturating at 100."""
    rng = np.random.default_rng(seed)
    frames = []
    for model, kind in ANALYSIS_BEST:
        curves = {}
        for method, variant in ANALYSIS_CURVES:
            if method == "ledits" and model == "pixel":
                continue
            settings = ANALYSIS_SETTINGS[method]
            distance = np.sort(rng.uniform(0.0, 0.7, len(settings)))
            distance[0] = rng.uniform(0.0, 0.06)
            text = np.sort(rng.choice([0.0, 0.0, 5.0, 30.0, 60.0, 90.0, 100.0, 100.0], len(settings)))
            curves[(method, variant)] = [
                (s, t, max(t - rng.uniform(0, 40), 0), min(t + rng.uniform(0, 40), 100), d,
                 max(d - rng.uniform(0, 0.12), 0), min(d + rng.uniform(0, 0.12), 1))
                for s, t, d in zip(settings, text, distance)]
        frames.append(summary_of(curves, model=model, edit_kind=kind, n_pairs=4))
    return pd.concat(frames, ignore_index=True)


def summary_of(curves: dict, **columns) -> pd.DataFrame:
    """A `summarise`-shaped table of `curves` ((method, variant) -> rows as in DEFAULT_RUN); `columns`: constants."""
    rows = []
    for (method, variant), points in curves.items():
        for setting, text, text_lo, text_hi, distance, distance_lo, distance_hi in points:
            row = {"method": method, "variant": variant, **{column: np.nan for column in SETTING_COLUMNS},
                   "n_pairs": 3, "n_seeds": 2, "text_alignment_mean": text, "text_alignment_lo": text_lo,
                   "text_alignment_hi": text_hi, "distance_mean": distance, "distance_lo": distance_lo,
                   "distance_hi": distance_hi, "scorer": "digits-classifier", **columns}
            row[SETTING_OF[method]] = setting
            rows.append(row)
    return pd.DataFrame(rows)


def crowded_curves(n_curves: int = 8, seed: int = 0) -> dict:
    """Curves on top of one another: all start at identity (~1, 0), saturate at 100 within a few hundredths of
    each other, with long intervals; 7 settings each, some repeated at one place."""
    rng = np.random.default_rng(seed)
    methods = [("imagic", f"v{i}") for i in range(n_curves - 3)] + [("sdedit", "sdedit"), ("ledits", "ledits"),
                                                                     ("ddim_inversion", "ddim_inversion")]
    curves = {}
    for method, variant in methods:
        settings = np.round(np.linspace(0, 1.2, 7), 2) if method != "sdedit" else np.round(np.linspace(0.1, 0.9, 7), 2)
        distance = np.clip(np.sort(rng.uniform(0.0, 0.5, 7)) + rng.normal(0, 0.01, 7), 0.001, 1)
        text = np.clip(np.sort(np.r_[0, 0, rng.uniform(0, 100, 2), 100, 100, 100]), 0, 100)
        distance[-2:] = distance[-3]  # the last settings coincide: one place, one label
        curves[(method, variant)] = [(s, t, max(t - 30, 0), min(t + 30, 100), d, max(d - 0.1, 0), d + 0.1)
                                     for s, t, d in zip(settings, text, distance)]
    return curves


def drawn_texts(figure) -> list[Text]:
    """Every non-empty text the figure draws (tick labels of ticks in view only)."""
    figure.canvas.draw()
    ticks, shown = set(), set()
    for axes in figure.axes:
        for axis in (axes.xaxis, axes.yaxis):
            low, high = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks.update({id(tick.label1), id(tick.label2)})
                if low - 1e-9 * (high - low) <= tick.get_loc() <= high + 1e-9 * (high - low):
                    shown.update({id(tick.label1), id(tick.label2)})
    return [text for text in figure.findobj(Text) if text.get_visible() and text.get_text().strip()
            and (id(text) not in ticks or id(text) in shown)]


def overlap(a, b, tolerance: float = 0.5) -> bool:
    """Whether two display boxes overlap by more than `tolerance` pixels in both directions."""
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > tolerance) and (min(a.y1, b.y1) - max(a.y0, b.y0) > tolerance)


def data_pixels(axes) -> tuple[np.ndarray, np.ndarray]:
    """The data of `axes` in display pixels, from its artists' paths: points every half pixel along each line
    (Line2D lines, error-bar LineCollections) and the boxes (x0, y0, x1, y1) of the markers (data points, caps). A
    trade-off panel's grey comparison curves are background, which a label may cross on its white box: left out."""
    scale = axes.figure.dpi / 72
    samples, markers = [], []
    polylines = []
    for line in axes.get_lines():
        if line.get_gid() == COMPARISON_GID:
            continue
        path = line.get_transform().transform_path(line.get_path())
        if line.get_linestyle() not in ("None", "none", "", " "):
            polylines.append(path.vertices)
        if line.get_marker() not in (None, "None", "none", "", " "):
            half = line.get_markersize() * scale / 2
            markers += [(x - half, y - half, x + half, y + half) for x, y in path.vertices if np.isfinite([x, y]).all()]
    for collection in axes.collections:
        if isinstance(collection, LineCollection):
            polylines += [collection.get_transform().transform_path(path).vertices for path in collection.get_paths()]
    for vertices in polylines:
        for start, end in zip(vertices[:-1], vertices[1:]):
            if np.isfinite([start, end]).all():
                steps = max(2, int(np.hypot(*(end - start)) * 2) + 1)
                samples.append(start + np.linspace(0, 1, steps)[:, None] * (end - start))
    return (np.concatenate(samples) if samples else np.zeros((0, 2))), np.array(markers).reshape(-1, 4)


def assert_readable(figure) -> list[Text]:
    """No two texts of `figure` overlap or leave the figure; no point label (an axes' texts) touches a line, error
    bar or marker or leaves its axes; no legend overlaps an axes. Returns the point labels."""
    texts = drawn_texts(figure)
    renderer = figure.canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in texts]
    page = figure.bbox
    for text, box in zip(texts, boxes):
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1, text.get_text()
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            assert not overlap(boxes[i], boxes[j]), (texts[i].get_text(), texts[j].get_text())
    frames = [axes.get_window_extent(renderer) for axes in figure.axes]
    legends = [*figure.legends, *(axes.get_legend() for axes in figure.axes if axes.get_legend())]
    for legend, frame in ((legend, frame) for legend in legends for frame in frames):
        assert not overlap(legend.get_window_extent(renderer), frame, tolerance=0), "a legend covers an axes"
    labels = []
    for axes, frame in zip(figure.axes, frames):
        samples, markers = data_pixels(axes)
        for text in axes.texts:
            box = text.get_window_extent(renderer)
            labels.append(text)
            assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            inside = ((samples[:, 0] > box.x0 + 0.5) & (samples[:, 0] < box.x1 - 0.5)
                      & (samples[:, 1] > box.y0 + 0.5) & (samples[:, 1] < box.y1 - 0.5))
            assert not inside.any(), f"label {text.get_text()!r} lies on a line or error bar"
            hit = ((markers[:, 0] < box.x1 - 0.5) & (box.x0 + 0.5 < markers[:, 2])
                   & (markers[:, 1] < box.y1 - 0.5) & (box.y0 + 0.5 < markers[:, 3]))
            assert not hit.any(), f"label {text.get_text()!r} lies on a marker"
    return labels


DIGITS_OPTIONS = dict(references=DIGITS_BANDS, threshold=50,  # as evaluate.tradeoff_options gives them
                      xlabel="identity similarity to input (1 − classifier-feature cosine distance; higher = closer)",
                      ylabel="100 · P(target digit) (higher = edit achieved)")
MAX_WIDTH = 1800  # pixels: the widest a figure may be at its dpi


def assert_one_coloured_curve_per_panel(panels: dict) -> None:
    """Each of `panels` (axes -> how many curves its facet combination holds) draws one curve in colour, with its
    error bars in that colour and its point labels in it, and every other curve of its facet combination once, in
    grey, without markers or bars."""
    from matplotlib.colors import to_hex

    for axes in panels:
        coloured, grey = panel_curves(axes)
        assert len(coloured) == 1, axes.get_title()
        colour, bars = coloured[0]
        assert bars and set(bars) == {colour} and colour != to_hex(OTHERS_GREY)
        assert {to_hex(text.get_color()) for text in axes.texts} <= {colour}
        assert all(to_hex(line.get_color()) == to_hex(OTHERS_GREY) and line.get_marker() in ("None", None, "")
                   for line in grey)
        assert len(grey) == panels[axes] - 1  # every other curve of the facet combination, once
        assert not [line for line in axes.get_lines() if line.get_marker() not in ("None", None, "")
                    and to_hex(line.get_color()) != colour]  # no other coloured points (error-bar caps are its)


def test_default_run_tradeoff_is_one_panel_per_curve_with_labels_that_overlap_nothing():
    """The default run's figure (7 curves, reference bands, the edit threshold): 7 panels in rows of 4 (the spare
    axes removed), each titled with its curve's name and setting range, its curve alone in colour with its bars
    and labels and the other six in grey behind it; bands and threshold in every panel, shared axes, one legend
    below. No text overlaps another or leaves the figure, no point label lies on the data; every curve keeps
    some labels."""
    summary = summary_of(DEFAULT_RUN)
    figure = tradeoff_figure(summary, title="t\nmean over pairs", **DIGITS_OPTIONS)
    labels = assert_readable(figure)
    titles = [axes.get_title().replace("\n", " ") for axes in figure.axes]
    assert titles == ["ddim_inversion / ddim_inversion (target guidance 0–5)", "imagic / embed_only (α 0–1.2)",
                      "imagic / finetune_only (α 0–1.2)", "imagic / imagic (α 0–1.2)", "imagic / modified (α 0–1.2)",
                      "ledits / ledits (edit guidance 0–10)", "sdedit / sdedit (strength 0.1–0.9)"]
    grid = [(axes.get_subplotspec().rowspan.start, axes.get_subplotspec().colspan.start) for axes in figure.axes]
    assert grid == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]
    assert_one_coloured_curve_per_panel({axes: len(DEFAULT_RUN) for axes in figure.axes})
    for axes in figure.axes:
        assert len([patch for patch in axes.patches if patch.get_label().endswith("(median, IQR)")]) == 3
        assert [line.get_ydata()[0] for line in axes.get_lines() if line.get_linestyle() == ":"] == [50]
        assert axes.get_shared_x_axes().joined(axes, figure.axes[0])
        assert axes.get_shared_y_axes().joined(axes, figure.axes[0])
        assert axes.texts  # every curve has at least one point labelled
    assert len(figure.legends) == 1
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert [name for name in legend if "median" in name or name in (OTHERS_LABEL, "edit threshold (50)")] == \
        [OTHERS_LABEL, "edit threshold (50)", *(f"{band.label} (median, IQR)" for band in DIGITS_BANDS)]
    assert 20 <= len(labels) < sum(map(len, DEFAULT_RUN.values()))  # most: crowded points go without
    assert "0–1.2" in [text.get_text() for text in labels]  # finetune_only's four alphas at one place: one label
    width, height = figure.get_size_inches() * figure.dpi
    assert 3 * 4 * figure.dpi <= width <= MAX_WIDTH and height < 2.4 * 2 * figure.dpi + 300
    # the panel above the removed spare shows its x tick labels; the panels above others do not
    shown = [axes for axes in figure.axes if any(label.get_visible() and label.get_text()
                                                 for label in axes.get_xticklabels())]
    assert shown == figure.axes[3:]


@pytest.mark.slow  # ~6 s of layout; the fast tier keeps the smaller trade-off figures
def test_analysis_tradeoff_is_a_row_per_curve_and_a_column_per_facet_combination():
    """config/analysis.yaml's shape: two facets (model x edit kind), 7 curves, LEDITS++ not run on the pixel model:
    7 rows x 4 columns under the facet headers, "not run here" where a curve is missing, grey comparison curves of
    the panel's own facet combination only; readable, and no wider than MAX_WIDTH."""
    summary = analysis_run()
    figure = tradeoff_figure(summary, title="t\nmean over pairs", panels_by=["model", "edit_kind"], **DIGITS_OPTIONS)
    assert_readable(figure)
    assert column_headers(figure) == [f"model {model} · edit_kind {kind}" for model, kind in ANALYSIS_BEST]
    assert len(figure.axes) == 7 * 4
    missing = [axes for axes in figure.axes if [text.get_text() for text in axes.texts] == ["not run here"]]
    assert [(axes.get_title(), axes.get_subplotspec().colspan.start) for axes in missing] == \
        [("ledits / ledits (edit guidance 5–10)", 2), ("ledits / ledits (edit guidance 5–10)", 3)]
    assert all(not axes.lines and not axes.collections for axes in missing)
    combinations = list(ANALYSIS_BEST)  # the columns, in order; LEDITS++ only on the latent model
    assert_one_coloured_curve_per_panel(
        {axes: 7 if combinations[axes.get_subplotspec().colspan.start][0] == "latent" else 6
         for axes in figure.axes if axes not in missing})
    assert figure.get_size_inches()[0] * figure.dpi <= MAX_WIDTH


def summary_rows(axes) -> list[tuple]:
    """A best-settings panel's rows, top to bottom: (name, the text at its right, its dot's colour and x or None,
    its interval's x ends or None)."""
    from matplotlib.colors import to_hex
    from matplotlib.container import ErrorbarContainer

    renderer = axes.figure.canvas.get_renderer()
    dots = {}
    for container in axes.containers:
        if isinstance(container, ErrorbarContainer):
            line, _, bars = container.lines
            (x,), (y,) = line.get_xdata(), line.get_ydata()
            ends = tuple(sorted(bars[0].get_segments()[0][:, 0])) if bars else None
            dots[round(y)] = (to_hex(line.get_color()), x, ends)
    ticks = axes.get_yticks()  # the names, shown left of the first column only (shared y)
    names = list(zip(axes.yaxis.get_major_formatter().format_ticks(ticks), ticks))
    counts = [label.get_text() for label in axes.child_axes[0].get_yticklabels()]
    heights = [label.get_window_extent(renderer).y0 for label in axes.child_axes[0].get_yticklabels()]
    rows = [(name, count, *(dots.get(round(tick), (None, None, None))), height)
            for (name, tick), count, height in zip(names, counts, heights)]
    return [row[:-1] for row in sorted(rows, key=lambda row: -row[-1])]


def test_best_settings_figure_ranks_by_fidelity_with_the_summarys_intervals():
    """The default run's best-setting summary: one row per method / variant, most faithful first, a dot at 1 − the
    mean distance with the interval (1 − hi, 1 − lo) in the curve's trade-off colour, inside [0, 1]; "edits 3 / 3
    pairs" at the right, and finetune_only, which edits no pair, last with "edits 0 / 3 pairs" and no dot. The
    title says what it shows, n and the threshold; the bands are the trade-off's; readable."""
    best = best_of(DEFAULT_BEST)
    figure = best_settings_figure(best, **DIGITS_OPTIONS)
    assert_readable(figure)
    (axes,) = figure.axes
    rows = summary_rows(axes)
    fidelity = {f"{m} / {v}": 1 - mean for (m, v), (_, _, mean, _, _) in DEFAULT_BEST.items()}
    assert [row[0] for row in rows] == sorted(fidelity, key=lambda name: -np.nan_to_num(fidelity[name], nan=-1))
    assert rows[-1][0] == "imagic / finetune_only" and rows[-1][1:] == ("edits 0 / 3 pairs", None, None, None)
    tradeoff = tradeoff_figure(summary_of(DEFAULT_RUN), "t", **DIGITS_OPTIONS)
    colours = {axes.get_title().replace("\n", " ").split(" (")[0]: panel_curves(axes)[0][0][0]
               for axes in tradeoff.axes}
    low, high = axes.get_xlim()
    assert 0 <= low < high <= 1
    for name, count, colour, x, ends in rows[:-1]:
        n_pairs, n_edited, mean, lo, hi = DEFAULT_BEST[tuple(name.split(" / "))]
        assert count == f"edits {n_edited} / {n_pairs} pairs" and colour == colours[name]
        assert x == pytest.approx(1 - mean) and ends == pytest.approx((1 - hi, 1 - lo))
        assert low <= ends[0] < x < ends[1] <= high
    assert len([patch for patch in axes.patches if patch.get_label().endswith("(median, IQR)")]) == 3
    title = figure.get_suptitle()
    assert "keeps the input best while making the edit" in title and "n = 3 pairs" in title
    assert "100 · P(target digit) ≥ 50" in title.replace("\n", " ")
    legend = [text.get_text() for text in figure.legends[0].get_texts()]
    assert [f"{band.label} (median, IQR)" for band in DIGITS_BANDS] == legend[1:]
    assert figure.get_size_inches()[0] * figure.dpi <= MAX_WIDTH


def test_best_settings_figure_has_a_panel_per_facet_combination_with_the_rows_aligned(tmp_path):
    """config/analysis.yaml's shape: a panel per (model, edit kind), on a shared x axis, each with every method in
    the same row (sorted by the mean fidelity over the panels where it edits); LEDITS++ "not run" on the pixel
    model, "edits 0 / 4 pairs" without a dot where no pair edits, a dot without an interval from a single edited
    pair; readable, and written as PNG."""
    best = analysis_best()
    figure = best_settings_figure(best, panels_by=["model", "edit_kind"], **DIGITS_OPTIONS)
    assert_readable(figure)
    assert [axes.get_title() for axes in figure.axes] == [f"model {m} · edit_kind {k}" for m, k in ANALYSIS_BEST]
    panels = [summary_rows(axes) for axes in figure.axes]
    names = [row[0] for row in panels[0]]
    assert all([row[0] for row in rows] == names for rows in panels)  # aligned
    fidelity = (1 - best["distance_mean"]).groupby(best["method"] + " / " + best["variant"]).mean()
    assert names == list(fidelity.sort_values(ascending=False).index)
    renderer = figure.canvas.get_renderer()
    for a, b in ((0, 1), (2, 3)):  # side by side: the same heights
        assert [label.get_window_extent(renderer).y0 for label in figure.axes[a].child_axes[0].get_yticklabels()] \
            == [label.get_window_extent(renderer).y0 for label in figure.axes[b].child_axes[0].get_yticklabels()]
    assert all(axes.get_shared_x_axes().joined(axes, figure.axes[0]) for axes in figure.axes)
    by_panel = {key: {row[0]: row[1:] for row in rows} for key, rows in zip(ANALYSIS_BEST, panels)}
    assert by_panel[("pixel", "attribute")]["ledits / ledits"] == ("not run", None, None, None)
    assert by_panel[("pixel", "structure")]["imagic / tuned"] == ("edits 0 / 4 pairs", None, None, None)
    count, _, x, ends = by_panel[("latent", "attribute")]["imagic / tuned_guidance1"]
    assert count == "edits 1 / 4 pairs" and x == pytest.approx(1 - 0.021) and ends is None
    low, high = figure.axes[0].get_xlim()
    assert 0 <= low and high <= 1
    for rows in panels:
        assert all(low <= end <= high for row in rows if row[4] for end in row[4])
    assert "n = 4 pairs" in figure.get_suptitle()
    assert figure.get_size_inches()[0] * figure.dpi <= MAX_WIDTH
    plot_best_settings(best, tmp_path / "best_settings.png", panels_by=["model", "edit_kind"], **DIGITS_OPTIONS)
    with Image.open(tmp_path / "best_settings.png") as image:
        assert image.format == "PNG" and image.size[0] <= MAX_WIDTH


def test_crowded_tradeoff_drops_labels_rather_than_overlap_in_one_panel_and_in_panels():
    """Eight curves on top of one another, with long intervals, in one panel and split into two panels: labels are
    left out where there is no room, never drawn over one another or the data."""
    crowded = summary_of(crowded_curves())
    labels = assert_readable(tradeoff_figure(crowded, title="crowded", references=DIGITS_BANDS[:1], threshold=50))
    assert labels  # the ends that have room keep theirs
    two = pd.concat([crowded.assign(model="a"), summary_of(crowded_curves(seed=1), model="b")], ignore_index=True)
    figure = tradeoff_figure(two, title="crowded panels", threshold=50, panels_by=["model"])
    assert all(axes.texts for axes in figure.axes)
    assert_readable(figure)


def test_sweep_figure_keeps_its_legend_and_texts_off_the_data():
    means = pd.DataFrame([{"alpha": alpha, "value": value, "text_alignment": 100.0 * (alpha > 0.5),
                           "distance": 0.1 * alpha + value / 1000, "image_similarity": 0.9 - 0.3 * alpha}
                          for alpha in (0.0, 0.6, 1.0, 1.2) for value in (0, 75, 150)])
    figure = sweep_figure(means, "sweep", "finetune.steps",
                          {"text_alignment": "100 · P(target digit)", "distance": "identity distance",
                           "image_similarity": "SSIM"})
    assert_readable(figure)
    assert [text.get_text() for text in figure.legends[0].get_texts()] == ["α = 0", "α = 0.6", "α = 1", "α = 1.2"]


def write_samples(folder, name: str, values, size: int = 32, seed: int = 0) -> list[str]:
    """One `size` px PNG per value, each of random pixels from a palette of its own (so a tile can be told apart)."""
    rng = np.random.default_rng(seed)
    paths = []
    for index, value in enumerate(values):
        palette = rng.integers(0, 256, size=(6, 3), dtype=np.uint8)
        path = folder / f"{name}_{value:g}.png"
        Image.fromarray(palette[rng.integers(0, 6, size=(size, size))]).save(path)
        paths.append(str(path))
    return paths


def montage_rows(folder) -> list[dict]:
    """One Imagic variant (2 seeds, 2 alphas), then SDEdit (2 seeds, 3 strengths) and DDIM inversion (its one seed,
    2 target guidances), as imagic_steps.results_layout.montage_rows gives them."""
    grids = [("imagic", "finetune_steps-150", "alpha", (0.0, 1.0), (0, 1)),
             ("sdedit", "sdedit", "strength", (0.3, 0.5, 0.9), (0, 1)),
             ("ddim_inversion", "ddim_inversion", "target_guidance", (0.0, 0.5), (0,))]
    return [{"method": method, "name": [name], "seed": seed, "setting": setting, "values": list(values),
             "samples": write_samples(folder, f"{name}_s{seed}", values, seed=10 * index + seed)}
            for index, (method, name, setting, values, seeds) in enumerate(grids) for seed in seeds]


def input_png(folder) -> str:
    path = folder / "input.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(path)
    return str(path)


def slot_texts(montage) -> dict:
    """slot -> its text, the lines joined by spaces."""
    texts = {}
    for text in montage.texts:
        texts[text.slot] = f"{texts[text.slot]} {text.text}" if text.slot in texts else text.text
    return texts


def test_pair_montage_has_a_row_per_method_and_seed_with_each_methods_setting_titles(tmp_path):
    rows = montage_rows(tmp_path)
    montage = pair_montage(input_png(tmp_path), rows, title="p: “a three” → “an eight”")
    texts = list(slot_texts(montage).values())
    labels = ["finetune_steps-150 · seed 0", "finetune_steps-150 · seed 1", "sdedit · seed 0", "sdedit · seed 1",
              "ddim_inversion · seed 0"]
    assert [text for text in texts if "seed" in text] == labels  # one row per method and seed, in order
    for titles in (["input", "α 0", "α 1"], ["input", "strength 0.3", "strength 0.5", "strength 0.9"],
                   ["input", "target guidance 0", "target guidance 0.5"]):
        assert any(texts[i:i + len(titles)] == titles for i in range(len(texts)))  # each section's strip
    assert [text for text in texts if text in ("Imagic", "SDEdit", "DDIM inversion")] == \
        ["Imagic", "SDEdit", "DDIM inversion"]
    # (section, row) -> its tiles: the input and one per setting; a shorter row's other cells stay empty
    shape = {}
    for section, row, column in montage.tiles:
        shape[(section, row)] = shape.get((section, row), 0) + 1
    assert shape == {(0, 0): 3, (0, 1): 3, (1, 0): 4, (1, 1): 4, (2, 0): 3}
    pixels = np.asarray(montage.image)
    for (section, row), paths in zip(sorted(shape), (r["samples"] for r in rows)):
        for column, path in enumerate(paths, start=1):
            x0, y0, x1, y1 = montage.tiles[(section, row, column)]
            assert (pixels[y0:y1:3, x0:x1:3] == np.asarray(Image.open(path).convert("RGB"))).all()
    assert montage.cell == 96 and all(box[2] - box[0] == 96 for box in montage.tiles.values())


def assert_texts_fit(montage) -> None:
    """Every text in a TrueType font inside its slot and the image; no two texts overlap, no text covers a tile."""
    width, height = montage.image.size
    boxes = [text.box for text in montage.texts]
    for text in montage.texts:
        x0, y0, x1, y1 = text.box
        assert text.slot[0] <= x0 and x1 <= text.slot[2] and text.slot[1] <= y0 and y1 <= text.slot[3], text
        assert 0 <= x0 and x1 <= width and 0 <= y0 and y1 <= height
    def meet(a, b) -> bool:
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]

    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not meet(boxes[i], boxes[j]), (montage.texts[i], montage.texts[j])
        assert not any(meet(boxes[i], tile) for tile in montage.tiles.values()), montage.texts[i]


def test_montage_labels_use_a_truetype_font_fit_their_slots_and_overlap_nothing(tmp_path):
    font = label_font()
    assert font.path.endswith("DejaVuSans.ttf") and font.size >= 12
    rows = montage_rows(tmp_path)
    rows[0]["name"] = ["a_variant_name_far_too_long_for_any_label_strip_of_a_montage_even_wrapped_over_lines"]
    rows[-1]["values"], rows[-1]["samples"] = [0.123456], rows[-1]["samples"][:1]
    montage = pair_montage(input_png(tmp_path), rows, title="pair: " + "a very long prompt " * 20)
    assert_texts_fit(montage)
    assert any(text.text.endswith("…") for text in montage.texts)  # shortened, not overflowing
    # best edits: long column titles side by side (they ran into each other), "no edit" tiles with their space
    table = pd.DataFrame([{"pair_id": pair, "method": "imagic", "variant": variant, "seed": 0, "alpha": 1.0,
                           "sample": write_samples(tmp_path, f"{pair}_{variant}", [1.0])[0], "edited": edited}
                          for pair in ("one_to_seven", "three_to_eight")
                          for variant, edited in (("finetune_only", pair == "one_to_seven"),
                                                  ("finetune_steps-150", True), ("imagic", False))])
    table = with_setting_columns(pd.concat([table, table.head(1).assign(method="sdedit", variant="sdedit", alpha=np.nan,
                                                                        strength=0.7)], ignore_index=True))
    best = table.drop(columns=["sample", "seed"])
    best.loc[~best["edited"], ["alpha", "strength"]] = np.nan
    montage = best_edits_montage(best, table.drop(columns=["edited"]),
                                 {pair: input_png(tmp_path) for pair in table["pair_id"]}, seed=0)
    assert_texts_fit(montage)
    texts = slot_texts(montage)
    assert list(texts.values())[:8] == ["best edits: each method at its most faithful setting that edits (seed 0)",
                                        "input", "imagic · finetune_ only", "imagic · finetune_ steps-150", "imagic",
                                        "sdedit", "pair", "one_to_seven"]  # Imagic first, titles wrapped at "_"
    assert "no edit" in texts.values() and "missing" in texts.values() and "strength 0.7" in texts.values()
    grey = np.all(np.asarray(montage.image) == NO_EDIT_GREY, axis=-1)
    assert grey.sum() > 96 * 96  # the no-edit and missing tiles, cell-sized


def test_small_samples_are_enlarged_by_a_whole_factor_with_no_new_colours(tmp_path):
    path = write_samples(tmp_path, "digit", [1.0], size=32)[0]
    rows = [{"method": "imagic", "name": ["imagic"], "seed": 0, "setting": "alpha", "values": [1.0], "samples": [path]}]
    montage = pair_montage(input_png(tmp_path), rows)
    source = np.asarray(Image.open(path).convert("RGB"))
    x0, y0, x1, y1 = montage.tiles[(0, 0, 1)]
    assert (x1 - x0, y1 - y0) == (96, 96) and montage.cell == 96  # 32 px x 3: at least MIN_CELL
    cell = np.asarray(montage.image)[y0:y1, x0:x1]
    assert {tuple(c) for c in cell.reshape(-1, 3)} == {tuple(c) for c in source.reshape(-1, 3)}  # nearest neighbour
    assert (cell == source.repeat(3, axis=0).repeat(3, axis=1)).all()


def test_markdown_tables_leave_unused_settings_empty_not_nan(tmp_path):
    """Imagic rows have no strength, SDEdit rows no alpha: empty cells in summary.md, best_summary.md and
    samples.md; the CSV keeps NaN."""
    table = multi_pair_table()
    summary = summarise(table)
    assert summary["alpha"].isna().any() and summary["strength"].isna().any()
    best = summarise_best(pick_best_alpha(table, text_min=50), by=("method", "variant"))
    for markdown in (summary_markdown(summary, "digits"), best_summary_markdown(best, 50, "digits")):
        assert "nan" not in markdown.lower()
    rows = table.to_dict("records")
    samples = write_table(rows, tmp_path / "samples.csv", tmp_path / "samples.md", ["method", "alpha", "strength"])
    markdown = (tmp_path / "samples.md").read_text()
    assert "nan" not in markdown.lower() and "| sdedit   |         |" in markdown
    assert pd.read_csv(tmp_path / "samples.csv")["alpha"].isna().sum() == samples["alpha"].isna().sum() > 0


@pytest.mark.slow  # ~6-10 s of layout
def test_eight_models_headers_and_title_stay_clear():
    """config/analysis.yaml with config/analysis_seed1.yaml: eight models x two edit kinds. A column header too wide
    for its panel ("model latent_t5_seed1 · edit_kind structure") breaks between the facets, the trade-off's y label
    stays left of the tick labels however wide the figure, and the best-settings figure's title above its top panels
    however tall (each overlapped before; the trade-off here has two curves of one edit kind, to stay quick)."""
    models = ["latent", "latent_seed1", "latent_t5", "latent_t5_seed1", "pixel", "pixel_clip", "pixel_clip_seed1",
              "pixel_seed1"]
    run, best = analysis_run(), analysis_best()
    runs, bests = [], []
    for model in models:
        base = "latent" if model.startswith("latent") else "pixel"
        keep = (run["model"] == base) & (run["edit_kind"] == "structure") & run["method"].isin(["imagic", "sdedit"])
        runs.append(run[keep & run["variant"].isin(["tuned", "sdedit"])].assign(model=model))
        bests.append(best[best["model"] == base].assign(model=model))
    figure = tradeoff_figure(pd.concat(runs, ignore_index=True), title="t", panels_by=["model", "edit_kind"],
                             **DIGITS_OPTIONS)
    assert_readable(figure)
    assert "model latent_t5_seed1\nedit_kind structure" in column_headers(figure)
    figure = best_settings_figure(pd.concat(bests, ignore_index=True), panels_by=["model", "edit_kind"],
                                  **DIGITS_OPTIONS)
    assert_readable(figure)
    assert len(figure.axes) == 2 * len(models)  # a panel per model and edit kind
