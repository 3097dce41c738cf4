"""Where a run's files live (imagic_steps.results_layout) and the plan record (imagic_steps.plan.plan_record): the
paths the rules declare and the paths the input functions, tables and montages read come from one place and agree."""
import json
import re

import pytest

from imagic_steps.plan import BASELINES, Pair, plan_baselines, plan_experiment, plan_record
from imagic_steps.results_layout import ResultsLayout, montage_rows, sample_table_rows

MODEL = {"id": "tiny", "revision": None, "dtype": "fp32"}
PAIRS = [Pair("cat", "cat.png", "a gray cat", "a cat"), Pair("dog", "dog.png", "a dog")]
BASELINE_CONFIG = {"sdedit": {"strengths": [0.3, 0.7]}, "ledits": {"edit_guidances": [0, 5]},
                   "ddim_inversion": {"target_guidances": [0, 1, 2]}}
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def plan():
    runs = plan_experiment(MODEL, PAIRS, {"original": None, "short": {"preset": "original", "alphas": [0.5]}},
                           [0.0, 1.0], SEEDS, label="m")
    baseline_runs = plan_baselines(MODEL, PAIRS, BASELINE_CONFIG, SEEDS, label="m")
    return runs, baseline_runs


def match(pattern: str, path: str) -> dict[str, str]:
    """The wildcard values of `path` under a Snakemake pattern (each wildcard one path component or part of one)."""
    regex = re.escape(pattern)
    regex = re.sub(r"\\\{(\w+)\\\}", lambda m: f"(?P<{m.group(1)}>[^/]+?)", regex)
    found = re.fullmatch(regex, path)
    assert found, f"{path} does not match the rule pattern {pattern}"
    return found.groupdict()


def test_the_paths_of_planned_runs_are_the_rule_patterns_filled_in(plan):
    runs, baseline_runs = plan
    layout = ResultsLayout("res", "scorerkey")
    for run in runs:
        assert match(layout.embed_dir + "/embed.safetensors", layout.embed_artefact(run)) == {
            "pair": run.pair.pair_id, "ekey": run.embed_key}
        assert match(layout.finetune_dir + "/finetune.safetensors", layout.finetune_artefact(run)) == {
            "pair": run.pair.pair_id, "fkey": run.finetune_key}
        samples = layout.samples(run)
        assert len(samples) == len(set(samples)) == len(run.seeds) * len(run.alphas)
        assert [(int(w["seed"]), float(w["alpha"])) for w in (match(layout.sample_png, s) for s in samples)] == [
            (seed, alpha) for seed in run.seeds for alpha in run.alphas]  # seed-major
    assert match(layout.scores_csv, layout.score_csv("cat", "abc")) == {"pair": "cat", "skey": "abc"}
    assert "/scorerkey/" in layout.scores_csv  # another scorer's scores live elsewhere
    for run in baseline_runs:
        samples = layout.baseline_samples(run)
        assert len(samples) == len(set(samples)) == len(run.seeds) * len(run.settings)
        if run.method.name == "sdedit":  # one job per strength: its own pattern
            assert {match(layout.sdedit_png, s)["strength"] for s in samples} == {"0.3", "0.7"}
        else:  # one job per pair: the job's declared outputs are exactly the samples the run's readers expect
            declared = [p.format(pair=run.pair.pair_id, skey=run.key)
                        for p in layout.baseline_job_pngs(run.method.name, SEEDS, run.settings)]
            assert declared == samples
    ddim = next(r for r in baseline_runs if r.method.name == "ddim_inversion")
    assert ddim.seeds == (0,) and len(layout.baseline_samples(ddim)) == 3  # deterministic: the first seed only


def test_sample_jobs_name_their_records_and_unknown_values_are_refused():
    assert match(ResultsLayout("r", "k").sample_record, "r/samples/p/k1/alpha0.5.json") == {
        "pair": "p", "skey": "k1", "alpha": "0.5"}
    assert ResultsLayout("r", "k", "per_variant").sample_record.endswith("/all_alphas.json")
    with pytest.raises(ValueError, match="per_alpha"):
        ResultsLayout("r", "k", "per_pair")


def test_the_sample_table_has_one_row_per_sample_in_one_column_order(plan):
    runs, baseline_runs = plan
    layout = ResultsLayout("res", "k")
    rows = sample_table_rows(runs, baseline_runs, layout)
    expected = ([p for r in runs for p in layout.samples(r)]
                + [p for r in baseline_runs for p in layout.baseline_samples(r)])
    assert [row["sample"] for row in rows] == expected
    imagic = [row for row in rows if row["method"] == "imagic"]
    baselines = [row for row in rows if row["method"] != "imagic"]
    assert len({tuple(row) for row in imagic}) == 1 and len({tuple(row) for row in baselines}) == 1
    # a baseline row's columns are the Imagic row's, less the stage keys and fine-tune fields it has none of
    assert list(baselines[0]) == [c for c in imagic[0] if c in baselines[0]]
    settings = [m.setting for m in BASELINES.values()]
    for row in imagic:
        assert row["alpha"] is not None and all(row[s] is None for s in settings)
    for row in baselines:
        own = BASELINES[row["method"]].setting
        assert row["alpha"] is None and row[own] is not None
        assert all(row[s] is None for s in settings if s != own)
        assert row["variant"] == row["method"] and row["model"] == "m"
    cat = next(row for row in baselines if row["pair_id"] == "cat")
    assert (cat["prompt"], cat["source_prompt"], cat["image"]) == ("a gray cat", "a cat", "cat.png")


def test_montage_rows_give_each_run_and_seed_its_samples_along_its_grid(plan):
    runs, baseline_runs = plan
    layout = ResultsLayout("res", "k")
    cat_runs = [r for r in runs if r.pair.pair_id == "cat"]
    cat_baselines = [r for r in baseline_runs if r.pair.pair_id == "cat"]
    rows = montage_rows(cat_runs, cat_baselines, layout, several_models=False)
    assert len(rows) == 2 * len(SEEDS) + 2 * len(SEEDS) + 1  # 2 variants, SDEdit and LEDITS++ x seeds, DDIM once
    for row in rows:
        assert len(row["samples"]) == len(row["values"])
        assert all("/cat/" in sample for sample in row["samples"])
    short = next(row for row in rows if row["name"] == ["short"])
    assert short["values"] == [0.5] and short["setting"] == "alpha"
    assert [row["name"] for row in montage_rows(cat_runs, [], layout, several_models=True)][0] == ["m", "original"]


def test_the_plan_record_is_json_and_lists_every_run_and_baseline_once(plan):
    runs, baseline_runs = plan
    record = plan_record({"seeds": SEEDS}, {"m": MODEL}, {"kind": "digits"}, {"scorer_key": "k"}, ("model",),
                         SEEDS, PAIRS, runs, baseline_runs)
    again = json.loads(json.dumps(record))
    assert again["pairs"][0] == {"pair_id": "cat", "image": "cat.png", "prompt": "a gray cat",
                                 "source_prompt": "a cat", "overrides": {}}
    assert sorted((r["pair_id"], r["sample_key"]) for r in again["runs"]) == sorted(
        (r.pair.pair_id, r.sample_key) for r in runs)
    for name, method in BASELINES.items():
        listed = again[name]
        assert sorted(entry["key"] for entry in listed) == sorted(r.key for r in baseline_runs if r.method is method)
        assert all(entry[method.grid_key] == list(map(float, BASELINE_CONFIG[name][method.grid_key]))
                   for entry in listed)
    assert again["facets"] == ["model"] and again["weights"] == {"scorer_key": "k"}
