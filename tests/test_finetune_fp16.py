"""Stage B's fp16 mixed precision (autocast + GradScaler), run on the CPU through `fp16_on_cpu` as a GPU user's
`mixed_precision: fp16` run takes it: the loss falls, an overflowing step is skipped, lowers the scale and is logged,
the scaler's state rides in the resume checkpoint, and the update is unscaled (lr means what it means in fp32).

fp16 is ~10x slower than fp32 on the CPU, so these tests train at 32 px (4x4 latents) for a few steps."""

import dataclasses
import logging

import pytest
import torch
from conftest import PROMPT, make_probe_set, probe_loss, state_equal

from imagic_steps import finetune as finetune_module
from imagic_steps.diffusion import denoising_loss
from imagic_steps.finetune import finetune_unet
from imagic_steps.finetune_artefact import trainable_state
from imagic_steps.variants import EmbedParams, FinetuneParams

FP16 = FinetuneParams(steps=4, lr=1e-3, mixed_precision="fp16")


@pytest.fixture(scope="module")
def small(tiny, cat_image_path):
    """Stage A on the cat at 32 px, 2 steps: what stage B needs, cheaply."""
    from imagic_steps.embed import optimize_embedding
    from imagic_steps.images import load_image, pil_to_tensor

    image = pil_to_tensor(load_image(cat_image_path, 32))
    return optimize_embedding(tiny, image, PROMPT, EmbedParams(steps=2), progress=False)


@pytest.fixture
def runs(monkeypatch):
    """Each fine-tune's training UNet and gradient scaler, in order (`runs["unet"][-1]`: the last run's)."""
    seen = {"unet": [], "scaler": []}
    real_unet, real_scaler = finetune_module.trainable_unet, finetune_module.autocast_and_scaler

    def trainable_unet(*args, **kwargs):
        seen["unet"].append(real_unet(*args, **kwargs))
        return seen["unet"][-1]

    def autocast_and_scaler(*args, **kwargs):
        autocast, scaler = real_scaler(*args, **kwargs)
        seen["scaler"].append(scaler)
        return autocast, scaler

    monkeypatch.setattr(finetune_module, "trainable_unet", trainable_unet)
    monkeypatch.setattr(finetune_module, "autocast_and_scaler", autocast_and_scaler)
    return seen


def overflow_at(steps, monkeypatch, crash_at=None):
    """Make the gradient of the given steps (0-based, counted from this call) inf while the loss stays finite: a hook
    on the loss multiplies its gradient by inf, as an fp16 backward pass that overflows would. `crash_at`: raise
    KeyboardInterrupt (a killed job) at that step's forward."""
    calls = {"n": 0}

    def loss(*args):
        step = calls["n"]
        calls["n"] += 1
        if step == crash_at:
            raise KeyboardInterrupt("simulated kill")
        value = denoising_loss(*args)
        if step in steps:
            value.register_hook(lambda grad: grad * float("inf"))
        return value

    monkeypatch.setattr(finetune_module, "denoising_loss", loss)


def test_fp16_on_the_cpu_trains_in_half_precision_and_the_default_stays_fp32(tiny, small, runs, caplog,
                                                                             monkeypatch):
    probe = make_probe_set(small.image_latents, tiny.scheduler, count=8)
    before = probe_loss(tiny.unet, tiny.scheduler, small.image_latents, small.optimized, probe)

    # users' default on the CPU: a warning, then exactly the fp32 run
    with caplog.at_level(logging.WARNING, logger="imagic_steps.finetune"):
        default = finetune_unet(tiny, small, dataclasses.replace(FP16, steps=1), progress=False)
    assert "fp16 mixed precision needs CUDA; training in fp32 on cpu" in caplog.text
    assert not runs["scaler"][-1].is_enabled()
    fp32 = finetune_unet(tiny, small, dataclasses.replace(FP16, steps=1, mixed_precision="no"), progress=False)
    assert state_equal(trainable_state(default.unet, "full"), trainable_state(fp32.unet, "full"))

    output_dtypes = set()
    real_unet = finetune_module.trainable_unet

    def hooked(*args, **kwargs):
        unet = real_unet(*args, **kwargs)
        unet.conv_in.register_forward_hook(lambda module, inputs, output: output_dtypes.add(output.dtype))
        return unet

    monkeypatch.setattr(finetune_module, "trainable_unet", hooked)
    result = finetune_unet(tiny, small, dataclasses.replace(FP16, steps=5), progress=False, fp16_on_cpu=True)
    assert output_dtypes == {torch.float16}, "autocast did not run the UNet in fp16"
    after = probe_loss(result.unet, tiny.scheduler, small.image_latents, small.optimized, probe)  # fp32
    print(f"fp16 autocast on the CPU, probe loss {before:.4f} -> {after:.4f}")
    scaler = runs["scaler"][-1]
    assert scaler.is_enabled() and scaler.get_scale() == 2.0**16  # no overflow in 5 steps, no growth before 2000
    assert all(p.dtype == torch.float32 for p in result.unet.parameters())  # fp32 master weights
    assert after < before


def test_an_inf_gradient_skips_its_step_lowers_the_scale_and_is_logged(tiny, small, runs, monkeypatch, caplog):
    weights = []
    overflow_at({1}, monkeypatch)
    hooked_loss = finetune_module.denoising_loss

    def loss(*args):  # the training UNet's weights before each step's forward
        weights.append({k: v.clone() for k, v in trainable_state(runs["unet"][-1], "full").items()})
        return hooked_loss(*args)

    monkeypatch.setattr(finetune_module, "denoising_loss", loss)
    with caplog.at_level(logging.INFO, logger="imagic_steps.finetune"):
        result = finetune_unet(tiny, small, dataclasses.replace(FP16, steps=3), progress=False, fp16_on_cpu=True)
    weights.append(trainable_state(result.unet, "full"))
    assert not state_equal(weights[0], weights[1]), "step 0 did not train"
    assert state_equal(weights[1], weights[2]), "the step whose gradient was inf changed the weights"
    assert not state_equal(weights[2], weights[3]), "step 2 did not train after the skipped step"
    assert all(torch.isfinite(v).all() for v in weights[3].values())
    assert runs["scaler"][-1].get_scale() == 2.0**15  # halved once
    assert ("finetune: step 1 skipped: fp16 gradient overflow (inf/NaN gradient), weights unchanged; loss scale "
            "lowered from 65536 to 32768") in caplog.messages
    assert "finetune: fp16 loss scaling skipped 1 of 3 steps (gradient overflow)" in caplog.messages
    assert all(torch.isfinite(torch.tensor(result.losses)))  # the loss itself stayed finite


def test_fp16_resume_restores_the_scaler_and_ends_bit_identical(tiny, small, runs, tmp_path, monkeypatch, caplog):
    """A run killed after its checkpoint at step 2 (step 1 overflowed before it, so the scale is 32768, not the
    initial 65536) resumes with the checkpoint's scaler and ends as the uninterrupted run does: weights, losses,
    scaler."""
    params = dataclasses.replace(FP16, steps=4, checkpoint_every=2)
    overflow_at({1}, monkeypatch)
    reference = finetune_unet(tiny, small, params, checkpoint_dir=tmp_path / "ref", progress=False, fp16_on_cpu=True)

    overflow_at({1}, monkeypatch, crash_at=3)
    with pytest.raises(KeyboardInterrupt):
        finetune_unet(tiny, small, params, checkpoint_dir=tmp_path / "run", progress=False, fp16_on_cpu=True)
    assert (tmp_path / "run" / "latest.json").exists()
    overflow_at(set(), monkeypatch)
    with caplog.at_level(logging.INFO, logger="imagic_steps.finetune"):
        resumed = finetune_unet(tiny, small, params, checkpoint_dir=tmp_path / "run", progress=False, fp16_on_cpu=True)
    assert "resumed fine-tuning from step 2" in caplog.text
    reference_scaler, resumed_scaler = runs["scaler"][0], runs["scaler"][-1]
    assert reference_scaler.get_scale() == 2.0**15
    assert resumed_scaler.state_dict() == reference_scaler.state_dict()
    assert resumed.losses == reference.losses
    assert state_equal(trainable_state(resumed.unet, "full"), trainable_state(reference.unet, "full"))


def one_step_update(tiny, small, mixed_precision: str) -> torch.Tensor:
    """The change one training step makes to every trainable weight, flattened."""
    base = {k: v.float() for k, v in trainable_state(tiny.unet, "full").items()}
    params = dataclasses.replace(FP16, steps=1, mixed_precision=mixed_precision)
    after = trainable_state(finetune_unet(tiny, small, params, progress=False, fp16_on_cpu=True).unet, "full")
    return torch.cat([(after[k] - base[k]).flatten() for k in sorted(base)])


def test_an_fp16_step_updates_the_weights_as_an_fp32_step_does(tiny, small, runs, monkeypatch):
    """The scaler unscales the gradients before the update, so lr means what it means in fp32.

    Adam's update hardly depends on the gradients' scale (m / sqrt(v)), so a missing unscale would barely show in
    it: the same step is also taken with fused SGD in Adam's place, whose update is lr x the gradient it is given and
    which GradScaler drives as it drives fused Adam (the scale and found-inf handed to the fused kernel)."""
    lr = FP16.lr
    adam16, adam32 = one_step_update(tiny, small, "fp16"), one_step_update(tiny, small, "no")
    close = (adam16 - adam32).abs() <= 0.02 * lr
    # a gradient near 0 may change sign in fp16: Adam's first step is then +-lr; every other element agrees
    assert close.float().mean() > 0.99 and (adam16 - adam32).abs().max() <= 2.01 * lr

    def fused_sgd(params, lr, fused):
        return torch.optim.SGD(params, lr=lr, fused=fused)

    monkeypatch.setattr(torch.optim, "Adam", fused_sgd)
    sgd16, sgd32 = one_step_update(tiny, small, "fp16"), one_step_update(tiny, small, "no")
    print(f"fp16 vs fp32 one-step update: SGD relative error {((sgd16 - sgd32).norm() / sgd32.norm()).item():.2e}, "
          f"Adam elements within 2% of lr {close.float().mean().item():.4f}")
    assert [scaler.is_enabled() for scaler in runs["scaler"]] == [True, False, True, False]  # fp16 did run
    assert sgd32.norm() > 0
    assert (sgd16 - sgd32).norm() <= 0.01 * sgd32.norm()  # fp16 rounding, not the 65536x of an unscaled gradient
