"""The memory estimate: model sizes read from weight-file headers, the estimate's parts, and job resources."""

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from imagic_steps.jobs import device_memory_warning
from imagic_steps.memory import (
    SD15,
    estimate_sampling_memory,
    estimate_training_memory,
    job_memory_mb,
    model_size,
    stage_estimate,
)
from imagic_steps.variants import FinetuneParams

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
