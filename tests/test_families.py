"""Model families on the tiny-sdxl and tiny-if presets: SDXL's conditioning (two text encoders, pooled embedding,
time ids) and IF's (T5 states, pixel space, learned variance) go through stages A-C and SDEdit by the family hooks;
e(a) interpolates every optimised tensor, exactly at the ends."""

import json

import pytest
import torch
from conftest import FAST_SAMPLE, PROMPT, make_probe_set, probe_loss, stage_a_probe_losses, state_equal

from imagic_steps.diffusion import denoising_loss, encode_conditioning, split_prediction
from imagic_steps.embed import EmbedResult, optimize_embedding
from imagic_steps.families import (SD, TEXT_ENCODERS, DeepFloydIFFamily, SDXLConditioning, StableDiffusionFamily,
                                   StableDiffusionXLFamily, TokenConditioning, family_from_model_index,
                                   interpolate_conditioning)
from imagic_steps.finetune import finetune_unet
from imagic_steps.finetune_artefact import trainable_state
from imagic_steps.locations import TINY_IF_PRESET, TINY_SDXL_PRESET, is_random_preset, preset_folder
from imagic_steps.model_folder import holds_own_text_encoder
from imagic_steps.sample import sample_alphas
from imagic_steps.variants import EmbedParams, FinetuneParams, SampleParams

FAMILY_PRESETS = (TINY_SDXL_PRESET, TINY_IF_PRESET)
IMG2IMG_PIPELINES = {TINY_SDXL_PRESET: "StableDiffusionXLImg2ImgPipeline", TINY_IF_PRESET: "IFImg2ImgPipeline"}


@pytest.fixture(scope="module")
def embed_once(cat_tensor):
    """`embed_once(components)`: stage A on the cat image (40 steps), once per family."""
    cache = {}

    def run(components):
        if components.model_id not in cache:
            cache[components.model_id] = optimize_embedding(components, cat_tensor, PROMPT,
                                                            EmbedParams(steps=40, lr=5e-2, seed=0), progress=False)
        return cache[components.model_id]

    return run


@pytest.fixture(scope="module", params=FAMILY_PRESETS)
def model(request, load):
    return load(request.param)


@pytest.fixture(scope="module")
def embedded_model(model, embed_once):
    return embed_once(model)


@pytest.fixture(scope="module")
def xl(load):
    return load(TINY_SDXL_PRESET)


@pytest.fixture(scope="module")
def deepfloyd(load):
    return load(TINY_IF_PRESET)


@pytest.fixture(scope="module")
def embedded_if(deepfloyd, embed_once):
    return embed_once(deepfloyd)


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


def test_tiny_if_is_an_if_stage_i_folder_detected_as_such(deepfloyd):
    folder = preset_folder(TINY_IF_PRESET)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "IFPipeline" and "vae" not in index and not (folder / "vae").exists()
    # the tokenizer is a SentencePiece model that transformers converts on load, as DeepFloyd/IF-I-M-v1.0's is
    assert sorted(p.name for p in (folder / "tokenizer").iterdir()) == ["spiece.model", "tokenizer_config.json"]
    assert isinstance(deepfloyd.family, DeepFloydIFFamily) and deepfloyd.vae is None
    assert type(deepfloyd.text_encoder).__name__ == "T5EncoderModel"
    assert type(deepfloyd.tokenizer).__name__ == "T5Tokenizer" and deepfloyd.tokenizer.model_max_length == 77
    unet = deepfloyd.unet.config
    assert (unet.in_channels, unet.out_channels) == (3, 6) and deepfloyd.scheduler.config.variance_type == "learned_range"
    assert unet.encoder_hid_dim == deepfloyd.text_encoder.config.d_model
    assert deepfloyd.space_factor == 1 and deepfloyd.resolution == unet.sample_size == 64
    assert is_random_preset(TINY_IF_PRESET) and deepfloyd.provenance()["family"] == "if"
    assert not any(p.requires_grad for m in deepfloyd.frozen_modules() for p in m.parameters())
    assert isinstance(family_from_model_index({"_class_name": "IFPipeline"}), DeepFloydIFFamily)
    assert isinstance(family_from_model_index({"text_encoder": ["transformers", "T5EncoderModel"]}),
                      DeepFloydIFFamily)


def test_the_pipeline_class_picks_the_family_and_the_text_encoder_class_its_prompt_encoding():
    """An SD folder with a T5 is a latent model on T5, an IF folder with a CLIP a pixel model on CLIP (issue 38's
    2 x 2, colour_digits/train.py --text-encoder); each family's own text encoder keeps its encoding."""
    t5, clip = ["transformers", "T5EncoderModel"], ["transformers", "CLIPTextModel"]
    sd_t5 = family_from_model_index({"_class_name": "StableDiffusionPipeline", "text_encoder": t5})
    if_clip = family_from_model_index({"_class_name": "IFPipeline", "text_encoder": clip})
    assert type(sd_t5) is StableDiffusionFamily and sd_t5.text_encoder_class == "T5EncoderModel"
    assert type(if_clip) is DeepFloydIFFamily and if_clip.text_encoder_class == "CLIPTextModel"
    assert family_from_model_index({"_class_name": "StableDiffusionPipeline", "text_encoder": clip}) is SD
    assert family_from_model_index({"_class_name": "IFPipeline", "text_encoder": t5}) == DeepFloydIFFamily()
    assert TEXT_ENCODERS[sd_t5.text_encoder_class] is TEXT_ENCODERS[DeepFloydIFFamily().text_encoder_class]
    assert TEXT_ENCODERS[if_clip.text_encoder_class] is TEXT_ENCODERS[SD.text_encoder_class]
    # what planning reads (LEDITS++ needs the family's own text encoder): unlisted counts as the family's own
    assert not holds_own_text_encoder({"_class_name": "StableDiffusionPipeline", "text_encoder": t5})
    assert not holds_own_text_encoder({"_class_name": "IFPipeline", "text_encoder": clip})
    assert holds_own_text_encoder({"_class_name": "IFPipeline", "text_encoder": t5})
    assert holds_own_text_encoder({"_class_name": "StableDiffusionPipeline"})


def test_if_conditioning_follows_diffusers_encode_prompt(deepfloyd):
    from diffusers import IFPipeline

    prompts = ["A Photo of a gray cat ", "a dog"]
    cond = encode_conditioning(deepfloyd, prompts)
    assert isinstance(cond, TokenConditioning) and cond.embeds.shape == (2, 77, 32)
    pipeline = IFPipeline(tokenizer=deepfloyd.tokenizer, text_encoder=deepfloyd.text_encoder, unet=deepfloyd.unet,
                          scheduler=deepfloyd.scheduler, safety_checker=None, feature_extractor=None,
                          watermarker=None, requires_safety_checker=False)
    embeds, negative = pipeline.encode_prompt(prompts, do_classifier_free_guidance=True, device="cpu",
                                              clean_caption=False)
    assert torch.equal(cond.embeds, embeds)
    assert torch.equal(deepfloyd.family.unconditional(deepfloyd, cond).embeds, negative[:1])


def test_if_truncation_warning_counts_t5_tokens(deepfloyd, caplog):
    from imagic_steps.diffusion import truncated_prompt

    assert truncated_prompt(deepfloyd, PROMPT) is None
    long = " ".join(["cat"] * 100)
    kept = truncated_prompt(deepfloyd, long)
    assert kept is not None and kept.split() == ["cat"] * 76  # 77 tokens: 76 words and the end-of-text token


def test_the_loss_and_guidance_use_only_the_noise_half_of_a_learned_variance_output(deepfloyd, embedded_if):
    latents, conditioning = embedded_if.image_latents, embedded_if.optimized
    noise = torch.randn((2, *latents.shape[1:]), generator=torch.Generator().manual_seed(0))
    timesteps = torch.tensor([10, 700])
    output = deepfloyd.unet(deepfloyd.scheduler.add_noise(latents.expand(2, -1, -1, -1), noise, timesteps), timesteps,
                            **conditioning.expand(2).unet_inputs(torch.float32)).sample
    prediction, variance = split_prediction(output, 3)
    assert prediction.shape == variance.shape == (2, 3, 64, 64) and torch.equal(prediction, output[:, :3])
    expected = torch.nn.functional.mse_loss(prediction, noise)
    assert torch.allclose(denoising_loss(deepfloyd.unet, deepfloyd.scheduler, latents, conditioning, noise, timesteps),
                          expected)
    assert split_prediction(output[:, :3], 3)[1] is None
    with pytest.raises(ValueError, match="outputs 5 channels"):
        split_prediction(output[:, :5], 3)


def test_if_images_are_their_own_unet_space(deepfloyd, cat_tensor, embedded_if):
    """Pixel space: stage A fits the image itself, and decoding is clamping."""
    assert torch.equal(embedded_if.image_latents, cat_tensor.float())
    assert torch.equal(deepfloyd.family.from_unet_space(deepfloyd, 2 * cat_tensor), (2 * cat_tensor).clamp(-1, 1))


def test_stage_a_lowers_the_loss_and_optimises_every_interpolated_tensor(model, embedded_model):
    before, after = stage_a_probe_losses(model, embedded_model)
    print(f"{model.model_id} stage A probe loss: e_tgt {before:.4f} -> e_opt {after:.4f}")
    assert after < before
    target, optimized = embedded_model.target, embedded_model.optimized
    for name in target.INTERPOLATED:  # SDXL: token and pooled embeddings; IF: the T5 states
        assert not torch.equal(getattr(optimized, name), getattr(target, name)), name
        assert not getattr(optimized, name).requires_grad and getattr(optimized, name).dtype == torch.float32
    for name in target.FIXED:  # SDXL's time ids: never optimised
        assert torch.equal(getattr(optimized, name), getattr(target, name)), name


def test_stage_b_lowers_the_loss_and_leaves_the_base_unet_alone(model, embedded_model):
    base = {k: v.clone() for k, v in model.unet.state_dict().items()}
    probe = make_probe_set(embedded_model.image_latents, model.scheduler, count=32)
    result = finetune_unet(model, embedded_model, FinetuneParams(steps=30, lr=1e-3, seed=0), progress=False)
    before = probe_loss(model.unet, model.scheduler, embedded_model.image_latents, embedded_model.optimized, probe)
    after = probe_loss(result.unet, model.scheduler, embedded_model.image_latents, embedded_model.optimized, probe)
    print(f"{model.model_id} stage B probe loss: {before:.4f} -> {after:.4f}")
    assert after < before
    assert state_equal(base, model.unet.state_dict())
    lora = finetune_unet(model, embedded_model, FinetuneParams(steps=3, lr=1e-3, mode="lora"), progress=False)
    assert trainable_state(lora.unet, "lora") and state_equal(base, model.unet.state_dict())


def test_alpha_endpoints_are_exact_for_every_conditioning_tensor(embedded_model):
    target, optimized = embedded_model.target, embedded_model.optimized
    e = interpolate_conditioning(target, optimized, [0.0, 1.0, 0.5])
    for name, tensor in e.tensors().items():
        assert torch.equal(tensor[0], getattr(optimized, name)[0]), name
        assert torch.equal(tensor[1], getattr(target, name)[0]), name
    for name in target.INTERPOLATED:
        half = (getattr(target, name)[0] + getattr(optimized, name)[0]) / 2
        assert torch.allclose(getattr(e, name)[2], half, atol=1e-6), name


def test_reruns_are_bit_identical(model, cat_tensor):
    params = EmbedParams(steps=4, lr=1e-2, seed=3)
    a = optimize_embedding(model, cat_tensor, PROMPT, params, progress=False)
    b = optimize_embedding(model, cat_tensor, PROMPT, params, progress=False)
    assert all(torch.equal(x, y) for x, y in zip(a.optimized.tensors().values(), b.optimized.tensors().values()))
    ft = FinetuneParams(steps=3, lr=1e-3, seed=1)
    wa = finetune_unet(model, a, ft, progress=False).unet
    wb = finetune_unet(model, a, ft, progress=False).unet
    assert state_equal(trainable_state(wa, "full"), trainable_state(wb, "full"))
    sa = sample_alphas(model, wa, a.target, a.optimized, [0.0, 1.0], [7], FAST_SAMPLE, progress=False)
    sb = sample_alphas(model, wb, a.target, a.optimized, [0.0, 1.0], [7], FAST_SAMPLE, progress=False)
    assert torch.equal(sa, sb) and sa.shape == (1, 2, 3, 64, 64) and torch.isfinite(sa).all()
    other = sample_alphas(model, wa, a.target, a.optimized, [0.0, 1.0], [8], FAST_SAMPLE, progress=False)
    assert not torch.equal(sa, other)


@pytest.mark.parametrize("scheduler", ["DDIMScheduler", "DDPMScheduler"])
def test_batching_does_not_change_samples(model, embedded_model, scheduler):
    """Also with DDPM, which on IF steps with the UNet's learned variance (the text branch's). The tolerance is
    float noise: batched and single UNet calls differ by ~4e-6, which IF's cosine schedule amplifies (x0 =
    (x - sqrt(1 - abar) eps) / sqrt(abar), abar ~ 1e-5 at the first step) to ~2e-4 after three steps; a sample
    that depended on its batch would differ by O(1)."""
    batches = [sample_alphas(model, model.unet, embedded_model.target, embedded_model.optimized, [0.0, 0.5, 1.0],
                             [0, 1], SampleParams(steps=3, batch_size=size, scheduler=scheduler), progress=False)
               for size in (1, 4)]
    assert torch.allclose(batches[0], batches[1], atol=1e-3) and torch.isfinite(batches[0]).all()


def test_embed_artefact_round_trip(embedded_model, tmp_path):
    embedded_model.save(tmp_path / "e.safetensors")
    again = EmbedResult.load(tmp_path / "e.safetensors")
    assert type(again.target) is type(embedded_model.target) and again.losses == embedded_model.losses
    for which in ("target", "optimized"):
        ours, theirs = getattr(embedded_model, which), getattr(again, which)
        assert all(torch.equal(ours.tensors()[k], theirs.tensors()[k]) for k in ours.tensors())
    assert torch.equal(again.image_latents, embedded_model.image_latents)


def test_sd_artefact_tensor_names(embedded, tmp_path):
    from imagic_steps.io import load_tensors

    embedded.save(tmp_path / "e.safetensors")
    assert set(load_tensors(tmp_path / "e.safetensors")) == {"target_embedding", "optimized_embedding",
                                                            "unconditional_embedding", "image_latents", "losses"}
    again = EmbedResult.load(tmp_path / "e.safetensors")
    assert isinstance(again.target, TokenConditioning) and isinstance(again.unconditional, TokenConditioning)
    assert torch.equal(again.optimized_embedding, embedded.optimized_embedding)


@pytest.mark.parametrize("preset", ["tiny", *FAMILY_PRESETS])
def test_sampling_needs_no_text_encoder_once_the_embed_artefact_holds_the_negative(preset, load, embed_once,
                                                                                     tmp_path):
    """Fine-tune and sample jobs load without text encoders (IF's T5-XXL: 4.8 B parameters) and sample exactly what
    the fully loaded model samples."""
    from imagic_steps.model_loading import load_components

    full = load(preset)
    embedded = embed_once(full)
    assert torch.equal(embedded.unconditional.embeds, full.family.unconditional(full, embedded.target).embeds)
    embedded.save(tmp_path / "e.safetensors")
    again = EmbedResult.load(tmp_path / "e.safetensors")
    bare = load_components(preset, text_encoders=False)
    assert bare.text_encoder is None and bare.tokenizer is None and bare.text_encoder_2 is None
    assert bare.frozen_modules() == [m for m in (bare.vae, bare.unet) if m is not None]
    args = ([0.0, 1.0], [3], FAST_SAMPLE)
    expected = sample_alphas(full, full.unet, embedded.target, embedded.optimized, *args, progress=False)
    got = sample_alphas(bare, bare.unet, again.target, again.optimized, *args, unconditional=again.unconditional,
                        progress=False)
    assert torch.equal(expected, got)
    with pytest.raises(ValueError, match="negative conditioning"):
        sample_alphas(bare, bare.unet, again.target, again.optimized, *args, progress=False)


def test_sdedit_runs_with_the_familys_pipeline_on_the_loaded_weights(model, cat_image_path):
    from imagic_steps.images import load_image
    from imagic_steps.sdedit import img2img_pipeline, sdedit
    from imagic_steps.variants import SdeditParams

    pipeline = img2img_pipeline(model, "DDIMScheduler")
    assert type(pipeline).__name__ == IMG2IMG_PIPELINES[model.model_id]
    assert pipeline.unet is model.unet and pipeline.text_encoder is model.text_encoder
    params = SdeditParams(steps=4)
    image = load_image(cat_image_path, 64)
    first = sdedit(model, image, PROMPT, 0.5, [0, 1], params)
    again = sdedit(model, image, PROMPT, 0.5, [0], params)
    assert [im.size for im in first] == [(64, 64)] * 2
    assert first[0].tobytes() == again[0].tobytes() and first[0].tobytes() != first[1].tobytes()


def test_memory_size_counts_every_text_encoder_and_no_vae_in_pixel_space(model):
    from imagic_steps.memory import model_size

    size = model_size(model.model_id)
    encoders = sum(p.numel() for m in (model.text_encoder, model.text_encoder_2) if m is not None
                   for p in m.parameters())
    assert size.text_encoder == encoders and size.unet == sum(p.numel() for p in model.unet.parameters())
    assert size.vae == (0 if model.vae is None else sum(p.numel() for p in model.vae.parameters()))
    assert size.resolution == model.resolution == 64


def test_cli_edit_runs_on_each_family(model, cat_image_path, tmp_path):
    from imagic_steps.cli import main

    out = tmp_path / "edit"
    assert main(["edit", "--image", str(cat_image_path), "--prompt", PROMPT, "--model", model.model_id,
                 "--set", "embed.steps=2", "--set", "finetune.steps=2", "--set", "sample.steps=2",
                 "--alphas", "0", "1", "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["seed0_alpha0.png", "seed0_alpha1.png"]
    for stage in ("embed", "finetune", "sample"):
        assert json.loads((out / f"{stage}.json").read_text())["model"]["family"] == model.family.name


def test_fp16_sdxl_keeps_its_vae_in_fp32(preset_cache, cat_tensor):
    """SDXL's VAE overflows in fp16 (force_upcast); the UNet and text encoders keep the requested dtype."""
    from imagic_steps.model_loading import load_components

    half = load_components(TINY_SDXL_PRESET, dtype="fp16")
    assert half.vae.dtype == torch.float32 and half.unet.dtype == torch.float16
    assert half.text_encoder_2.dtype == torch.float16
    assert load_components("tiny", dtype="fp16").vae.dtype == torch.float16  # Stable Diffusion: unchanged
    result = optimize_embedding(half, cat_tensor, PROMPT, EmbedParams(steps=2), progress=False)
    images = sample_alphas(half, half.unet, result.target, result.optimized, [0.0, 1.0], [0], SampleParams(steps=2),
                           progress=False)
    assert torch.isfinite(images).all()
