"""Stage B on the tiny preset: training lowers the loss, never touches the base UNet, trains in fp32, stops on a
non-finite loss, writes previews without changing the result, resumes bit for bit, and shares LoRA's frozen weights."""

import copy
import dataclasses

import pytest
import torch
from conftest import FAST_SAMPLE, PROMPT, make_probe_set, probe_loss, state_equal

from imagic_steps import finetune as finetune_module
from imagic_steps.diffusion import LossHistory, NonFiniteLossError
from imagic_steps.embed import optimize_embedding
from imagic_steps.finetune import PreviewSpec, finetune_unet
from imagic_steps.finetune_artefact import load_finetuned_unet, save_finetuned, trainable_state
from imagic_steps.variants import EmbedParams, FinetuneParams


@pytest.mark.parametrize("mode,lr", [("full", 1e-3), ("lora", 1e-2)])
def test_finetune_lowers_loss_on_fixed_probe_set(tiny, embedded, mode, lr):
    probe = make_probe_set(embedded.image_latents, tiny.scheduler, count=32)
    before = probe_loss(tiny.unet, tiny.scheduler, embedded.image_latents, embedded.optimized_embedding, probe)
    result = finetune_unet(tiny, embedded, FinetuneParams(steps=30, lr=lr, mode=mode), progress=False)
    after = probe_loss(result.unet, tiny.scheduler, embedded.image_latents, embedded.optimized_embedding, probe)
    print(f"stage B ({mode}) probe loss: {before:.4f} -> {after:.4f}")
    assert after < before


def test_finetune_never_modifies_the_base_unet(tiny, embedded, astronaut_image_path):
    from imagic_steps.images import load_image, pil_to_tensor

    base = copy.deepcopy(tiny.unet.state_dict())
    other = optimize_embedding(tiny, pil_to_tensor(load_image(astronaut_image_path, 64)), "an astronaut",
                               EmbedParams(steps=3), progress=False)
    ft = FinetuneParams(steps=5, lr=1e-3)
    alone = trainable_state(finetune_unet(tiny, other, ft, progress=False).unet, "full")
    for mode in ("full", "lora"):
        finetune_unet(tiny, embedded, dataclasses.replace(ft, mode=mode), progress=False)
        assert state_equal(tiny.unet.state_dict(), base), f"{mode} fine-tune changed the base UNet"
    second = trainable_state(finetune_unet(tiny, other, ft, progress=False).unet, "full")
    assert state_equal(alone, second)


def test_half_precision_weights_train_in_fp32(cat_tensor):
    from imagic_steps.model_loading import load_components

    components = load_components("tiny", dtype="bf16")
    embedded = optimize_embedding(components, cat_tensor, PROMPT, EmbedParams(steps=2), progress=False)
    assert embedded.optimized_embedding.dtype == torch.float32
    for mode in ("full", "lora"):
        result = finetune_unet(components, embedded, FinetuneParams(steps=2, lr=1e-3, mode=mode,
                                                                    mixed_precision="bf16"), progress=False)
        trainable = [p for p in result.unet.parameters() if p.requires_grad]
        assert trainable and all(p.dtype == torch.float32 for p in trainable)
        assert all(torch.isfinite(torch.tensor(result.losses)))


def test_non_finite_loss_stops_with_the_step(tiny, embedded, monkeypatch):
    real_loss = finetune_module.denoising_loss
    calls = {"n": 0}

    def loss_that_explodes(*args):
        calls["n"] += 1
        value = real_loss(*args)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(finetune_module, "denoising_loss", loss_that_explodes)
    with pytest.raises(NonFiniteLossError, match="at step 2"):
        finetune_unet(tiny, embedded, FinetuneParams(steps=5), progress=False)


def test_loss_history_gives_the_item_values_and_checks_every_n_steps():
    losses = [torch.tensor(v, dtype=torch.float32) for v in (0.1, 0.2, 0.3)]
    history = LossHistory("finetune", previous=[0.5], check_every=3)
    for loss in losses:
        history.append(loss)
    assert history.values() == [0.5] + [loss.item() for loss in losses]  # float32 values, not 0.1 etc.
    history.append(torch.tensor(float("nan")))
    history.append(torch.tensor(1.0))
    with pytest.raises(NonFiniteLossError, match="at step 4"):
        history.append(torch.tensor(1.0))  # the third pending loss is a check: it stops there, not at the end


def test_previews_are_written_and_do_not_change_training(tiny, embedded, tmp_path):
    params = FinetuneParams(steps=6, lr=1e-3, preview_every=3)
    with_previews = finetune_unet(tiny, embedded, params, preview=PreviewSpec(tmp_path, FAST_SAMPLE), progress=False)
    without = finetune_unet(tiny, embedded, dataclasses.replace(params, preview_every=0), progress=False)
    # the last step's grid is run_finetune's final preview, not drawn twice: only step 3 of 6 here
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000003.png"]
    assert state_equal(trainable_state(with_previews.unet, "full"), trainable_state(without.unet, "full"))


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_resume_from_checkpoint_is_bit_identical(tiny, embedded, tmp_path, monkeypatch, mode):
    params = FinetuneParams(steps=9, lr=1e-3, mode=mode, checkpoint_every=4)
    reference = finetune_unet(tiny, embedded, params, checkpoint_dir=tmp_path / "ref", progress=False)

    real_loss = finetune_module.denoising_loss
    calls = {"n": 0}

    def crash_at_step_seven(*args):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt("simulated kill")
        return real_loss(*args)

    monkeypatch.setattr(finetune_module, "denoising_loss", crash_at_step_seven)
    with pytest.raises(KeyboardInterrupt):
        finetune_unet(tiny, embedded, params, checkpoint_dir=tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "latest.json").exists()
    monkeypatch.setattr(finetune_module, "denoising_loss", real_loss)
    resumed = finetune_unet(tiny, embedded, params, checkpoint_dir=tmp_path / "run", progress=False)
    assert resumed.losses == reference.losses
    assert state_equal(trainable_state(resumed.unet, mode), trainable_state(reference.unet, mode))


def test_lora_training_shares_the_frozen_weights_with_the_base(tiny, embedded, tmp_path):
    """No second copy of the UNet for LoRA: the adapters sit over the base's own weight tensors, untouched."""
    from imagic_steps.finetune import trainable_unet

    base = {name: p.data_ptr() for name, p in tiny.unet.named_parameters()}
    tuned = finetune_unet(tiny, embedded, FinetuneParams(steps=2, lr=1e-3, mode="lora"), progress=False)
    frozen = {name.replace(".base_layer", ""): p.data_ptr() for name, p in tuned.unet.named_parameters()
              if not p.requires_grad}
    assert frozen == base
    assert not any("lora" in name for name, _ in tiny.unet.named_parameters())
    save_finetuned(tmp_path / "lora.safetensors", tuned)
    loaded = load_finetuned_unet(tiny.unet, tmp_path / "lora.safetensors")
    assert {n.replace(".base_layer", ""): p.data_ptr() for n, p in loaded.named_parameters() if "lora" not in n} == base
    full = trainable_unet(tiny.unet, FinetuneParams(mode="full"))
    assert not set(p.data_ptr() for p in full.parameters()) & set(base.values())  # full mode trains a real copy
