"""The SD-shaped presets: SD-1.5's and SD-2.1's exact architectures with seeded random weights, built offline."""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ONE_AT_A_TIME
from diffusers import AutoencoderKL, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextModel, CLIPTokenizer

from imagic_steps.locations import (
    MODEL_PRESETS,
    SD15_SHAPED_PRESET,
    SD21_SHAPED_PRESET,
    TINY_IF_PRESET,
    TINY_IF_SR_PRESET,
    is_random_preset,
    preset_folder,
)
from imagic_steps.memory import (
    ARCHITECTURE_SIZES,
    SD15,
    SD21,
    ModelSize,
    model_size,
    planning_model_size,
    read_model_size,
)
from imagic_steps.model_loading import resolve_model_path
from imagic_steps.preset_recipes import ensure_preset, preset_recipe, write_clip_tokenizer
from imagic_steps.variants import LORA_TARGET_MODULES

REPO = Path(__file__).resolve().parents[1]
SHAPED = {SD15_SHAPED_PRESET: SD15, SD21_SHAPED_PRESET: SD21}
GIB = 2**30


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def meta_size(name: str) -> ModelSize:
    """The preset's size counted from its configs on the meta device (shapes only, nothing allocated)."""
    recipe = preset_recipe(name)
    with torch.device("meta"):
        unet = UNet2DConditionModel(**recipe.unet)
        vae = AutoencoderKL(**recipe.vae)
        text_encoder = CLIPTextModel(recipe.text_encoder)
    targets = tuple(f".{m}" for m in LORA_TARGET_MODULES)
    lora_per_rank = sum(module.in_features + module.out_features for path, module in unet.named_modules()
                        if isinstance(module, torch.nn.Linear) and path.endswith(targets))
    resolution = unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
    return ModelSize(count(unet), count(text_encoder), count(vae), lora_per_rank, resolution)


@pytest.mark.parametrize("name", sorted(SHAPED))
def test_configs_have_the_published_parameter_counts(name):
    assert meta_size(name) == SHAPED[name]
    assert ARCHITECTURE_SIZES[MODEL_PRESETS[name].architecture] == SHAPED[name]


def test_published_counts():
    assert (SD15.unet, SD15.text_encoder, SD15.vae) == (859_520_964, 123_060_480, 83_653_863)
    assert (SD21.unet, SD21.text_encoder, SD21.vae) == (865_910_724, 340_387_840, 83_653_863)
    assert (SD15.resolution, SD21.resolution) == (512, 768)


def test_schedulers_are_sds():
    sd15, sd21 = preset_recipe(SD15_SHAPED_PRESET), preset_recipe(SD21_SHAPED_PRESET)
    assert sd15.scheduler_class.__name__ == "PNDMScheduler" and sd21.scheduler_class.__name__ == "DDIMScheduler"
    for recipe in (sd15, sd21):
        config = recipe.scheduler_class.from_config(recipe.scheduler).config
        assert (config.beta_schedule, config.beta_start, config.beta_end) == ("scaled_linear", 0.00085, 0.012)
        assert config.num_train_timesteps == 1000 and config.steps_offset == 1
    assert sd15.scheduler["prediction_type"] == "epsilon"
    assert sd21.scheduler_class.from_config(sd21.scheduler).config.prediction_type == "v_prediction"


@pytest.mark.parametrize("name, pad_id", [(SD15_SHAPED_PRESET, 49407), (SD21_SHAPED_PRESET, 0)])
def test_tokenizer_is_tinys_with_sds_padding(tmp_path, tiny, name, pad_id):
    write_clip_tokenizer(tmp_path, preset_recipe(name).pad_token)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path)
    assert tokenizer("a photo of a cat").input_ids == tiny.tokenizer("a photo of a cat").input_ids
    assert tokenizer.pad_token_id == pad_id
    padded = tokenizer("a cat", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77 and padded[-1] == pad_id


def test_random_presets_are_labelled_by_one_predicate(tiny):
    random = [name for name in MODEL_PRESETS if is_random_preset(name)]
    assert random == ["tiny", "tiny-sdxl", TINY_IF_PRESET, TINY_IF_SR_PRESET, SD15_SHAPED_PRESET, SD21_SHAPED_PRESET]
    assert not is_random_preset("digits") and not is_random_preset("stable-diffusion-v1-5/stable-diffusion-v1-5")
    assert tiny.provenance()["random_weights"] is True
    assert tiny.provenance()["prediction_type"] == "epsilon"
    for name, preset in MODEL_PRESETS.items():
        # every preset that is built has a recipe, but the IF ones (T5 and a SentencePiece model: `build_if_preset`)
        assert preset.shipped or name in (TINY_IF_PRESET, TINY_IF_SR_PRESET) or preset_recipe(name)


def test_unbuilt_presets_plan_with_their_architecture_size(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGIC_STEPS_CACHE", str(tmp_path))
    for name, size in SHAPED.items():
        assert model_size(name) is None
        planned, note = planning_model_size(name)
        assert planned == size and name in note and "not built yet" in note
    assert planning_model_size("tiny") == (None, None)
    planned, note = planning_model_size("nobody/not-a-real-model-id")
    assert planned == SD15 and "not on this machine" in note
    assert planning_model_size("digits")[1] is None


def test_resolve_model_path_builds_a_preset_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGIC_STEPS_CACHE", str(tmp_path))
    assert not preset_folder("tiny").exists()
    assert resolve_model_path("tiny") == str(preset_folder("tiny"))
    assert (preset_folder("tiny") / "model_index.json").exists()
    assert [p.name for p in tmp_path.iterdir()] == [preset_folder("tiny").name]  # no staging folder left


@pytest.mark.slow
@ONE_AT_A_TIME  # SD-sized (conftest.py)
@pytest.mark.parametrize("name", sorted(SHAPED))
def test_built_preset_headers_have_the_published_size(name):
    started = time.perf_counter()
    folder = ensure_preset(name)
    seconds = time.perf_counter() - started
    size_bytes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"{name}: ready in {seconds:.1f} s, {size_bytes / 1e9:.2f} GB in {folder}")
    read = read_model_size(folder)
    assert read == model_size(name)
    # the published counts; the built folder adds what only files tell: its largest component's weight file (the UNet,
    # stored fp16), the loading transient of the memory estimate
    assert dataclasses.replace(read, largest_weight_file=None) == SHAPED[name]
    assert read.largest_weight_file == (folder / "unet/diffusion_pytorch_model.safetensors").stat().st_size
    assert 2 * SHAPED[name].unet < read.largest_weight_file < 2 * SHAPED[name].unet + 2**20
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["scheduler"][1] == preset_recipe(name).scheduler_class.__name__


def test_a_v_prediction_model_edits_through_the_cli_in_seconds(tmp_path, capsys):
    """What SD 2.1's v prediction asks of an edit, on the tiny preset's weights under a v-prediction scheduler (a
    local model folder): every stage runs and records the prediction type its training target and samplers read.
    test_sd21_shaped_edit_runs_offline_with_v_prediction runs the same at SD-2.1's size for its memory."""
    from imagic_steps.cli import main

    model = tmp_path / "tiny-v"
    shutil.copytree(resolve_model_path("tiny"), model)
    scheduler = json.loads((model / "scheduler/scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "epsilon"
    (model / "scheduler/scheduler_config.json").write_text(json.dumps({**scheduler, "prediction_type": "v_prediction"}))
    out = tmp_path / "edit"
    assert main(["edit", "--image", str(REPO / "config/images/chelsea.png"), "--prompt", "a photo of a cat",
                 "--model", str(model), "--set", "embed.steps=1", "--set", "finetune.steps=1",
                 "--set", "sample.steps=1", "--set", "finetune.mode=lora", "--set", "finetune.preview_steps=1",
                 "--alphas", "0", "1", "--seeds", "0", "--out", str(out)]) == 0, capsys.readouterr().err[-3000:]
    for alpha in ("0", "1"):
        assert (out / "samples" / f"seed0_alpha{alpha}.png").stat().st_size > 0
    for stage in ("embed", "finetune", "sample"):
        assert json.loads((out / f"{stage}.json").read_text())["model"]["prediction_type"] == "v_prediction"


@pytest.mark.slow
@ONE_AT_A_TIME
def test_sd21_shaped_edit_runs_offline_with_v_prediction(tmp_path):
    """One Imagic edit on the SD-2.1-shaped preset through the CLI, building it on first use: LoRA, one step per
    stage (the preview too), 256 px. What needs SD-2.1's size: its architecture (the OpenCLIP text tower, pad
    token 0) loads and runs offline within its memory. Peak RSS is the child's ru_maxrss (wait4), which Linux
    also fills with this process's own peak at exec (<= ~4 GiB: an SD-shaped preset built here), so it bounds the
    edit's peak from above. What v prediction asks of each stage, the tiny v-prediction CLI test above shows."""
    out = tmp_path / "edit"
    command = [sys.executable, "-m", "imagic_steps", "edit", "--image", str(REPO / "config/images/chelsea.png"),
               "--prompt", "a photo of a cat", "--model", SD21_SHAPED_PRESET,
               "--set", "embed.steps=1", "--set", "finetune.steps=1", "--set", "sample.steps=1",
               "--set", "finetune.mode=lora", "--set", "finetune.preview_steps=1", "--set", "resolution=256",
               "--alphas", "0", "1", "--seeds", "0", "--out", str(out)]
    # No hub access: offline, and an empty hub cache, so nothing could be read from a download either.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    started = time.perf_counter()
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        child = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env)
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    peak_gib = usage.ru_maxrss * 1024 / GIB
    print(f"sd21-shaped edit: {seconds:.1f} s wall, peak RSS {peak_gib:.2f} GiB")
    log = (tmp_path / "stderr").read_text()
    assert os.waitstatus_to_exitcode(status) == 0, log[-3000:]
    for alpha in ("0", "1"):
        with Image.open(out / "samples" / f"seed0_alpha{alpha}.png") as image:
            assert image.size == (256, 256)
            image.load()
    assert (out / "montage.png").stat().st_size > 0
    for stage in ("embed", "finetune", "sample"):
        model = json.loads((out / f"{stage}.json").read_text())["model"]
        assert model["model"] == SD21_SHAPED_PRESET
        assert model["random_weights"] is True
        assert model["prediction_type"] == "v_prediction"  # what the training target and samplers read
    assert "'sd21-shaped' has seeded random weights" in log
    assert peak_gib < 8
