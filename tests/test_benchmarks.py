"""The benchmark's faithful reference (benchmarks/reference.py) computes what ours computes, and pays the community
pipeline's costs: stages A and B agree with ours given the same random draws, stage C agrees on the same inputs,
every sample re-encodes the empty prompt and resets the scheduler, and the in-place fine-tune is undone."""

import copy
from dataclasses import replace

import pytest
import torch

from benchmarks import reference
from conftest import PROMPT, state_equal
from imagic_steps.embed import EmbedResult, optimize_embedding
from imagic_steps.finetune import finetune_unet
from imagic_steps.sample import make_scheduler, sample_alphas
from imagic_steps.variants import EmbedParams, FinetuneParams, SampleParams

STEPS = 4
SEED = 3


@pytest.fixture()
def components(tiny):
    """The tiny model with a UNet of its own: the reference fine-tunes in place."""
    return replace(tiny, unet=copy.deepcopy(tiny.unet))


@pytest.fixture()
def scheduler(tiny):
    return make_scheduler("DDIMScheduler", tiny.scheduler.config)


def global_draws(latents: torch.Tensor, scheduler, seed: int) -> tuple[list, torch.Tensor]:
    """What the community loop draws from the global RNG seeded with `seed`, in its order (noise, then timestep),
    as ours' (noise, timesteps) pairs; and the RNG state after them."""
    torch.manual_seed(seed)
    draws = []
    for _ in range(STEPS):
        noise = torch.randn(latents.shape)
        draws.append((noise, torch.randint(scheduler.config.num_train_timesteps, (1,))))
    return draws, torch.get_rng_state()


def replay(monkeypatch, module: str, draws: list) -> None:
    """Make ours (imagic_steps.<module>) take `draws` instead of its seeded generator's."""
    pending = iter(draws)
    monkeypatch.setattr(f"imagic_steps.{module}.draw_noise_and_timesteps", lambda *args, **kwargs: next(pending))


def run_reference_embed(components, scheduler, image, lr):
    torch.manual_seed(SEED)
    return reference.optimize_embedding(components, scheduler, image, PROMPT, STEPS, lr,
                                        torch.Generator().manual_seed(SEED))


def test_reference_stage_a_is_ours_given_the_same_draws(components, scheduler, cat_tensor, monkeypatch):
    target, optimized, latents = run_reference_embed(components, scheduler, cat_tensor, lr=5e-2)
    draws, state_after = global_draws(latents, scheduler, SEED)
    torch.manual_seed(SEED)
    run_reference_embed(components, scheduler, cat_tensor, lr=5e-2)
    # it drew exactly those, and nothing else, from the global RNG
    assert torch.equal(torch.get_rng_state(), state_after)

    replay(monkeypatch, "embed", draws)
    ours = optimize_embedding(components, cat_tensor, PROMPT, EmbedParams(steps=STEPS, lr=5e-2, seed=SEED),
                              progress=False)
    assert torch.equal(ours.image_latents, latents)
    assert torch.equal(ours.target_embedding, target)
    assert (optimized - target).abs().max() > 1e-3  # it trained
    assert (ours.optimized_embedding - optimized).abs().max() < 1e-6


def test_reference_stage_b_is_ours_given_the_same_draws(tiny, components, scheduler, cat_tensor, monkeypatch):
    target, optimized, latents = run_reference_embed(components, scheduler, cat_tensor, lr=5e-2)
    base = copy.deepcopy(components.unet.state_dict())
    draws, state_after = global_draws(latents, scheduler, SEED)
    torch.manual_seed(SEED)
    unet = reference.finetune_in_place(components, scheduler, latents, optimized, STEPS, lr=1e-3)
    assert unet is components.unet  # in place, no copy
    assert torch.equal(torch.get_rng_state(), state_after)
    trained = copy.deepcopy(unet.state_dict())

    reference.restore_unet(components, base)
    assert state_equal(components.unet.state_dict(), tiny.unet.state_dict())
    assert not any(p.requires_grad for p in components.unet.parameters()) and not components.unet.training

    replay(monkeypatch, "finetune", draws)
    ours = finetune_unet(components, EmbedResult(target, optimized, latents),
                         FinetuneParams(steps=STEPS, lr=1e-3, seed=SEED), progress=False)
    moved = max((trained[name] - base[name]).abs().max() for name in trained)
    differs = max((weight - trained[name]).abs().max() for name, weight in ours.unet.named_parameters())
    assert moved > 1e-3  # Adam moves a weight by up to lr a step
    assert differs < 1e-5  # fused Adam (ours) vs the per-tensor loop: rounding only (1.2e-6 measured)


def test_reference_stage_c_is_ours_and_pays_per_sample(components, scheduler, embedded):
    alphas, seeds = [0.0, 1.2], [0, 5]
    calls = {"text_encoder": 0, "set_timesteps": 0}
    hook = components.text_encoder.register_forward_hook(lambda *args: calls.__setitem__(
        "text_encoder", calls["text_encoder"] + 1))
    set_timesteps = scheduler.set_timesteps

    def counted_set_timesteps(*args, **kwargs):
        calls["set_timesteps"] += 1
        return set_timesteps(*args, **kwargs)

    scheduler.set_timesteps = counted_set_timesteps
    try:
        images = reference.sample_alphas(components, scheduler, embedded.target_embedding,
                                         embedded.optimized_embedding, alphas, seeds, 5, 7.5, 0.0)
    finally:
        hook.remove()
    assert calls == {"text_encoder": 4, "set_timesteps": 4}  # once per sample, as one pipeline call each

    ours = sample_alphas(components, components.unet, embedded.target, embedded.optimized, alphas, seeds,
                         SampleParams(steps=5, batch_size=4), progress=False)
    ours = (ours / 2 + 0.5).clamp(0, 1).permute(0, 1, 3, 4, 2).numpy()
    assert images.shape == ours.shape == (2, 2, 64, 64, 3)
    assert abs(images[0, 0] - images[1, 0]).max() > 0.05  # seeds differ
    assert abs(images - ours).max() < 1e-4


def test_reference_stage_c_samples_at_a_given_resolution_as_ours_does(components, scheduler, embedded):
    """`benchmarks.run --resolution` (the SD-scale table at 256 px): the reference's pipeline call takes the side
    as the community pipeline's height/width do, and draws the same images as ours at that side."""
    images = reference.sample_alphas(components, scheduler, embedded.target_embedding, embedded.optimized_embedding,
                                     [1.0], [0], 3, 7.5, 0.0, resolution=32)
    ours = sample_alphas(components, components.unet, embedded.target, embedded.optimized, [1.0], [0],
                         SampleParams(steps=3), height=32, width=32, progress=False)
    ours = (ours / 2 + 0.5).clamp(0, 1).permute(0, 1, 3, 4, 2).numpy()
    assert images.shape == ours.shape == (1, 1, 32, 32, 3)
    assert abs(images - ours).max() < 1e-4
