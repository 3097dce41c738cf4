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
from imagic_steps.figures import (NO_EDIT_GREY, ReferenceBand, best_edits_montage, label_font, pair_montage,
                                  plot_tradeoff, sweep_figure, tradeoff_figure)
from imagic_steps.stats import SETTING_COLUMNS, pick_best_alpha, summarise, summarise_best, with_setting_columns
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
    imagic, sdedit = "imagic / imagic (α 0–1)", "sdedit / sdedit (strength 0–1)"  # the legend names the setting
    assert set(colours[0]) == {imagic, sdedit} and set(colours[1]) == {imagic}
    assert colours[1][imagic] == colours[0][imagic] != colours[0][sdedit]
    assert all(axes.get_legend() is None for axes in panels) and len(figure.legends) == 1
    assert [text.get_text() for text in figure.legends[0].get_texts()] == [imagic, sdedit]


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
    (Line2D lines, error-bar LineCollections) and the boxes (x0, y0, x1, y1) of the markers (data points, caps)."""
    scale = axes.figure.dpi / 72
    samples, markers = [], []
    polylines = []
    for line in axes.get_lines():
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
    """No two texts of `figure` overlap; no point label (an axes' texts) touches a line, error bar or marker or leaves
    its axes; no legend overlaps an axes. Returns the point labels."""
    texts = drawn_texts(figure)
    renderer = figure.canvas.get_renderer()
    boxes = [text.get_window_extent(renderer) for text in texts]
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


def test_default_run_tradeoff_labels_overlap_nothing_and_the_legend_names_each_setting():
    """The default run's figure (7 curves, reference bands, the edit threshold): no text overlaps another, no point
    label lies on the data, the legend is outside the axes; every curve keeps some labels, and the legend names the
    setting and range of each curve, which is what the points that had no room for a label leave to it."""
    figure = tradeoff_figure(summary_of(DEFAULT_RUN), title="t\nmean over pairs", references=DIGITS_BANDS,
                             threshold=50, xlabel="identity similarity", ylabel="100 · P(target digit)")
    labels = assert_readable(figure)
    axes = figure.axes[0]
    colours = {line.get_color() for line in axes.get_lines() if line.get_marker() == "o"}
    assert colours <= {text.get_color() for text in labels}  # every curve has at least one point labelled
    assert 15 <= len(labels) < sum(map(len, DEFAULT_RUN.values()))  # some, not all: crowded points go without
    assert "0–1.2" in [text.get_text() for text in labels]  # finetune_only's four alphas at one place: one label
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    for name in ("imagic / embed_only (α 0–1.2)", "sdedit / sdedit (strength 0.1–0.9)",
                 "ledits / ledits (edit guidance 0–10)", "ddim_inversion / ddim_inversion (target guidance 0–5)",
                 "edit threshold (50)"):
        assert name in legend
    assert figure.get_size_inches()[0] == 7 and figure.get_size_inches()[1] > 5  # 7 x 5 in, plus the legend below


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
