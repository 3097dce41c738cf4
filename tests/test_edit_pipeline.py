"""Across stages A, B and C on the tiny preset: seeds make every stage reproducible, the diffusion helpers they share
follow the model's configs, and channels-last or compiled UNets give the same edit."""

import copy
import dataclasses

import pytest
import torch
from conftest import FAST_SAMPLE, PROMPT, state_equal
from diffusers import DDPMScheduler, UNet2DConditionModel

from imagic_steps.diffusion import draw_noise_and_timesteps, encode_image, training_target
from imagic_steps.embed import optimize_embedding
from imagic_steps.finetune import finetune_unet
from imagic_steps.finetune_artefact import trainable_state
from imagic_steps.sample import sample_alphas
from imagic_steps.variants import EmbedParams, FinetuneParams, SampleParams


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
    from imagic_steps.model_loading import load_components

    fast = load_components("tiny", channels_last=True)
    conv = fast.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert fast.provenance()["channels_last"] is True
    assert_same_edit(run_all_stages(fast, cat_tensor), run_all_stages(tiny, cat_tensor), atol=1e-4)


@pytest.mark.slow
def test_compiled_unet_gives_the_same_edit_and_leaves_modules_plain(tiny, cat_tensor):
    """torch.compile wraps each UNet a stage runs; weights, state-dict keys and the base module stay as they were."""
    from torch._dynamo.utils import counters

    # tiny with one layer per block (half its resnets and attentions): compiling costs about as many seconds as
    # the graph has operations, three graphs of them here, and one layer shows what two do
    torch.manual_seed(0)
    plain = dataclasses.replace(tiny, unet=UNet2DConditionModel.from_config(tiny.unet.config, layers_per_block=1))
    compiled = dataclasses.replace(plain, unet=copy.deepcopy(plain.unet), compile_unet=True)
    counters.clear()
    result = run_all_stages(compiled, cat_tensor)
    assert counters["stats"]["unique_graphs"] >= 3  # embed, fine-tune and sampling each ran a compiled graph
    assert "_compiled_call_impl" not in vars(compiled.unet) or compiled.unet._compiled_call_impl is None
    assert_same_edit(result, run_all_stages(plain, cat_tensor), atol=1e-4)
