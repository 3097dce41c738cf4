"""Stage C on the tiny preset: interpolation, batching, shared noise per seed, schedulers, sizes, init latents.

The noise streams themselves are tested in test_sample_noise.py.
"""

import dataclasses

import pytest
import torch
from conftest import FAST_SAMPLE

from imagic_steps.families import interpolate_conditioning
from imagic_steps.sample import sample_alphas
from imagic_steps.variants import SCHEDULERS, SampleParams


def test_interpolation_is_exact_at_the_ends(embedded):
    e = interpolate_conditioning(embedded.target, embedded.optimized, [0.0, 1.0, 0.5]).embeds
    assert torch.equal(e[0], embedded.optimized_embedding[0])
    assert torch.equal(e[1], embedded.target_embedding[0])
    assert torch.allclose(e[2], (embedded.target_embedding[0] + embedded.optimized_embedding[0]) / 2, atol=1e-6)


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
