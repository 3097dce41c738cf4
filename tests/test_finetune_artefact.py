"""Stage B's artefact (imagic_steps.finetune_artefact): LoRA and full round trips reproduce the samples, LoRA and
fp16 artefacts are small, and zero fine-tune steps save a marker that reloads as the base model."""

import os

import pytest
import torch
from conftest import FAST_SAMPLE, state_equal

from imagic_steps.finetune import finetune_unet
from imagic_steps.finetune_artefact import load_finetuned_unet, save_finetuned
from imagic_steps.sample import sample_alphas
from imagic_steps.variants import FinetuneParams


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_artefact_round_trip_reproduces_samples(tiny, embedded, tmp_path, mode):
    result = finetune_unet(tiny, embedded, FinetuneParams(steps=5, lr=1e-2, mode=mode), progress=False)
    path = tmp_path / f"{mode}.safetensors"
    save_finetuned(path, result)
    reloaded = load_finetuned_unet(tiny.unet, path)
    args = (embedded.target_embedding, embedded.optimized_embedding, [0.0, 1.0], [0], FAST_SAMPLE)
    direct = sample_alphas(tiny, result.unet, *args, progress=False)
    again = sample_alphas(tiny, reloaded, *args, progress=False)
    base = sample_alphas(tiny, tiny.unet, *args, progress=False)
    assert torch.equal(direct, again)
    assert not torch.equal(direct, base)


def test_lora_artefact_far_smaller_than_full(tiny, embedded, tmp_path):
    sizes = {}
    for mode in ("full", "lora"):
        result = finetune_unet(tiny, embedded, FinetuneParams(steps=1, mode=mode), progress=False)
        save_finetuned(tmp_path / f"{mode}.safetensors", result)
        sizes[mode] = os.path.getsize(tmp_path / f"{mode}.safetensors")
    save_finetuned(tmp_path / "half.safetensors", finetune_unet(tiny, embedded, FinetuneParams(steps=1), progress=False), "fp16")
    sizes["full-fp16"] = os.path.getsize(tmp_path / "half.safetensors")
    print("artefact bytes:", sizes)
    assert sizes["lora"] * 20 < sizes["full"]
    assert sizes["full-fp16"] < 0.55 * sizes["full"]


def test_zero_finetune_steps_is_the_base_model(tiny, embedded, tmp_path):
    result = finetune_unet(tiny, embedded, FinetuneParams(steps=0), progress=False)
    save_finetuned(tmp_path / "base.safetensors", result)
    assert os.path.getsize(tmp_path / "base.safetensors") < 1024
    reloaded = load_finetuned_unet(tiny.unet, tmp_path / "base.safetensors")
    assert state_equal(reloaded.state_dict(), tiny.unet.state_dict())
