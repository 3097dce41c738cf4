"""Sampling noise streams: the per-step noise of stochastic schedulers is independent of the initial noise.

Before the fix both generators were seeded with the sample's seed, so the first noise a DDPM / Euler-ancestral /
DDIM(eta > 0) step injected was an exact copy of x_T.
"""

import diffusers
import numpy as np
import pytest
import torch

from imagic_steps import sample as sample_module
from imagic_steps.diffusion import encode_prompts
from imagic_steps.sample import initial_noise, sample_alphas, step_noise_generators, step_noise_seed
from imagic_steps.variants import SampleParams

SEEDS = [0, 5]
ALPHAS = [0.0, 1.0]
STOCHASTIC = [  # (scheduler, eta, the diffusers module whose randn_tensor draws the step noise)
    ("DDPMScheduler", 0.0, diffusers.schedulers.scheduling_ddpm),
    ("EulerAncestralDiscreteScheduler", 0.0, diffusers.schedulers.scheduling_euler_ancestral_discrete),
    ("DDIMScheduler", 1.0, diffusers.schedulers.scheduling_ddim),
]


def test_step_noise_seed_is_the_documented_derivation():
    for seed in (0, 1, 5, 2**31 - 1):
        expected = int(np.random.SeedSequence(seed).spawn(2)[1].generate_state(1, dtype=np.uint64)[0])
        assert step_noise_seed(seed) == expected != seed
    assert len({step_noise_seed(seed) for seed in range(100)}) == 100
    with pytest.raises(ValueError, match=">= 0"):
        step_noise_seed(-1)


def test_step_noise_stream_differs_from_the_initial_noise():
    shape = (1, 4, 16, 16)
    for seed in (0, 1, 5, 123):
        x_t = initial_noise(seed, shape)
        first_step = torch.randn(shape, generator=step_noise_generators([seed])[0])
        assert not torch.allclose(first_step, x_t)
        assert abs(torch.corrcoef(torch.stack([first_step.flatten(), x_t.flatten()]))[0, 1]) < 0.25


@pytest.fixture(scope="module")
def embedding(tiny):
    return encode_prompts(tiny, ["a photo of a gray cat"])


def latent_shape(tiny):
    side = tiny.resolution // tiny.space_factor
    return (1, tiny.unet.config.in_channels, side, side)


def record_step_noise(monkeypatch, module) -> list[torch.Tensor]:
    """Every noise tensor the scheduler module draws during steps, in order."""
    drawn = []
    real = module.randn_tensor

    def recording(*args, **kwargs):
        noise = real(*args, **kwargs)
        drawn.append(noise.detach().clone())
        return noise

    monkeypatch.setattr(module, "randn_tensor", recording)
    return drawn


@pytest.mark.parametrize("scheduler,eta,module", STOCHASTIC, ids=[s for s, _, _ in STOCHASTIC])
def test_first_injected_noise_is_not_the_initial_noise(tiny, embedding, monkeypatch, scheduler, eta, module):
    params = SampleParams(scheduler=scheduler, steps=3, guidance_scale=3.0, eta=eta,
                          batch_size=len(SEEDS) * len(ALPHAS))
    drawn = record_step_noise(monkeypatch, module)
    sample_alphas(tiny, tiny.unet, embedding, embedding, ALPHAS, SEEDS, params, progress=False)
    assert drawn, f"{scheduler} drew no step noise"
    first = drawn[0]  # (B, C, h, w), batch in seed-major order
    grid = [seed for seed in SEEDS for _ in ALPHAS]
    for b, seed in enumerate(grid):
        assert not torch.allclose(first[b : b + 1], initial_noise(seed, latent_shape(tiny)))
        assert torch.equal(first[b : b + 1], first[grid.index(seed) : grid.index(seed) + 1])  # same seed, same noise

    # the old seeding (step generator = the seed itself) makes this test fail: the first step noise is x_T
    drawn.clear()
    monkeypatch.setattr(sample_module, "step_noise_seed", lambda seed: seed)
    sample_alphas(tiny, tiny.unet, embedding, embedding, ALPHAS, SEEDS, params, progress=False)
    assert torch.equal(drawn[0][:1], initial_noise(SEEDS[0], latent_shape(tiny)))


def test_deterministic_samplers_do_not_depend_on_the_step_stream(tiny, embedding, monkeypatch):
    """The configs' samplers (DDIM eta 0; Euler, also from noised input latents) draw no step noise, so their
    samples are bit-identical under the old and the new step seeding; a stochastic one changes."""
    init_latents = torch.randn(latent_shape(tiny), generator=torch.Generator().manual_seed(9))
    cases = {
        "ddim": (SampleParams(scheduler="DDIMScheduler", steps=3, guidance_scale=3.0), None),
        "euler_from_input": (SampleParams(scheduler="EulerDiscreteScheduler", steps=4, guidance_scale=3.0,
                                          init_timestep_rate=0.5), init_latents),
        "ddpm": (SampleParams(scheduler="DDPMScheduler", steps=3, guidance_scale=3.0), None),
    }
    new = {name: sample_alphas(tiny, tiny.unet, embedding, embedding, ALPHAS, SEEDS, params, init_latents=latents,
                               progress=False) for name, (params, latents) in cases.items()}
    monkeypatch.setattr(sample_module, "step_noise_seed", lambda seed: seed)
    old = {name: sample_alphas(tiny, tiny.unet, embedding, embedding, ALPHAS, SEEDS, params, init_latents=latents,
                               progress=False) for name, (params, latents) in cases.items()}
    assert torch.equal(new["ddim"], old["ddim"])
    assert torch.equal(new["euler_from_input"], old["euler_from_input"])
    assert not torch.equal(new["ddpm"], old["ddpm"])


def test_stochastic_samples_do_not_depend_on_batching(tiny, embedding):
    for scheduler, eta, _ in STOCHASTIC:
        runs = [sample_alphas(tiny, tiny.unet, embedding, embedding, ALPHAS, SEEDS,
                              SampleParams(scheduler=scheduler, steps=3, eta=eta, batch_size=size), progress=False)
                for size in (1, 3)]
        assert torch.allclose(runs[0], runs[1], atol=1e-4), scheduler
