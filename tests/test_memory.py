"""The memory estimate: model sizes read from weight-file headers, the estimate's parts, and job resources."""

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from imagic_steps.execution.workflow_job import device_memory_warning
from imagic_steps.memory import (
    ACTIVATIONS,
    ARCHITECTURE_SIZES,
    ATTENTION_SCORE_COPIES,
    GIB,
    IF_I_M,
    IF_I_XL,
    SD15,
    SD21,
    SDXL,
    TEXT_TOKENS,
    VAE_DECODE_GIB_512,
    estimate_sampling_memory,
    estimate_training_memory,
    job_memory_mb,
    model_size,
    planning_model_size,
    read_model_size,
    stage_estimate,
    unet_attention_shape,
)
from imagic_steps.model_folder import model_folder_problem
from imagic_steps.variants import FinetuneParams, LeditsParams

REPO = Path(__file__).resolve().parents[1]


def parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_model_size_from_headers_matches_the_loaded_model(tiny):
    from imagic_steps.finetune import trainable_unet

    size = model_size("tiny")
    assert (size.unet, size.text_encoder, size.vae) == (
        parameters(tiny.unet), parameters(tiny.text_encoder), parameters(tiny.vae))
    assert size.resolution == tiny.resolution
    lora = trainable_unet(tiny.unet, FinetuneParams(mode="lora", lora_rank=8))
    assert size.lora(8) == sum(p.numel() for p in lora.parameters() if p.requires_grad)


def test_estimate_matches_the_tensors_a_training_step_holds(preset_cache):
    """Weights, training copy, gradients and Adam state: estimate vs byte counts after one real step."""
    from benchmarks.memory import tiny_check

    for row in tiny_check():
        assert row["estimated_resident_MiB"] == pytest.approx(row["measured_tensor_bytes_MiB"], rel=1e-3), row


def test_hub_model_is_found_in_the_cache_offline_and_never_downloaded(tmp_path):
    """A hub id resolves from a local Hugging Face cache folder (offline, cache lookup only); an uncached id is None."""
    repo = tmp_path / "hub" / "models--someone--tiny-sd"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(REPO / "imagic_steps/presets/digits", snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    code = ("from imagic_steps.memory import model_size; print(model_size('someone/tiny-sd').unet, "
            "model_size('someone/not-cached'))")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == [str(model_size("digits").unet), "None"]


def test_estimate_orders_the_settings_as_their_memory_does():
    full = estimate_training_memory(SD15, weights_bytes=2, mode="full")
    assert estimate_training_memory(SD15, weights_bytes=2, mode="lora").total < full.total / 3
    assert estimate_training_memory(SD15, weights_bytes=2, gradient_checkpointing=True).total < full.total
    assert estimate_training_memory(SD15, weights_bytes=2, mixed_precision="bf16").activations == \
        pytest.approx(full.activations / 2)
    assert estimate_training_memory(SD15, weights_bytes=4).frozen_weights == pytest.approx(2 * full.frozen_weights)
    assert estimate_training_memory(SD15, weights_bytes=2, adam="foreach").total > full.total
    assert estimate_training_memory(SD15, weights_bytes=2, resolution=768).activations == \
        pytest.approx(full.activations * 2.25)
    one = estimate_sampling_memory(SD15, batch=1)
    assert estimate_sampling_memory(SD15, batch=8).activations == pytest.approx(8 * one.activations)
    assert estimate_sampling_memory(SD15, mode=None).total < one.total  # SDEdit samples the base UNet, no copy


def test_stage_estimates_and_job_resources():
    trained = stage_estimate("finetune", SD15, "fp16", None, FinetuneParams(steps=10))
    untrained = stage_estimate("finetune", SD15, "fp16", None, FinetuneParams(steps=0))
    assert untrained.total < trained.total and untrained.gradients == 0
    assert stage_estimate("finetune", SD15, "fp16", None, FinetuneParams(steps=10, mode="lora")).total < trained.total
    assert stage_estimate("sample", SD15, "fp16", None, FinetuneParams(steps=10), sample_batch=3).activations == \
        pytest.approx(3 * stage_estimate("sample", SD15, "fp16", None, FinetuneParams(steps=10)).activations)
    assert stage_estimate("embed", replace(SD15, resolution=768), "fp16").activations == \
        pytest.approx(2.25 * stage_estimate("embed", SD15, "fp16").activations)
    with pytest.raises(ValueError, match="score"):
        stage_estimate("score", SD15, "fp16")

    gpu = job_memory_mb(trained, "cuda")
    cpu = job_memory_mb(trained, "cpu")
    assert set(gpu) == {"mem_mb", "gpu_mem_mb"} and set(cpu) == {"mem_mb"}
    assert gpu["gpu_mem_mb"] * 10**6 > trained.total * 2**30  # never below the estimate itself
    assert gpu["mem_mb"] < cpu["mem_mb"]  # on a GPU the host holds only the libraries and the weights


def test_device_memory_warning_names_the_need_and_the_fixes():
    assert device_memory_warning(20_000, 80 * 2**30, "cuda:0") is None
    assert device_memory_warning(None, 8 * 2**30, "cuda:0") is None
    warning = device_memory_warning(20_000, 8 * 2**30, "cuda:1")
    assert "18.6 GiB on cuda:1" in warning and "8.0 GiB" in warning and "lora" in warning


def test_published_sizes_are_the_counted_architectures():
    """Every published size is what instantiating its configs counts (meta device, no weights)."""
    from benchmarks.memory import count_architecture

    for architecture, size in ARCHITECTURE_SIZES.items():
        assert count_architecture(architecture) == size, architecture
    assert IF_I_M.vae == IF_I_XL.vae == 0 and IF_I_M.text_encoder == IF_I_XL.text_encoder  # no VAE, the same T5


def write_weights(folder: Path, shapes: dict[str, tuple[int, ...]], config: dict | None = None) -> None:
    from safetensors.torch import save_file
    import torch

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config or {}))
    stem = "model" if "text_encoder" in folder.name else "diffusion_pytorch_model"
    save_file({name: torch.zeros(shape) for name, shape in shapes.items()}, folder / f"{stem}.safetensors")


def pixel_space_folder(root: Path) -> Path:
    """An IF-layout folder: IFPipeline, T5 tokenizer/encoder, a 3-channel UNet, a scheduler, no VAE; the safety
    checker, feature extractor and watermarker listed as the real IF-I-M index lists them, but absent."""
    folder = root / "if"
    index = {"_class_name": "IFPipeline", "tokenizer": ["transformers", "T5Tokenizer"],
             "text_encoder": ["transformers", "T5EncoderModel"], "unet": ["diffusers", "UNet2DConditionModel"],
             "scheduler": ["diffusers", "DDPMScheduler"], "safety_checker": ["deepfloyd_if", "IFSafetyChecker"],
             "feature_extractor": ["transformers", "CLIPImageProcessor"], "watermarker": [None, None]}
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps(index))
    for name in ("tokenizer", "scheduler"):
        (folder / name).mkdir()
    write_weights(folder / "text_encoder", {"shared.weight": (10, 4)})
    write_weights(folder / "unet", {"conv_in.weight": (8, 3, 3, 3), "down.attn.to_q.weight": (8, 6)},
                  {"sample_size": 64, "in_channels": 3, "out_channels": 6})
    return folder


def test_a_folder_without_a_vae_is_pixel_space_if(tmp_path):
    folder = pixel_space_folder(tmp_path)
    assert model_folder_problem(folder) is None
    size = read_model_size(folder)
    assert (size.unet, size.text_encoder, size.vae) == (8 * 3 * 3 * 3 + 8 * 6, 40, 0)
    assert size.resolution == 64 and size.family == "if"  # sample_size x 1: no VAE down-sampling
    assert size.lora_per_rank == 8 + 6
    shutil.rmtree(folder / "scheduler")
    assert "(scheduler/): not found" in model_folder_problem(folder)


def test_a_listed_component_is_required_and_an_unlisted_or_null_one_is_not(tmp_path):
    folder = pixel_space_folder(tmp_path)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "vae": ["diffusers", "AutoencoderKL"]}))
    assert "(vae/): not found" in model_folder_problem(folder)
    (folder / "model_index.json").write_text(json.dumps({**index, "vae": [None, None], "text_encoder": None}))
    assert model_folder_problem(folder) is None and read_model_size(folder).vae == 0
    shutil.rmtree(folder / "text_encoder")
    assert "(text_encoder/): not found" in model_folder_problem(folder)  # always required, even listed as null


def test_stage_estimates_use_their_familys_measured_activations():
    sdxl = stage_estimate("embed", SDXL, "fp16")  # native 1024 px: 4 x the 512 px reference
    assert sdxl.activations == pytest.approx(ACTIVATIONS["sdxl"].training[False] * 4 * 2 / 4)
    assert sdxl.activations != pytest.approx(stage_estimate("embed", replace(SDXL, family="sd"), "fp16").activations)
    pixel = stage_estimate("sample", IF_I_M, "fp16", None, FinetuneParams(steps=10))  # 64 px = IF's reference side
    assert pixel.activations == pytest.approx(ACTIVATIONS["if"].inference * 2 * 2 / 4)
    # a sample (or fine-tune) job loads no text encoder: the embed artefact holds the conditioning
    assert pixel.frozen_weights == pytest.approx(2 * IF_I_M.unet / 2**30)
    embed = stage_estimate("embed", IF_I_M, "fp16")
    assert embed.frozen_weights == pytest.approx(2 * (IF_I_M.unet + IF_I_M.text_encoder) / 2**30)
    assert stage_estimate("sdedit", IF_I_M, "fp16").frozen_weights == pytest.approx(embed.frozen_weights)
    # SD-2.x shares SD-1.x's constants, scaled to its 768 px
    assert stage_estimate("embed", SD21, "fp16").activations == pytest.approx(
        2.25 * stage_estimate("embed", SD15, "fp16").activations)


def test_known_hub_ids_plan_with_their_published_size_before_download():
    for model, size in (("stabilityai/stable-diffusion-xl-base-1.0", SDXL), ("DeepFloyd/IF-I-M-v1.0", IF_I_M),
                        ("DeepFloyd/IF-I-XL-v1.0", IF_I_XL), ("stabilityai/stable-diffusion-2-1", SD21)):
        planned, note = planning_model_size(model)
        assert planned == size and "published size" in note and model in note, model
    planned, note = planning_model_size("someone/unknown-model")
    assert planned == SD15 and "Stable Diffusion 1.5's size" in note


DECODING_STAGES = ("sample", "sdedit", "ledits", "ddim_inversion")
ALL_STAGES = ("embed", "finetune") + DECODING_STAGES


def test_sdxl_in_fp16_holds_and_decodes_its_vae_in_fp32():
    """SDXL's VAE runs in fp32 under fp16 weights (force_upcast), in every job, since every job loads it so
    (families.StableDiffusionXLFamily.finish_loading); bf16 and SD's VAE keep the load dtype."""
    plain = replace(SDXL, vae_upcast=False)
    trained = FinetuneParams(steps=10)
    for stage in ALL_STAGES:
        upcast, kept = (stage_estimate(stage, size, "fp16", None, trained) for size in (SDXL, plain))
        assert upcast.frozen_weights - kept.frozen_weights == pytest.approx(2 * SDXL.vae / GIB), stage
        assert stage_estimate(stage, SDXL, "bf16", None, trained).frozen_weights == \
            pytest.approx(stage_estimate(stage, plain, "bf16", None, trained).frozen_weights), stage
    for stage in DECODING_STAGES:  # one image at the native 1024 px: 4 x the 512 px figure, fp32 / bf16
        assert stage_estimate(stage, SDXL, "fp16").decode == pytest.approx(4 * VAE_DECODE_GIB_512[4]), stage
        assert stage_estimate(stage, SDXL, "bf16").decode == pytest.approx(4 * VAE_DECODE_GIB_512[2]), stage
        assert stage_estimate(stage, SD15, "fp16").decode == pytest.approx(VAE_DECODE_GIB_512[2]), stage
    assert stage_estimate("sample", SD15, "fp16", None, trained, sample_batch=3).decode == \
        pytest.approx(3 * VAE_DECODE_GIB_512[2])  # a sample job decodes its batch together
    assert stage_estimate("sample", IF_I_M, "fp16", None, trained).decode == 0  # pixel space: no VAE
    for stage in ("embed", "finetune"):
        assert stage_estimate(stage, SDXL, "fp16", None, trained).decode == 0, stage
    sdxl = stage_estimate("ddim_inversion", SDXL, "fp16")  # the decode is SDXL's largest sampling transient
    assert sdxl.device_total == pytest.approx(sdxl.resident + sdxl.decode)


def test_tiny_sdxl_loaded_in_fp16_holds_what_the_estimate_counts(preset_cache):
    """The estimate's frozen weights are the bytes an fp16 load of tiny-sdxl holds: its VAE in fp32."""
    from imagic_steps.model_loading import load_components
    from imagic_steps.preset_recipes import ensure_preset

    size = read_model_size(ensure_preset("tiny-sdxl"))
    assert size.family == "sdxl" and size.vae_upcast
    components = load_components("tiny-sdxl", dtype="fp16")
    held = sum(p.numel() * p.element_size() for module in components.frozen_modules() for p in module.parameters())
    assert components.vae.dtype.itemsize == 4
    assert stage_estimate("sdedit", size, "fp16").frozen_weights * GIB == pytest.approx(held, rel=1e-9)


def test_published_attention_shapes_are_what_their_unets_build():
    """Each published size's AttentionShape is `unet_attention_shape` of its UNet config, and both are what
    diffusers builds from it (meta device): the finest self-attention's heads and side, and the cross-attention
    heads x layers of the down and up blocks at a quarter of the latent side (those LEDITS++ stores)."""
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention_processor import Attention

    from benchmarks.memory import unet_config

    for architecture in ("sd15", "sd21", "sdxl"):
        config = unet_config(architecture)
        assert unet_attention_shape(config) == ARCHITECTURE_SIZES[architecture].attention, architecture
        with torch.device("meta"):
            unet = UNet2DConditionModel(**config)
        levels = len(config["down_block_types"])
        finest, maps = None, 0
        for name, module in unet.named_modules():
            if not isinstance(module, Attention) or not name.startswith(("down_blocks", "up_blocks")):
                continue
            index = int(name.split(".")[1])
            level = index if name.startswith("down_blocks") else levels - 1 - index
            if name.endswith("attn1") and (finest is None or level < finest[0]):
                finest = (level, module.heads, bool(module.upcast_attention))
            maps += module.heads if name.endswith("attn2") and level == 2 else 0
        shape = ARCHITECTURE_SIZES[architecture].attention
        assert (8 * 2 ** finest[0], finest[1], finest[2], maps) == \
            (shape.factor, shape.heads, shape.fp32_scores, shape.mask_maps), architecture
    assert unet_attention_shape(unet_config("if-i-m")) is None  # IF's simple cross-attention: no LEDITS++


def test_ledits_estimate_counts_its_inversion_attention_maps_and_explicit_scores():
    """LEDITS++ keeps per inversion step a noise map and a latent (load dtype) and per edit step a guidance and a
    mask record (fp32); it stores cross-attention maps; its UNet holds whole attention score matrices."""
    latent = 4 * 64 * 64  # SD-1.5 at 512 px
    more = stage_estimate("ledits", SD15, "fp16", baseline=LeditsParams(inversion_steps=31))
    fewer = stage_estimate("ledits", SD15, "fp16", baseline=LeditsParams(inversion_steps=30))
    assert (more.edit_state - fewer.edit_state) * GIB == pytest.approx(latent * (2 * 2 + 2 * 4))
    assert fewer == stage_estimate("ledits", SD15, "fp16")  # SD's pipeline default: 30 steps
    assert stage_estimate("ledits", SDXL, "fp16") == \
        stage_estimate("ledits", SDXL, "fp16", baseline=LeditsParams(inversion_steps=50))  # SDXL's: 50
    maps = 2 * SD15.attention.mask_maps * 2 * 16 * 16 * TEXT_TOKENS * 2  # 2 copies, 2 rows, 16 x 16 at 512 px
    assert fewer.edit_state * GIB == pytest.approx(latent * (61 * 2 + 60 * 4) + maps)
    # the edit's UNet at batch 2 (DDIM inversion's guided batch) plus the explicit scores of 8 heads x 4096 tokens
    guided = stage_estimate("ddim_inversion", SD15, "fp16")
    scores = ATTENTION_SCORE_COPIES * 2 * 8 * 4096**2 * 2
    assert (fewer.activations - guided.activations) * GIB == pytest.approx(scores)
    assert fewer.frozen_weights == guided.frozen_weights and fewer.decode == guided.decode
    # SD-2.1 computes its scores in fp32 (upcast_attention), whatever the weights
    sd21 = stage_estimate("ledits", SD21, "fp16").activations
    sd21 -= stage_estimate("ddim_inversion", SD21, "fp16").activations
    assert sd21 * GIB == pytest.approx(ATTENTION_SCORE_COPIES * 2 * 5 * 9216**2 * 4)
    with pytest.raises(ValueError, match="LEDITS"):
        stage_estimate("ledits", IF_I_M, "fp16")


def test_ddim_inversion_estimate_is_one_guided_sample_on_the_base_model():
    """DDIM inversion holds what SDEdit holds: the base model with its text encoder(s), a batch-2 UNet call (the
    guided regeneration; the inversion runs batch 1) and one decode."""
    for size in (SD15, SDXL, IF_I_M):
        estimate = stage_estimate("ddim_inversion", size, "fp16")
        assert estimate == stage_estimate("sdedit", size, "fp16")
        without_text = stage_estimate("sample", size, "fp16", None, FinetuneParams(steps=0))
        assert estimate.frozen_weights > without_text.frozen_weights  # the text encoder(s) are loaded
        assert estimate.activations == pytest.approx(
            size.activations.inference * size.activations.scale(size.resolution, 2) * 2 / 4)
        assert estimate.edit_state == 0


def markdown_row(row: dict) -> str:
    return "| " + " | ".join(f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.values()) + " |"


def test_the_docs_state_the_estimates_their_tables_print():
    """docs/running.md's per-family table (`python -m benchmarks.memory --table`) and benchmarks/README.md's
    baselines table (`python -m benchmarks.baseline_memory --table`) are what the estimate gives now."""
    from benchmarks.baseline_memory import baseline_table
    from benchmarks.memory import family_table

    for page, rows in (("docs/running.md", family_table()), ("benchmarks/README.md", baseline_table())):
        lines = (REPO / page).read_text().splitlines()
        for row in rows:
            assert markdown_row(row) in lines, (page, markdown_row(row))
