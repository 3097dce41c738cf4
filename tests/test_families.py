"""Model families on the tiny-sdxl preset: SDXL's conditioning (two text encoders, pooled embedding, time ids) goes
through stages A-C and SDEdit by the family hooks; e(a) interpolates every optimised tensor, exactly at the ends."""

import json

import pytest
import torch
from conftest import FAST_SAMPLE, PROMPT, stage_a_probe_losses, state_equal

from imagic_steps.diffusion import encode_conditioning, make_probe_set, probe_loss
from imagic_steps.embed import EmbedResult, optimize_embedding
from imagic_steps.families import (SD, SDXLConditioning, StableDiffusionXLFamily, TokenConditioning,
                                   family_from_model_index, interpolate_conditioning)
from imagic_steps.finetune import finetune_unet
from imagic_steps.finetune_artefact import trainable_state
from imagic_steps.locations import TINY_SDXL_PRESET, is_random_preset, preset_folder
from imagic_steps.sample import sample_alphas
from imagic_steps.variants import EmbedParams, FinetuneParams, SampleParams


@pytest.fixture(scope="module")
def xl(preset_cache):
    from imagic_steps.models import load_components

    return load_components(TINY_SDXL_PRESET)


@pytest.fixture(scope="module")
def xl_embedded(xl, cat_tensor):
    return optimize_embedding(xl, cat_tensor, PROMPT, EmbedParams(steps=40, lr=5e-2, seed=0), progress=False)


def test_tiny_sdxl_is_an_sdxl_folder_detected_as_such(xl):
    folder = preset_folder(TINY_SDXL_PRESET)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert index["text_encoder_2"] == ["transformers", "CLIPTextModelWithProjection"]
    assert isinstance(xl.family, StableDiffusionXLFamily) and xl.family.force_zeros_for_empty_prompt
    assert type(xl.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert xl.tokenizer_2.pad_token == "!" and xl.tokenizer.pad_token == "<|endoftext|>"
    assert xl.unet.config.addition_embed_type == "text_time"
    assert xl.unet.config.cross_attention_dim == xl.text_encoder.config.hidden_size + xl.text_encoder_2.config.hidden_size
    assert xl.unet.config.projection_class_embeddings_input_dim == (xl.text_encoder_2.config.projection_dim
                                                                     + 6 * xl.unet.config.addition_time_embed_dim)
    assert xl.vae.config.scaling_factor == 0.13025 and xl.resolution == 64
    assert is_random_preset(TINY_SDXL_PRESET) and xl.provenance()["family"] == "sdxl"
    assert not any(p.requires_grad for m in xl.frozen_modules() for p in m.parameters())
    # the family is read from the index alone: SDXL base's layout, and SD's
    assert isinstance(family_from_model_index({"_class_name": "StableDiffusionXLPipeline"}), StableDiffusionXLFamily)
    assert family_from_model_index({"_class_name": "StableDiffusionPipeline"}) is SD


def test_sdxl_conditioning_follows_diffusers_encode_prompt(xl):
    from diffusers import StableDiffusionXLPipeline

    cond = encode_conditioning(xl, [PROMPT, "a dog"], (64, 48))
    assert isinstance(cond, SDXLConditioning)
    assert cond.embeds.shape == (2, 77, 32 + 48) and cond.pooled.shape == (2, 40)
    assert cond.time_ids.tolist() == [[64, 48, 0, 0, 64, 48]] * 2
    pipeline = StableDiffusionXLPipeline(vae=xl.vae, text_encoder=xl.text_encoder, text_encoder_2=xl.text_encoder_2,
                                         tokenizer=xl.tokenizer, tokenizer_2=xl.tokenizer_2, unet=xl.unet,
                                         scheduler=xl.scheduler, add_watermarker=False)
    embeds, negative, pooled, negative_pooled = pipeline.encode_prompt([PROMPT, "a dog"], device="cpu",
                                                                       do_classifier_free_guidance=True)
    assert torch.equal(cond.embeds, embeds) and torch.equal(cond.pooled, pooled)
    time_ids = pipeline._get_add_time_ids((64, 48), (0, 0), (64, 48), torch.float32,
                                          text_encoder_projection_dim=40)
    assert torch.equal(cond.time_ids[:1], time_ids)
    unconditional = xl.family.unconditional(xl, cond)
    assert torch.equal(unconditional.embeds, negative[:1]) and torch.equal(unconditional.pooled, negative_pooled[:1])
    assert torch.equal(unconditional.time_ids, cond.time_ids[:1])


def test_stage_a_lowers_the_loss_and_optimises_token_and_pooled_embeddings(xl, xl_embedded):
    before, after = stage_a_probe_losses(xl, xl_embedded)
    print(f"tiny-sdxl stage A probe loss: e_tgt {before:.4f} -> e_opt {after:.4f}")
    assert after < before
    assert not torch.equal(xl_embedded.optimized.embeds, xl_embedded.target.embeds)
    assert not torch.equal(xl_embedded.optimized.pooled, xl_embedded.target.pooled)
    assert torch.equal(xl_embedded.optimized.time_ids, xl_embedded.target.time_ids)  # fixed, never optimised
    assert not xl_embedded.optimized.embeds.requires_grad and xl_embedded.optimized.pooled.dtype == torch.float32


def test_stage_b_lowers_the_loss_and_leaves_the_base_unet_alone(xl, xl_embedded):
    base = {k: v.clone() for k, v in xl.unet.state_dict().items()}
    probe = make_probe_set(xl_embedded.image_latents, xl.scheduler, count=32)
    result = finetune_unet(xl, xl_embedded, FinetuneParams(steps=30, lr=1e-3, seed=0), progress=False)
    before = probe_loss(xl.unet, xl.scheduler, xl_embedded.image_latents, xl_embedded.optimized, probe)
    after = probe_loss(result.unet, xl.scheduler, xl_embedded.image_latents, xl_embedded.optimized, probe)
    print(f"tiny-sdxl stage B probe loss: {before:.4f} -> {after:.4f}")
    assert after < before
    assert state_equal(base, xl.unet.state_dict())
    lora = finetune_unet(xl, xl_embedded, FinetuneParams(steps=3, lr=1e-3, mode="lora"), progress=False)
    assert trainable_state(lora.unet, "lora") and state_equal(base, xl.unet.state_dict())


def test_alpha_endpoints_are_exact_for_every_conditioning_tensor(xl_embedded):
    e = interpolate_conditioning(xl_embedded.target, xl_embedded.optimized, [0.0, 1.0, 0.5])
    for name, tensor in e.tensors().items():
        assert torch.equal(tensor[0], getattr(xl_embedded.optimized, name)[0]), name
        assert torch.equal(tensor[1], getattr(xl_embedded.target, name)[0]), name
    half = (xl_embedded.target.pooled[0] + xl_embedded.optimized.pooled[0]) / 2
    assert torch.allclose(e.pooled[2], half, atol=1e-6)


def test_reruns_are_bit_identical(xl, cat_tensor):
    params = EmbedParams(steps=4, lr=1e-2, seed=3)
    a = optimize_embedding(xl, cat_tensor, PROMPT, params, progress=False)
    b = optimize_embedding(xl, cat_tensor, PROMPT, params, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.optimized.tensors().values(), b.optimized.tensors().values()))
    ft = FinetuneParams(steps=3, lr=1e-3, seed=1)
    wa = finetune_unet(xl, a, ft, progress=False).unet
    wb = finetune_unet(xl, a, ft, progress=False).unet
    assert state_equal(trainable_state(wa, "full"), trainable_state(wb, "full"))
    sa = sample_alphas(xl, wa, a.target, a.optimized, [0.0, 1.0], [7], FAST_SAMPLE, progress=False)
    sb = sample_alphas(xl, wb, a.target, a.optimized, [0.0, 1.0], [7], FAST_SAMPLE, progress=False)
    assert torch.equal(sa, sb) and sa.shape == (1, 2, 3, 64, 64) and torch.isfinite(sa).all()
    other = sample_alphas(xl, wa, a.target, a.optimized, [0.0, 1.0], [8], FAST_SAMPLE, progress=False)
    assert not torch.equal(sa, other)


def test_batching_does_not_change_sdxl_samples(xl, xl_embedded):
    batches = [sample_alphas(xl, xl.unet, xl_embedded.target, xl_embedded.optimized, [0.0, 0.5, 1.0], [0, 1],
                             SampleParams(steps=3, batch_size=size), progress=False) for size in (1, 4)]
    assert torch.allclose(batches[0], batches[1], atol=1e-4)


def test_embed_artefact_round_trip(xl_embedded, tmp_path):
    xl_embedded.save(tmp_path / "e.safetensors")
    again = EmbedResult.load(tmp_path / "e.safetensors")
    assert isinstance(again.target, SDXLConditioning) and again.losses == xl_embedded.losses
    for which in ("target", "optimized"):
        ours, theirs = getattr(xl_embedded, which), getattr(again, which)
        assert all(torch.equal(ours.tensors()[k], theirs.tensors()[k]) for k in ours.tensors())
    assert torch.equal(again.image_latents, xl_embedded.image_latents)


def test_sd_artefact_tensor_names_are_unchanged(embedded, tmp_path):
    from imagic_steps.io import load_tensors

    embedded.save(tmp_path / "e.safetensors")
    assert set(load_tensors(tmp_path / "e.safetensors")) == {"target_embedding", "optimized_embedding",
                                                            "image_latents", "losses"}
    again = EmbedResult.load(tmp_path / "e.safetensors")
    assert isinstance(again.target, TokenConditioning)
    assert torch.equal(again.optimized_embedding, embedded.optimized_embedding)


def test_sdedit_runs_on_sdxl_with_the_loaded_weights(xl, cat_image_path):
    from diffusers import StableDiffusionXLImg2ImgPipeline

    from imagic_steps.images import load_image
    from imagic_steps.sdedit import img2img_pipeline, sdedit
    from imagic_steps.variants import SdeditParams

    pipeline = img2img_pipeline(xl, "DDIMScheduler")
    assert isinstance(pipeline, StableDiffusionXLImg2ImgPipeline)
    assert pipeline.unet is xl.unet and pipeline.text_encoder_2 is xl.text_encoder_2
    params = SdeditParams(steps=4)
    image = load_image(cat_image_path, 64)
    first = sdedit(xl, image, PROMPT, 0.5, [0, 1], params)
    again = sdedit(xl, image, PROMPT, 0.5, [0], params)
    assert [im.size for im in first] == [(64, 64)] * 2
    assert first[0].tobytes() == again[0].tobytes() and first[0].tobytes() != first[1].tobytes()


def test_memory_size_counts_both_text_encoders(xl):
    from imagic_steps.memory import model_size

    size = model_size(TINY_SDXL_PRESET)
    encoders = sum(p.numel() for m in (xl.text_encoder, xl.text_encoder_2) for p in m.parameters())
    assert size.text_encoder == encoders and size.unet == sum(p.numel() for p in xl.unet.parameters())


def test_cli_edit_runs_on_tiny_sdxl(cat_image_path, tmp_path):
    from imagic_steps.cli import main

    out = tmp_path / "edit"
    assert main(["edit", "--image", str(cat_image_path), "--prompt", PROMPT, "--model", TINY_SDXL_PRESET,
                 "--set", "embed.steps=2", "--set", "finetune.steps=2", "--set", "sample.steps=2",
                 "--alphas", "0", "1", "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["seed0_alpha0.png", "seed0_alpha1.png"]
    for stage in ("embed", "finetune", "sample"):
        assert json.loads((out / f"{stage}.json").read_text())["model"]["family"] == "sdxl"


def test_fp16_sdxl_keeps_its_vae_in_fp32(preset_cache, cat_tensor):
    """SDXL's VAE overflows in fp16 (force_upcast); the UNet and text encoders keep the requested dtype."""
    from imagic_steps.models import load_components

    half = load_components(TINY_SDXL_PRESET, dtype="fp16")
    assert half.vae.dtype == torch.float32 and half.unet.dtype == torch.float16
    assert half.text_encoder_2.dtype == torch.float16
    assert load_components("tiny", dtype="fp16").vae.dtype == torch.float16  # Stable Diffusion: unchanged
    result = optimize_embedding(half, cat_tensor, PROMPT, EmbedParams(steps=2), progress=False)
    images = sample_alphas(half, half.unet, result.target, result.optimized, [0.0, 1.0], [0], SampleParams(steps=2),
                           progress=False)
    assert torch.isfinite(images).all()
