"""DeepFloyd IF's super-resolution stage II after an IF edit: the tiny-if-sr preset in IF-II's layout, `upscale`
through diffusers' IFSuperResolutionPipeline unchanged (64 -> 256 px, seeded), `edit --upscale` and its refusals."""

import json

import numpy as np
import pytest
from conftest import PROMPT, random_image

from imagic_steps.errors import ModelNotAvailableError, PlanError
from imagic_steps.families import family_from_model_index
from imagic_steps.images import open_rgb
from imagic_steps.locations import TINY_IF_PRESET, TINY_IF_SR_PRESET, is_random_preset

FAST = dict(steps=2)
HUB_ID = "DeepFloyd/IF-II-M-v1.0"


@pytest.fixture(scope="module")
def sr(preset_cache):
    from imagic_steps.upscale import load_super_resolution

    return load_super_resolution(TINY_IF_SR_PRESET)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_the_preset_is_an_if_stage_ii_folder_loaded_by_from_pretrained(preset_cache):
    from diffusers import DDPMScheduler, IFSuperResolutionPipeline

    from imagic_steps.preset_recipes import ensure_preset

    folder = ensure_preset(TINY_IF_SR_PRESET)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "IFSuperResolutionPipeline"
    assert index["image_noising_scheduler"] == index["scheduler"] == ["diffusers", "DDPMScheduler"]
    assert index["text_encoder"] == ["transformers", "T5EncoderModel"]
    pipeline = IFSuperResolutionPipeline.from_pretrained(folder, safety_checker=None, feature_extractor=None,
                                                         watermarker=None, requires_safety_checker=False)
    unet = pipeline.unet.config
    assert (unet.in_channels, unet.out_channels, unet.sample_size) == (6, 6, 256)
    assert unet.class_embed_type == "timestep"  # the upscaled input's noise level
    assert isinstance(pipeline.image_noising_scheduler, DDPMScheduler)
    assert pipeline.scheduler.config.variance_type == "learned_range"
    assert pipeline.image_noising_scheduler.config.variance_type == "fixed_small"
    assert is_random_preset(TINY_IF_SR_PRESET)
    # stage I's tokenizer construction, shared
    tiny_if = ensure_preset(TINY_IF_PRESET)
    assert (folder / "tokenizer" / "spiece.model").read_bytes() == (tiny_if / "tokenizer" / "spiece.model").read_bytes()


def test_a_stage_ii_folder_is_refused_as_a_model_to_edit(preset_cache):
    from imagic_steps.model_loading import load_components

    with pytest.raises(PlanError, match=r"'tiny-if-sr' is a DeepFloyd IF super-resolution stage .*--upscale") as error:
        load_components(TINY_IF_SR_PRESET)
    assert "\n" not in str(error.value)
    for pipeline in ("IFSuperResolutionPipeline", "IFImg2ImgSuperResolutionPipeline"):
        with pytest.raises(PlanError, match="super-resolution"):
            family_from_model_index({"_class_name": pipeline, "text_encoder": ["transformers", "T5EncoderModel"]})
    assert family_from_model_index({"_class_name": "IFPipeline"}).name == "if"  # stage I still is one
    # planning reads the same model_folder.family_name: a workflow with it as the model fails before any job
    from imagic_steps.memory import read_model_size
    from imagic_steps.preset_recipes import ensure_preset

    with pytest.raises(PlanError, match="super-resolution"):
        read_model_size(ensure_preset(TINY_IF_SR_PRESET))


@pytest.mark.slow  # stage II at 256 px, two seeds: ~10 s
def test_upscale_gives_stage_ii_size_deterministic_per_seed(sr):
    from imagic_steps.upscale import UpscaleParams, upscale

    params = UpscaleParams(**FAST)
    first, other = random_image(0), random_image(1)
    assert first.size == (64, 64) and sr.resolution == 256
    a, b = upscale(sr, [first, other], PROMPT, 0, params)
    assert a.size == b.size == (256, 256) and a.mode == "RGB"
    again = upscale(sr, [first], PROMPT, 0, params)[0]
    assert np.array_equal(pixels(a), pixels(again))  # a seed fixes the result
    reseeded = upscale(sr, [first], PROMPT, 1, params)[0]
    assert np.abs(pixels(a) - pixels(reseeded)).mean() > 1  # another seed changes it
    assert np.abs(pixels(a) - pixels(b)).mean() > 1  # the input image is used
    assert np.abs(pixels(a) - pixels(upscale(sr, [first], "a red car", 0, params)[0])).mean() > 0  # and the prompt


def test_upscale_steps_and_guidance_reach_the_pipeline(sr):
    from imagic_steps.upscale import UpscaleParams, upscale

    image = random_image(2)
    base = upscale(sr, [image], PROMPT, 0, UpscaleParams(steps=2))[0]
    for changed in (UpscaleParams(steps=3), UpscaleParams(steps=2, guidance_scale=1.0)):
        assert not np.array_equal(pixels(base), pixels(upscale(sr, [image], PROMPT, 0, changed)[0])), changed


def test_a_hub_id_offline_is_not_available_in_one_line(preset_cache):
    from imagic_steps.upscale import load_super_resolution

    with pytest.raises(ModelNotAvailableError, match=f"model '{HUB_ID}' is not available") as error:
        load_super_resolution(HUB_ID)
    message = str(error.value)
    assert "\n" not in message and "HF_HUB_OFFLINE" in message and f"--upscale {TINY_IF_SR_PRESET}" in message


def test_a_stage_i_model_is_no_upscaler(preset_cache):
    from imagic_steps.upscale import load_super_resolution

    with pytest.raises(PlanError, match="'tiny-if' has pipeline class IFPipeline, not .*IFSuperResolutionPipeline"):
        load_super_resolution(TINY_IF_PRESET)


def edit_args(image, out, model, upscale, *extra):
    return ["edit", "--image", str(image), "--prompt", PROMPT, "--model", model, "--upscale", upscale,
            "--set", "embed.steps=2", "--set", "finetune.steps=2", "--set", "sample.steps=2", "--alphas", "0", "1",
            "--out", str(out), *extra]


@pytest.mark.slow  # a CLI edit and stage II: ~11 s
def test_cli_edit_upscales_each_sample_with_its_seed(cat_image_path, tmp_path, sr):
    from imagic_steps.cli import main
    from imagic_steps.upscale import UpscaleParams, upscale

    out = tmp_path / "edit"
    assert main(edit_args(cat_image_path, out, TINY_IF_PRESET, TINY_IF_SR_PRESET, "--seeds", "3",
                          "--upscale-steps", "2")) == 0
    names = ["seed3_alpha0.png", "seed3_alpha1.png"]
    assert sorted(p.name for p in (out / "upscaled").iterdir()) == names
    for name in names:
        sample, upscaled = open_rgb(out / "samples" / name), open_rgb(out / "upscaled" / name)
        assert sample.size == (64, 64) and upscaled.size == (256, 256)
        # the edit's prompt and the sample's seed, with the steps asked for
        expected = upscale(sr, [sample], PROMPT, 3, UpscaleParams(steps=2))[0]
        assert np.array_equal(pixels(upscaled), pixels(expected)), name
    record = json.loads((out / "upscale.json").read_text())
    assert record["stage"] == "upscale" and record["prompt"] == PROMPT
    assert record["params"] == {"steps": 2, "guidance_scale": 4.0, "noise_level": 250}
    assert record["model"]["model"] == TINY_IF_SR_PRESET and record["model"]["random_weights"] is True
    assert [s["seed"] for s in record["samples"]] == [3, 3]


def refused(capsys, argv) -> str:
    from imagic_steps.cli import main

    assert main(argv) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_cli_refuses_upscale_after_a_non_if_model_before_any_work(cat_image_path, tmp_path, capsys):
    from imagic_steps.preset_recipes import ensure_preset

    ensure_preset("tiny")  # built: its family is read from its folder, before anything loads
    out = tmp_path / "edit"
    line = refused(capsys, edit_args(cat_image_path, out, "tiny", TINY_IF_SR_PRESET))
    assert line.startswith("error: command line (--upscale):") and "'tiny' is of the sd family" in line
    assert not out.exists()


def test_cli_refuses_upscale_after_a_model_known_only_once_loaded(cat_image_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IMAGIC_STEPS_CACHE", str(tmp_path / "cache"))  # tiny not built: its family is unknown
    out = tmp_path / "edit"
    line = refused(capsys, edit_args(cat_image_path, out, "tiny", TINY_IF_SR_PRESET))
    assert line.startswith("error: command line (--upscale):") and "'tiny' is of the sd family" in line
    assert not (out / "embed.json").exists()  # refused after loading, before stage A


def test_cli_refuses_an_unavailable_upscaler_before_the_edit(cat_image_path, tmp_path, capsys):
    out = tmp_path / "edit"
    line = refused(capsys, edit_args(cat_image_path, out, TINY_IF_PRESET, HUB_ID))
    assert line.startswith(f"error: model '{HUB_ID}' is not available")
    assert not out.exists()
