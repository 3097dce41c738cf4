"""Stages A, B and C on the tiny preset: losses fall, determinism, artefacts, the community pipeline's bugs."""

import copy
import dataclasses
import os

import pytest
import torch
from diffusers import DDPMScheduler

from imagic_steps import finetune as finetune_module
from imagic_steps.diffusion import (
    NonFiniteLossError,
    draw_noise_and_timesteps,
    encode_image,
    make_probe_set,
    probe_loss,
    training_target,
)
from imagic_steps.embed import optimize_embedding
from imagic_steps.finetune import (
    PreviewSpec,
    finetune_unet,
    load_finetuned_unet,
    save_finetuned,
    trainable_state,
)
from imagic_steps.sample import interpolate_embeddings, sample_alphas
from imagic_steps.variants import SCHEDULERS, EmbedParams, FinetuneParams, SampleParams

PROMPT = "a photo of a gray cat"
FAST_SAMPLE = SampleParams(steps=4, guidance_scale=3.0)


@pytest.fixture(scope="module")
def embedded(tiny, cat_tensor):
    return optimize_embedding(tiny, cat_tensor, PROMPT, EmbedParams(steps=40, lr=5e-2, seed=0), progress=False)


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_embed_lowers_loss_on_fixed_probe_set(tiny, embedded):
    probe = make_probe_set(embedded.image_latents, tiny.scheduler, count=32)
    before = probe_loss(tiny.unet, tiny.scheduler, embedded.image_latents, embedded.target_embedding, probe)
    after = probe_loss(tiny.unet, tiny.scheduler, embedded.image_latents, embedded.optimized_embedding, probe)
    print(f"stage A probe loss: e_tgt {before:.4f} -> e_opt {after:.4f}")
    assert after < before
    assert len(embedded.losses) == 40
    assert not torch.equal(embedded.optimized_embedding, embedded.target_embedding)


@pytest.mark.parametrize("mode,lr", [("full", 1e-3), ("lora", 1e-2)])
def test_finetune_lowers_loss_on_fixed_probe_set(tiny, embedded, mode, lr):
    probe = make_probe_set(embedded.image_latents, tiny.scheduler, count=32)
    before = probe_loss(tiny.unet, tiny.scheduler, embedded.image_latents, embedded.optimized_embedding, probe)
    result = finetune_unet(tiny, embedded, FinetuneParams(steps=30, lr=lr, mode=mode), progress=False)
    after = probe_loss(result.unet, tiny.scheduler, embedded.image_latents, embedded.optimized_embedding, probe)
    print(f"stage B ({mode}) probe loss: {before:.4f} -> {after:.4f}")
    assert after < before


def test_interpolation_is_exact_at_the_ends(embedded):
    e = interpolate_embeddings(embedded.target_embedding, embedded.optimized_embedding, [0.0, 1.0, 0.5])
    assert torch.equal(e[0], embedded.optimized_embedding[0])
    assert torch.equal(e[1], embedded.target_embedding[0])
    assert torch.allclose(e[2], (embedded.target_embedding[0] + embedded.optimized_embedding[0]) / 2, atol=1e-6)


def test_same_seed_bit_identical_other_seed_differs(tiny, cat_tensor):
    params = EmbedParams(steps=5, lr=1e-2, seed=3)
    a = optimize_embedding(tiny, cat_tensor, PROMPT, params, progress=False)
    b = optimize_embedding(tiny, cat_tensor, PROMPT, params, progress=False)
    c = optimize_embedding(tiny, cat_tensor, PROMPT, dataclasses.replace(params, seed=4), progress=False)
    assert torch.equal(a.optimized_embedding, b.optimized_embedding)
    assert not torch.equal(a.optimized_embedding, c.optimized_embedding)

    ft = FinetuneParams(steps=4, lr=1e-3, seed=1)
    wa = trainable_state(finetune_unet(tiny, a, ft, progress=False).unet, "full")
    wb = trainable_state(finetune_unet(tiny, a, ft, progress=False).unet, "full")
    wc = trainable_state(finetune_unet(tiny, a, dataclasses.replace(ft, seed=2), progress=False).unet, "full")
    assert state_equal(wa, wb)
    assert not state_equal(wa, wc)

    sa = sample_alphas(tiny, tiny.unet, a.target_embedding, a.optimized_embedding, [0.5], [7], FAST_SAMPLE, progress=False)
    sb = sample_alphas(tiny, tiny.unet, a.target_embedding, a.optimized_embedding, [0.5], [7], FAST_SAMPLE, progress=False)
    sc = sample_alphas(tiny, tiny.unet, a.target_embedding, a.optimized_embedding, [0.5], [8], FAST_SAMPLE, progress=False)
    assert torch.equal(sa, sb)
    assert not torch.equal(sa, sc)


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


def test_scaling_factor_comes_from_the_vae_config(tiny, cat_tensor):
    components = copy.copy(tiny)
    components.vae = copy.deepcopy(tiny.vae)
    reference = encode_image(tiny, cat_tensor, "mean", torch.Generator())
    components.vae.register_to_config(scaling_factor=0.5)
    scaled = encode_image(components, cat_tensor, "mean", torch.Generator())
    assert torch.allclose(scaled, reference / 0.18215 * 0.5, atol=1e-5)


def test_timesteps_and_target_follow_the_scheduler(tiny):
    latents = torch.randn(1, 4, 8, 8)
    short = DDPMScheduler.from_config(tiny.scheduler.config, num_train_timesteps=50)
    _, timesteps = draw_noise_and_timesteps(latents, short, torch.Generator().manual_seed(0), count=500)
    assert int(timesteps.max()) < 50 and int(timesteps.max()) > 40
    noise = torch.randn(1, 4, 8, 8)
    t = torch.tensor([10])
    assert torch.equal(training_target(short, latents, noise, t), noise)
    v_scheduler = DDPMScheduler.from_config(short.config, prediction_type="v_prediction")
    v = training_target(v_scheduler, latents, noise, t)
    assert torch.allclose(v, v_scheduler.get_velocity(latents, noise, t))
    assert not torch.allclose(v, noise)


def test_batching_seeds_and_alphas_does_not_change_samples(tiny, embedded):
    alphas = [0.0, 0.4, 0.8, 1.2]
    for scheduler in ("DDIMScheduler", "EulerAncestralDiscreteScheduler"):
        batches = [sample_alphas(tiny, tiny.unet, embedded.target_embedding, embedded.optimized_embedding, alphas,
                                 [0, 5], SampleParams(scheduler=scheduler, steps=4, batch_size=size, eta=1.0),
                                 progress=False) for size in (1, 3, 8)]
        assert all(torch.allclose(batches[0], other, atol=1e-4) for other in batches[1:]), scheduler
        assert not torch.allclose(batches[0][0], batches[0][1], atol=1e-2)  # the seeds differ


def test_every_alpha_of_a_seed_starts_from_the_same_noise(tiny, embedded):
    same = embedded.target_embedding
    images = sample_alphas(tiny, tiny.unet, same, same, [0.0, 0.5, 1.0], [0, 1], FAST_SAMPLE, progress=False)
    assert torch.allclose(images[0, 0], images[0, 2], atol=1e-5)
    assert not torch.allclose(images[0, 0], images[1, 0], atol=1e-3)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_schedulers_by_class_name(tiny, embedded, scheduler):
    images = sample_alphas(tiny, tiny.unet, embedded.target_embedding, embedded.optimized_embedding, [1.0], [0],
                           SampleParams(scheduler=scheduler, steps=4), progress=False)
    assert images.shape == (1, 1, 3, 64, 64)
    assert torch.isfinite(images).all()


def test_requested_height_and_width_are_used(tiny, embedded):
    images = sample_alphas(tiny, tiny.unet, embedded.target_embedding, embedded.optimized_embedding, [1.0], [0],
                           FAST_SAMPLE, height=48, width=80, progress=False)
    assert images.shape[-2:] == (48, 80)
    with pytest.raises(ValueError, match="multiples of 8"):
        sample_alphas(tiny, tiny.unet, embedded.target_embedding, embedded.optimized_embedding, [1.0], [0],
                      FAST_SAMPLE, height=50, width=64, progress=False)


def test_init_timestep_rate_starts_from_the_input_latents(tiny, embedded):
    args = (tiny, tiny.unet, embedded.target_embedding, embedded.optimized_embedding, [0.0], [0])
    params = SampleParams(steps=10, init_timestep_rate=0.8)
    from_input = sample_alphas(*args, params, init_latents=embedded.image_latents, progress=False)
    from_noise = sample_alphas(*args, dataclasses.replace(params, init_timestep_rate=0.0), progress=False)
    from imagic_steps.diffusion import decode_latents

    reconstruction = decode_latents(tiny, embedded.image_latents)
    assert (from_input[0] - reconstruction).abs().mean() < (from_noise[0] - reconstruction).abs().mean()
    with pytest.raises(ValueError, match="input image latents"):
        sample_alphas(*args, params, progress=False)


def test_half_precision_weights_train_in_fp32(cat_tensor):
    from imagic_steps.models import load_components

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


def test_previews_are_written_and_do_not_change_training(tiny, embedded, tmp_path):
    params = FinetuneParams(steps=6, lr=1e-3, preview_every=3)
    with_previews = finetune_unet(tiny, embedded, params, preview=PreviewSpec(tmp_path, FAST_SAMPLE), progress=False)
    without = finetune_unet(tiny, embedded, dataclasses.replace(params, preview_every=0), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000003.png", "step_000006.png"]
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


def test_long_prompt_is_truncated_with_a_warning_and_recorded(tiny, cat_image_path, tmp_path, caplog):
    from imagic_steps.io import read_json
    from imagic_steps.stages import run_embed

    prompt = "a very " + "very " * 90 + "long prompt with 'quotes', \"double\", $HOME, `id`, ünïcödé\nand a newline"
    with caplog.at_level("WARNING"):
        run_embed(tiny, cat_image_path, prompt, EmbedParams(steps=1), resolution=64,
                  artefact=tmp_path / "e.safetensors", losses_csv=tmp_path / "l.csv", loss_plot=tmp_path / "l.png",
                  record=tmp_path / "e.json", progress=False)
    record = read_json(tmp_path / "e.json")
    assert record["prompt"] == prompt
    kept = record["prompt_truncated_to"]
    assert kept and kept.startswith("a very very") and len(kept) < len(prompt)
    assert "truncated" in caplog.text


def run_all_stages(components, image) -> tuple[torch.Tensor, dict, torch.Tensor]:
    """e_opt, fine-tuned weights and samples of a short edit (3 embed, 3 fine-tune, 2 sampling steps)."""
    embedded = optimize_embedding(components, image, PROMPT, EmbedParams(steps=3, lr=1e-2), progress=False)
    tuned = finetune_unet(components, embedded, FinetuneParams(steps=3, lr=1e-4), progress=False)
    samples = sample_alphas(components, tuned.unet, embedded.target_embedding, embedded.optimized_embedding,
                            [0.0, 1.0], [0], SampleParams(steps=2, guidance_scale=3.0), progress=False)
    return embedded.optimized_embedding, trainable_state(tuned.unet, "full"), samples


def assert_same_edit(a, b, atol):
    assert torch.allclose(a[0], b[0], atol=atol)
    assert a[1].keys() == b[1].keys() and all(torch.allclose(a[1][k], b[1][k], atol=atol) for k in a[1])
    assert torch.allclose(a[2], b[2], atol=atol)


def test_channels_last_weights_give_the_same_edit(tiny, cat_tensor):
    from imagic_steps.models import load_components

    fast = load_components("tiny", channels_last=True)
    conv = fast.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert fast.provenance()["channels_last"] is True
    assert_same_edit(run_all_stages(fast, cat_tensor), run_all_stages(tiny, cat_tensor), atol=1e-4)


@pytest.mark.slow
def test_compiled_unet_gives_the_same_edit_and_leaves_modules_plain(tiny, cat_tensor):
    """torch.compile wraps each UNet a stage runs; weights, state-dict keys and the base module stay as they were."""
    from torch._dynamo.utils import counters

    compiled = dataclasses.replace(tiny, unet=copy.deepcopy(tiny.unet), compile_unet=True)
    counters.clear()
    result = run_all_stages(compiled, cat_tensor)
    assert counters["stats"]["unique_graphs"] >= 3  # embed, fine-tune and sampling each ran a compiled graph
    assert "_compiled_call_impl" not in vars(compiled.unet) or compiled.unet._compiled_call_impl is None
    assert_same_edit(result, run_all_stages(tiny, cat_tensor), atol=1e-4)


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
