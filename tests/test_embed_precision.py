"""Stage A with fp16 frozen weights: loss scaling keeps the embedding's gradient from flushing to zero."""

import copy
import dataclasses

import pytest
import torch

from imagic_steps.diffusion import denoising_loss, draw_noise_and_timesteps, encode_image, encode_prompts
from imagic_steps.embed import optimize_embedding
from imagic_steps.model_loading import load_components
from imagic_steps.variants import EmbedParams

PROMPT = "a photo of a cat"


@pytest.fixture(scope="module")
def tiny_by_dtype(preset_cache):
    return {dtype: load_components("tiny", dtype=dtype) for dtype in ("fp32", "fp16")}


def unscaled_gradient(components, image) -> torch.Tensor:
    """The embedding's gradient (1, 77, D) of one denoising loss, back-propagated without loss scaling."""
    generator = torch.Generator().manual_seed(0)
    latents = encode_image(components, image, "sample", generator)
    embedding = encode_prompts(components, [PROMPT]).requires_grad_(True)
    noise, timesteps = draw_noise_and_timesteps(latents, components.scheduler, generator)
    denoising_loss(components.unet, components.scheduler, latents, embedding, noise, timesteps).backward()
    return embedding.grad


def first_step_moves(components, image) -> torch.Tensor:
    """Which embedding entries (1, 77, D) bool one Adam step of stage A changed: Adam's first step moves every
    entry with a non-zero gradient by about lr, and leaves an underflowed (zero) one where it was."""
    result = optimize_embedding(components, image, PROMPT, EmbedParams(steps=1, lr=1e-3), progress=False)
    return result.optimized_embedding != result.target_embedding


def with_quiet_output(components, factor: float = 1e-2):
    """The components with a copy of the UNet whose last convolution is scaled by `factor`: the loss's gradients
    shrink about as much (median ~4e-7 here), so that some fall below fp16's smallest subnormal (6e-8) and flush to
    zero when stored in fp16, on any CPU. The tiny UNet's own gradients (~5e-5) flush only on CPUs whose fp16
    kernels round their intermediates, not on those that accumulate in fp32 (AVX512-FP16, AMX): measured, 0 of
    the entries flush on such a CPU, 5.8 % with this factor."""
    unet = copy.deepcopy(components.unet)
    with torch.no_grad():
        unet.conv_out.weight.mul_(factor)
        unet.conv_out.bias.mul_(factor)
    return dataclasses.replace(components, unet=unet)


def test_fp16_embedding_gradient_has_no_underflowed_entries(tiny_by_dtype, cat_tensor):
    fp32, fp16 = (with_quiet_output(tiny_by_dtype[dtype]) for dtype in ("fp32", "fp16"))
    # The control: without scaling, fp16 back-propagation flushes some of the fp32 run's non-zero entries to zero.
    plain32, plain16 = unscaled_gradient(fp32, cat_tensor), unscaled_gradient(fp16, cat_tensor)
    assert ((plain32 != 0) & (plain16 == 0)).any()
    moved32, moved16 = first_step_moves(fp32, cat_tensor), first_step_moves(fp16, cat_tensor)
    print(f"entries moved by the first step: fp32 {moved32.float().mean():.4%}, fp16 {moved16.float().mean():.4%}; "
          f"unscaled fp16 gradient zero where fp32 is not: {((plain32 != 0) & (plain16 == 0)).float().mean():.4%}")
    assert moved32.all()
    assert moved16.all()


def test_fp16_embedding_follows_the_fp32_run(tiny_by_dtype, cat_tensor):
    params = EmbedParams(steps=20, lr=5e-2, seed=0)
    runs = {dtype: optimize_embedding(components, cat_tensor, PROMPT, params, progress=False)
            for dtype, components in tiny_by_dtype.items()}
    assert runs["fp16"].optimized_embedding.dtype == torch.float32
    moved32 = runs["fp32"].optimized_embedding - runs["fp32"].target_embedding
    moved16 = runs["fp16"].optimized_embedding - runs["fp16"].target_embedding
    relative = float((moved16 - moved32).norm() / moved32.norm())
    print(f"fp16 vs fp32 embedding update after {params.steps} steps: relative difference {relative:.4f}")
    assert relative < 0.05  # measured 0.004: the fp16 weights' rounding, not lost gradient
