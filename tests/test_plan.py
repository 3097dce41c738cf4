import dataclasses
import json

import pytest

from imagic_steps.plan import (
    Pair,
    PlanError,
    expand_sweeps,
    model_variant_specs,
    format_alpha,
    plan_experiment,
    BASELINES,
    plan_baselines,
    read_pairs_sheet,
    read_tedbench,
    shared_trajectories,
    tedbench_pair_id,
)

MODEL = {"id": "tiny", "revision": None, "dtype": "fp32"}
PAIRS = [Pair("cat", "cat.png", "a gray cat"), Pair("dog", "dog.png", "a dog")]


def keys(runs, attribute):
    return {(r.pair.pair_id, r.variant.name): getattr(r, attribute) for r in runs}


def test_stage_keys_follow_what_each_stage_consumes():
    specs = {"a": {"preset": "original"}, "b": {"preset": "original", "finetune": {"lr": 1e-5}},
             "c": {"preset": "original", "sample": {"steps": 7}},
             "d": {"preset": "original", "finetune": {"preview_every": 5, "checkpoint_every": 9},
                   "sample": {"batch_size": 2}}}
    runs = plan_experiment(MODEL, PAIRS, specs, [0.0, 1.0], [0])
    embed, finetune, sample = keys(runs, "embed_key"), keys(runs, "finetune_key"), keys(runs, "sample_key")
    assert embed[("cat", "a")] == embed[("cat", "b")] == embed[("cat", "c")]  # shared embed
    assert embed[("cat", "a")] != embed[("dog", "a")]
    assert finetune[("cat", "a")] != finetune[("cat", "b")]
    assert finetune[("cat", "a")] == finetune[("cat", "c")]
    assert sample[("cat", "a")] != sample[("cat", "c")]
    # preview / checkpoint cadence and batch size change no result: same keys
    assert (finetune[("cat", "a")], sample[("cat", "a")]) == (finetune[("cat", "d")], sample[("cat", "d")])
    other_model = plan_experiment({**MODEL, "id": "other"}, PAIRS, {"a": specs["a"]}, [1.0], [0])
    assert other_model[0].embed_key != embed[("cat", "a")]


def test_config_alphas_apply_unless_a_variant_sets_its_own():
    runs = plan_experiment(MODEL, PAIRS[:1], {"original": None, "b": {"preset": "original", "alphas": [0.5]}},
                           [0, 1.2], [0, 1])
    assert runs[0].alphas == (0.0, 1.2) and runs[1].alphas == (0.5,)
    assert runs[0].seeds == (0, 1)
    with pytest.raises(PlanError, match="seeds"):
        plan_experiment(MODEL, PAIRS, {"original": None}, [1.0], [])


def test_pair_overrides_reach_only_that_pair():
    pairs = [Pair("cat", "c.png", "x", overrides={"embed": {"steps": 7}}), Pair("dog", "d.png", "y")]
    runs = plan_experiment(MODEL, pairs, {"original": None}, [1.0], [0])
    assert runs[0].variant.embed.steps == 7 and runs[1].variant.embed.steps == 500


def test_format_alpha_round_trips():
    for alpha in (0.0, 1.0, 1.2, 0.25, 1 / 3, -0.5, 1e-5):
        assert float(format_alpha(alpha)) == alpha
    assert format_alpha(1.0) == "1" and format_alpha(0.7) == "0.7"


def write_sheet(tmp_path, rows):
    path = tmp_path / "pairs.tsv"
    path.write_text("pair_id\timage\tprompt\toverrides\n" + "".join("\t".join(r) + "\n" for r in rows))
    return path


def test_sheet_errors_name_the_row_and_the_fix(tmp_path):
    good = read_pairs_sheet(write_sheet(tmp_path, [["cat", "c.png", "a 'quoted' $cat\\n", '{"embed": {"steps": 3}}']]))
    assert good[0].prompt == "a 'quoted' $cat\\n" and good[0].overrides == {"embed": {"steps": 3}}
    for rows, words in [
        ([["cat", "c.png", "x", ""], ["cat", "d.png", "y", ""]], "repeats pair_id 'cat'"),
        ([["../up", "c.png", "x", ""]], "not safe as a folder name"),
        ([[".hidden", "c.png", "x", ""]], "not safe"),
        ([["with space", "c.png", "x", ""]], "not safe"),
        ([["cat", "c.png", "  ", ""]], r"\(pair 'cat', prompt\): the value is empty"),
        ([["cat", "c.png", "x", "{bad"]], "not valid JSON"),
    ]:
        with pytest.raises(PlanError, match=words):
            read_pairs_sheet(write_sheet(tmp_path, rows))


def test_tedbench_ids_are_safe_deterministic_and_distinct(tmp_path):
    entries = [{"img_name": "sub/.hidden.png", "target_text": "a"}, {"img_name": "sub/.hidden.png", "target_text": "b"}]
    (tmp_path / "list.json").write_text(json.dumps(entries))
    (tmp_path / "originals").mkdir()
    pairs = read_tedbench(tmp_path / "list.json", tmp_path / "originals")
    assert pairs[0].pair_id != pairs[1].pair_id
    assert pairs[0].pair_id == tedbench_pair_id("sub/.hidden.png", "a")
    for pair in pairs:
        assert "/" not in pair.pair_id and not pair.pair_id.startswith(".")
    (tmp_path / "bad.json").write_text(json.dumps([{"img_name": "x.png"}]))
    with pytest.raises(PlanError, match="target_text"):
        read_tedbench(tmp_path / "bad.json", tmp_path)


def test_sweeps_expand_into_variants_sharing_keys_with_equal_ones():
    specs = {"original": {"preset": "original", "finetune": {"steps": 20}}}
    all_specs, sweeps = expand_sweeps(specs, {"ft": {"variant": "original", "field": "finetune.steps", "values": [0, 20]}})
    assert set(all_specs) == {"original", "ft-0", "ft-20"}
    assert sweeps == {"ft": {"field": "finetune.steps", "variants": {"ft-0": 0, "ft-20": 20}}}
    runs = {r.variant.name: r for r in plan_experiment(MODEL, PAIRS[:1], all_specs, [1.0], [0])}
    assert runs["ft-20"].sample_key == runs["original"].sample_key
    assert runs["ft-0"].variant.finetune.steps == 0
    with pytest.raises(PlanError, match="is not a variant of this config"):
        expand_sweeps(specs, {"ft": {"variant": "nope", "field": "finetune.steps", "values": [1]}})


def test_a_models_own_variant_settings_apply_to_it_and_its_sweeps_only():
    specs = {"tuned": {"preset": "original", "finetune": {"steps": 20, "lr": 1e-4}}, "original": None}
    sweeps = {"ft": {"variant": "tuned", "field": "finetune.steps", "values": [0, 10]}}
    own = model_variant_specs(specs, {"tuned": {"finetune": {"lr": 1e-6}, "sample": {"guidance_scale": 1.0}}}, "pixel")
    runs = {}
    for label, model_specs in (("latent", specs), ("pixel", own)):
        all_specs, _ = expand_sweeps(model_specs, sweeps)
        for run in plan_experiment(MODEL, PAIRS[:1], all_specs, [1.0], [0], label=label):
            runs[(label, run.variant.name)] = run
    pixel, latent = runs[("pixel", "tuned")].variant, runs[("latent", "tuned")].variant
    assert (pixel.finetune.lr, pixel.finetune.steps, pixel.sample.guidance_scale) == (1e-6, 20, 1.0)
    assert (latent.finetune.lr, latent.sample.guidance_scale) == (1e-4, 7.5)
    # the sweep sweeps the model's own variant: its lr, the swept steps
    assert (runs[("pixel", "ft-10")].variant.finetune.lr, runs[("pixel", "ft-10")].variant.finetune.steps) == (1e-6, 10)
    assert runs[("pixel", "original")].variant == runs[("latent", "original")].variant  # untouched variants
    assert runs[("pixel", "tuned")].finetune_key != runs[("latent", "tuned")].finetune_key
    assert specs["tuned"]["finetune"] == {"steps": 20, "lr": 1e-4}  # the config's own is not changed
    with pytest.raises(PlanError, match=r"config \(models.pixel.variants.tunde\): 'tunde' is not a variant"):
        model_variant_specs(specs, {"tunde": {}}, "pixel")
    with pytest.raises(PlanError, match=r"models.pixel.variants.tuned\): variant 'tuned' \(finetune.lr\)"):
        model_variant_specs(specs, {"tuned": {"finetune": {"lr": -1}}}, "pixel")


def test_baseline_plans_key_per_pair_and_method_by_what_each_consumes():
    config = {"sdedit": {"strengths": [0.5, 1], "steps": 10}, "ledits": {"edit_guidances": [0, 5]},
              "ddim_inversion": {"target_guidances": [1, 3], "steps": 10}}
    runs = plan_baselines(MODEL, PAIRS, config, [0, 1])
    by_method = {name: [r for r in runs if r.method.name == name] for name in BASELINES}
    assert [r.settings for r in by_method["sdedit"]] == [(0.5, 1.0)] * 2
    assert [r.settings for r in by_method["ledits"]] == [(0.0, 5.0)] * 2
    assert len({r.key for r in runs}) == 6 and all(r.seeds == (0, 1) for r in by_method["ledits"])
    assert all(r.seeds == (0,) for r in by_method["ddim_inversion"])  # deterministic: the first seed only
    assert by_method["ddim_inversion"][0].params == {"steps": 10}
    assert plan_baselines(MODEL, PAIRS, {}, [0]) == []
    # a grid value is no part of the key (one file per value); a parameter and the source prompt are
    keys = {r.method.name: r.key for r in runs if r.pair == PAIRS[0]}
    again = plan_baselines(MODEL, PAIRS, {**config, "ledits": {"edit_guidances": [7]}}, [0, 1])
    assert {r.method.name: r.key for r in again if r.pair == PAIRS[0]} == keys
    other = plan_baselines(MODEL, PAIRS, {"ledits": {"edit_guidances": [7], "skip": 0.2}}, [0])
    assert other[0].key != keys["ledits"]
    source = dataclasses.replace(PAIRS[0], source_prompt="another source")
    moved = {r.method.name: r.key for r in plan_baselines(MODEL, [source], config, [0, 1])}
    assert moved["sdedit"] == keys["sdedit"]  # SDEdit reads no source prompt
    assert moved["ledits"] != keys["ledits"] and moved["ddim_inversion"] != keys["ddim_inversion"]
    with pytest.raises(PlanError, match=r"config \(ledits\): not supported for the if family"):
        plan_baselines(MODEL, PAIRS, config, [0], family="if")
    assert len(plan_baselines(MODEL, PAIRS, {"ddim_inversion": config["ddim_inversion"]}, [0], family="if")) == 2


def test_runs_of_several_models_carry_their_label_and_never_share_a_key():
    latent, pixel = MODEL, {**MODEL, "id": "tiny-if"}
    runs = [*plan_experiment(latent, PAIRS, {"original": None}, [1.0], [0], label="latent"),
            *plan_experiment(pixel, PAIRS, {"original": None}, [1.0], [0], label="pixel")]
    assert [r.model for r in runs] == ["latent", "latent", "pixel", "pixel"]
    for attribute in ("embed_key", "finetune_key", "sample_key"):
        assert len({getattr(r, attribute) for r in runs}) == 4, attribute
    config = {"ledits": {"edit_guidances": [5]}, "ddim_inversion": {"target_guidances": [1]}}
    # with several models a baseline the family lacks is left out for that model, not refused
    kept = plan_baselines(pixel, PAIRS, config, [0], family="if", label="pixel", skip_unsupported=True)
    assert {(r.method.name, r.model) for r in kept} == {("ddim_inversion", "pixel")}
    assert plan_baselines(latent, PAIRS, config, [0], label="latent")[0].key not in {r.key for r in kept}
    # LEDITS++'s pipeline encodes prompts itself: a latent model on another family's text encoder (T5) goes without
    on_t5 = plan_baselines(latent, PAIRS, config, [0], label="latent_t5", skip_unsupported=True,
                           own_text_encoder=False)
    assert {r.method.name for r in on_t5} == {"ddim_inversion"}
    with pytest.raises(PlanError, match=r"config \(ledits\): .*text encoder is not the sd family's CLIPTextModel"):
        plan_baselines(latent, PAIRS, config, [0], family="sd", own_text_encoder=False)


def test_image_paths_with_shell_syntax_are_refused(tmp_path):
    for name in ("my cat.png", "cat$(id).png", "a`b`.png", "x;y.png", "it's.png"):
        with pytest.raises(PlanError, match="rename the file"):
            read_pairs_sheet(write_sheet(tmp_path, [["cat", name, "x", ""]]))
    assert read_pairs_sheet(write_sheet(tmp_path, [["cat", "dir/cat_1-2.v3+x=y,z@w.png", "x", ""]]))[0].image


def test_a_sheet_with_a_byte_order_mark_and_quotes_reads_literally(tmp_path):
    sheet = tmp_path / "pairs.tsv"
    sheet.write_bytes("\ufeffpair_id\timage\tprompt\ncat\tc.png\t\"big\" gray cat \"unclosed\n".encode("utf-8"))
    (pair,) = read_pairs_sheet(sheet)
    assert pair.pair_id == "cat" and pair.prompt == '"big" gray cat "unclosed'


def test_fine_tunes_differing_only_in_steps_share_one_trajectory_per_pair():
    """A steps sweep [0, 2, 4, 8] over `base` (8 steps): per pair one trajectory, owned by the 8-step run, stopping
    at 2 and 4 (0 trains nothing); another learning rate is a trajectory apart; a finished owner keeps the stops it
    ran with (a value added later trains alone, and Snakemake does not retrain the owner); a shorter run that has
    already run alone stays alone."""
    specs, _ = expand_sweeps({"base": {"preset": "original", "finetune": {"steps": 8}},
                              "other_lr": {"preset": "original", "finetune": {"steps": 3, "lr": 1e-5}},
                              "other_lr_long": {"preset": "original", "finetune": {"steps": 6, "lr": 1e-5}}},
                             {"s": {"variant": "base", "field": "finetune.steps", "values": [0, 2, 4, 8]}})
    runs = plan_experiment(MODEL, PAIRS, specs, [0.0, 1.0], [0])
    key = keys(runs, "finetune_key")
    trajectories = {(t.pair_id, t.owner_key): t for t in shared_trajectories(runs, "finetune")}
    assert len(trajectories) == 4  # two pairs x (the base sweep, the other learning rate)
    base = trajectories[("cat", key[("cat", "base")])]
    assert base.owner_key == key[("cat", "s-8")] and base.owner_steps == 8
    assert base.stops == ((2, key[("cat", "s-2")]), (4, key[("cat", "s-4")]))
    assert trajectories[("cat", key[("cat", "other_lr_long")])].stops == ((3, key[("cat", "other_lr")]),)

    # the owner finished with only the stop at 4: 2 is not added to it (it trains alone)
    def finished(pair_id, finetune_key):
        return [(4, key[("cat", "s-4")])] if (pair_id, finetune_key) == ("cat", base.owner_key) else None

    replanned = {(t.pair_id, t.owner_key): t for t in shared_trajectories(runs, "finetune", finished)}
    assert replanned[("cat", base.owner_key)].stops == ((4, key[("cat", "s-4")]),)
    assert replanned[("dog", key[("dog", "base")])].stops == base_stops("dog", key)

    # the 2-step run already ran alone: it is no stop of the unfinished trajectory
    def ran_alone(pair_id, finetune_key):
        return [] if (pair_id, finetune_key) == ("cat", key[("cat", "s-2")]) else None

    assert {t.owner_key: t.stops for t in shared_trajectories(runs, "finetune", ran_alone)}[base.owner_key] == (
        (4, key[("cat", "s-4")]),)


def base_stops(pair_id, key):
    return (2, key[(pair_id, "s-2")]), (4, key[(pair_id, "s-4")])


def test_embeds_differing_only_in_steps_share_one_trajectory_and_their_fine_tunes_stay_apart():
    specs, _ = expand_sweeps({"base": {"preset": "original", "embed": {"steps": 100}}},
                             {"e": {"variant": "base", "field": "embed.steps", "values": [0, 25, 100]}})
    runs = plan_experiment(MODEL, PAIRS, specs, [0.0, 1.0], [0])
    embed = keys(runs, "embed_key")
    trajectories = {(t.pair_id, t.owner_key): t for t in shared_trajectories(runs, "embed")}
    assert set(trajectories) == {(pair.pair_id, embed[(pair.pair_id, "base")]) for pair in PAIRS}
    assert trajectories[("cat", embed[("cat", "base")])].stops == ((25, embed[("cat", "e-25")]),)
    # each embed has its own fine-tune (their inputs differ): no fine-tune trajectory among them
    assert shared_trajectories(runs, "finetune") == []
