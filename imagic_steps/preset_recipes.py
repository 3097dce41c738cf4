"""The random-weight presets' recipes and what builds them: `tiny`, `sd15-shaped`, `sd21-shaped`, `tiny-sdxl`,
`tiny-if` and `tiny-if-sr` (`imagic_steps.locations.MODEL_PRESETS`).

A built preset is a deterministic, randomly initialised model: built offline from the configs here with a fixed
seed, written once with `save_pretrained` to a cache folder (`ensure_preset`) and then loaded through the very same
`from_pretrained` path as a real model (`imagic_steps.model_loading`). The trained presets' builds start from the
same recipes and writers (`imagic_steps.digits.train`: the tiny build and its UNet shape;
`imagic_steps.colour_digits.train`: IF's schedule and the IF-layout folder writer); the trained presets themselves
ship as folders under imagic_steps/presets/.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, PNDMScheduler, UNet2DConditionModel
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5Config,
                          T5EncoderModel, T5Tokenizer)
from transformers.utils import logging as transformers_logging

from .families import DeepFloydIFFamily
from .locations import (
    SD15_SHAPED_PRESET,
    SD21_SHAPED_PRESET,
    TINY_PRESET,
    TINY_IF_PRESET,
    TINY_IF_SR_PRESET,
    TINY_SDXL_PRESET,
    preset_folder,
)
from .model_folder import IF_PIPELINE, SD_PIPELINE, SDXL_PIPELINE, SUPER_RESOLUTION_PIPELINE

logger = logging.getLogger(__name__)

TINY_RESOLUTION = 64  # pixels; latents are 8x8
TINY_SR_RESOLUTION = 256  # pixels: tiny-if-sr's output side (4x, as IF-II's 64 -> 256)


# --------------------------------------------------------------------------------------------------
# The built presets: tiny, sd15-shaped, sd21-shaped
# --------------------------------------------------------------------------------------------------


def small_unet_config(sample_size: int, layers_per_block: int, cross_attention_dim: int) -> dict:
    """The two-level UNet of the small presets: cross-attention at full latent resolution, 4 latent channels."""
    return dict(
        sample_size=sample_size,
        in_channels=4,
        out_channels=4,
        layers_per_block=layers_per_block,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )


def tiny_unet_config() -> dict:
    """~1.1 M parameter UNet with cross-attention on 8x8x4 latents (64 px images)."""
    return small_unet_config(TINY_RESOLUTION // 8, layers_per_block=2, cross_attention_dim=32)


def vae_config(block_out_channels: tuple[int, ...], layers_per_block: int, norm_num_groups: int,
               sample_size: int, scaling_factor: float = 0.18215) -> dict:
    """An AutoencoderKL with SD's layout: four blocks (8x down-sampling), 4 latent channels, SD's scaling factor."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=block_out_channels,
        layers_per_block=layers_per_block,
        latent_channels=4,
        norm_num_groups=norm_num_groups,
        sample_size=sample_size,
        scaling_factor=scaling_factor,
    )


def tiny_vae_config() -> dict:
    """VAE with SD's 8x down-sampling (four blocks, three down-samplers) and 4 latent channels."""
    return vae_config((8, 16, 16, 16), layers_per_block=1, norm_num_groups=8, sample_size=TINY_RESOLUTION)


def clip_text_config(hidden_size: int, intermediate_size: int, num_hidden_layers: int, num_attention_heads: int,
                     projection_dim: int, pad_token_id: int = 49407, **extra) -> CLIPTextConfig:
    """A CLIP text tower over SD's 49,408-token BPE vocabulary and 77-token context."""
    return CLIPTextConfig(vocab_size=49408, hidden_size=hidden_size, intermediate_size=intermediate_size,
                          num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                          max_position_embeddings=77, projection_dim=projection_dim, bos_token_id=49406,
                          eos_token_id=49407, pad_token_id=pad_token_id, **extra)


def tiny_text_config() -> CLIPTextConfig:
    """Two-layer CLIP text encoder with SD 1.x's vocabulary and 77-token context."""
    return clip_text_config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                            projection_dim=32)


def tiny_sdxl_unet_config() -> dict:
    """The tiny UNet with SDXL's conditioning: cross-attention on both text encoders' states (32 + 48) and SDXL's
    "text_time" added embedding of encoder 2's pooled projection (40) and six time ids (8 features each)."""
    return {**small_unet_config(TINY_RESOLUTION // 8, layers_per_block=2, cross_attention_dim=32 + 48),
            "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 40 + 6 * 8}


def tiny_sdxl_text_config_2() -> CLIPTextConfig:
    """SDXL's second text encoder (a CLIPTextModelWithProjection) at tiny size: 48 features, projection to 40."""
    return clip_text_config(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                            projection_dim=40, pad_token_id=0)


def sdxl_scheduler_config() -> dict:
    """SDXL base's scheduler config (stabilityai/stable-diffusion-xl-base-1.0's scheduler/scheduler_config.json): an
    Euler scheduler over SD's scaled-linear betas, leading spacing, epsilon. Euler itself has no `clip_sample`,
    `set_alpha_to_one`, `skip_prk_steps` or `sample_max_value`, but the published file sets them and the schedulers
    built from it read them (DDIM and DDPM sampling, SDEdit's DDIM): without `clip_sample: false` DDIM clipped the
    latent x0 to [-1, 1] (tests/test_scheduler_configs.py checks each preset against its published config)."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                steps_offset=1, prediction_type="epsilon", timestep_spacing="leading", interpolation_type="linear",
                use_karras_sigmas=False, clip_sample=False, set_alpha_to_one=False, skip_prk_steps=True,
                sample_max_value=1.0, trained_betas=None)


def sd15_unet_config() -> dict:
    """SD-1.5's UNet (its unet/config.json; the other fields are diffusers' defaults, which are SD's):
    859,520,964 parameters on 64x64x4 latents (512 px)."""
    return dict(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768,
        attention_head_dim=8,
        norm_num_groups=32,
    )


def sd21_unet_config() -> dict:
    """SD-2.1 (768-v)'s UNet: SD-1.5's blocks conditioned on 1024-d OpenCLIP states, with per-level head dims,
    linear projections in the transformers and attention upcast to fp32 (as its config sets, against fp16
    overflow); 865,910,724 parameters on 96x96x4 latents (768 px)."""
    return {**sd15_unet_config(), "sample_size": 96, "cross_attention_dim": 1024,
            "attention_head_dim": (5, 10, 20, 20), "use_linear_projection": True, "upcast_attention": True}


def sd_vae_config(resolution: int) -> dict:
    """SD's VAE (SD-1.x and 2.x share it; only `sample_size` differs): 83,653,863 parameters, 8x down-sampling."""
    return vae_config((128, 256, 512, 512), layers_per_block=2, norm_num_groups=32, sample_size=resolution)


def sd15_text_config() -> CLIPTextConfig:
    """SD-1.5's text encoder, the text tower of OpenAI's CLIP ViT-L/14: 123,060,480 parameters."""
    return clip_text_config(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            projection_dim=768, hidden_act="quick_gelu")


def sd21_text_config() -> CLIPTextConfig:
    """SD-2.1's text encoder, OpenCLIP ViT-H/14's text tower without its last layer (SD-2 conditions on the
    penultimate one) as a transformers CLIPTextModel: 340,387,840 parameters. The special-token ids are the
    tokenizer's (the published config's 0/1/2 are placeholders; only pooling reads them, which SD does not use)."""
    return clip_text_config(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16,
                            projection_dim=512, pad_token_id=0, hidden_act="gelu")


def sd15_scheduler_config() -> dict:
    """SD 1.x's scheduler config (runwayml/stable-diffusion-v1-5's scheduler/scheduler_config.json: a PNDM scheduler
    over scaled-linear betas, 1000 steps; the published file leaves out `prediction_type`, whose default epsilon
    this sets explicitly, and has `trained_betas: null`, the default)."""
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type="epsilon",
        skip_prk_steps=True,
    )


def sd21_scheduler_config() -> dict:
    """SD-2.1 (768-v)'s scheduler config: SD 1.x's betas for a DDIM scheduler, and v prediction."""
    return {**sd15_scheduler_config(), "prediction_type": "v_prediction"}


@dataclass(frozen=True)
class PresetRecipe:
    """What a built preset is made of: component configs, the scheduler, the tokenizer's padding token (SD-1.x
    pads with the end-of-text token, SD-2.x with "!", id 0) and the dtype its weights are stored in."""

    unet: dict
    vae: dict
    text_encoder: CLIPTextConfig
    scheduler_class: type[SchedulerMixin]
    scheduler: dict
    pad_token: str = "<|endoftext|>"
    # The SD-shaped presets store fp16: random weights lose nothing by the rounding, and it halves their disk
    # use (2.1 / 2.6 GB instead of 4.3 / 5.2). `load_components` casts to the requested dtype (an fp32 load
    # converts for ~5 s on the CPU, where fp32 files would be mapped lazily).
    storage_dtype: torch.dtype = torch.float32
    # SDXL: the second text encoder (with projection), its tokenizer's padding ("!" as SDXL's), the pipeline class
    text_encoder_2: CLIPTextConfig | None = None
    pad_token_2: str = "!"
    pipeline_class: str = SD_PIPELINE


def preset_recipe(name: str) -> PresetRecipe:
    """The recipe of the built preset `name` (see `imagic_steps.locations.MODEL_PRESETS`)."""
    if name == TINY_PRESET:
        return PresetRecipe(tiny_unet_config(), tiny_vae_config(), tiny_text_config(), PNDMScheduler,
                            sd15_scheduler_config())
    if name == SD15_SHAPED_PRESET:
        return PresetRecipe(sd15_unet_config(), sd_vae_config(512), sd15_text_config(), PNDMScheduler,
                            sd15_scheduler_config(), storage_dtype=torch.float16)
    if name == SD21_SHAPED_PRESET:
        return PresetRecipe(sd21_unet_config(), sd_vae_config(768), sd21_text_config(), DDIMScheduler,
                            sd21_scheduler_config(), pad_token="!", storage_dtype=torch.float16)
    if name == TINY_SDXL_PRESET:
        from diffusers import EulerDiscreteScheduler

        return PresetRecipe(tiny_sdxl_unet_config(),
                            vae_config((8, 16, 16, 16), 1, 8, TINY_RESOLUTION, scaling_factor=0.13025),
                            tiny_text_config(), EulerDiscreteScheduler, sdxl_scheduler_config(),
                            text_encoder_2=tiny_sdxl_text_config_2(),
                            pipeline_class=SDXL_PIPELINE)
    raise KeyError(f"'{name}' is not a built preset")


# The captions tiny-if's SentencePiece model is trained on (fixed, so the build is deterministic): the shipped
# pairs' prompts and test prompts, and plain image-caption words, so most prompts tokenise into whole words.
IF_TOKENIZER_CAPTIONS = (
    "a photo of a cat", "a photo of a dog", "a photo of a sitting dog", "a photo of a bird spreading wings",
    "a photo of a cat wearing a hat", "a photo of a dog jumping", "a photo of a horse", "a photo of a zebra",
    "a red car on the street", "a blue house by the sea", "a painting of a bird", "a sketch of a person",
    "a children's drawing of a castle", "a cup of coffee on a table", "a giraffe in a field",
    "a black and white photo of a tree", "a cake with candles", "a teddy bear on a bench",
    "a handwritten digit zero", "one two three four five six seven eight nine", "a green apple and a yellow banana",
    "a snowy mountain at sunset", "a boat on a lake", "an orange cat with white fur", "a brown dog in a costume",
)


def write_t5_tokenizer(folder: Path, captions: tuple[str, ...] = IF_TOKENIZER_CAPTIONS,
                       vocab_size: int = 256) -> T5Tokenizer:
    """Train a SentencePiece unigram model on `captions` and save it as IF's tokenizer folder (spiece.model and
    a T5Tokenizer config: pad 0, eos 1, unk 2, no sentinel tokens, 77-token context), then load it back through
    `from_pretrained` as a real IF tokenizer is (transformers converts the SentencePiece model)."""
    import io

    import sentencepiece

    model = io.BytesIO()
    # one thread, a fixed input order and no sampling: the trained model is the same on every build
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(captions), model_writer=model, vocab_size=vocab_size, model_type="unigram",
        hard_vocab_limit=False, character_coverage=1.0, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>", num_threads=1, minloglevel=2)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model.getvalue())
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "T5Tokenizer", "model_max_length": DeepFloydIFFamily.CONTEXT_TOKENS, "extra_ids": 0,
         "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}, indent=2))
    return T5Tokenizer.from_pretrained(folder)


def tiny_t5_config(vocab_size: int) -> T5Config:
    """A two-layer T5-v1.1-style encoder (gated GELU, as IF's T5-XXL) of width 32."""
    return T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                    feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False, pad_token_id=0,
                    eos_token_id=1, decoder_start_token_id=0)


def tiny_if_unet_config(encoder_hid_dim: int) -> dict:
    """IF stage I's UNet layout at tiny size (after diffusers' IF pipeline tests): pixel space, 64 px, three RGB
    channels in and six out (noise and a `learned_range` variance), T5 states projected by `text_proj`, an
    attention-pooled text embedding added to the time embedding, simple cross-attention at 16x16."""
    return dict(
        sample_size=TINY_RESOLUTION, in_channels=3, out_channels=6, layers_per_block=1,
        block_out_channels=(16, 32, 64),
        down_block_types=("ResnetDownsampleBlock2D", "ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D", "ResnetUpsampleBlock2D"),
        cross_attention_dim=32, encoder_hid_dim=encoder_hid_dim, encoder_hid_dim_type="text_proj",
        attention_head_dim=8, addition_embed_type="text", addition_embed_type_num_heads=2,
        cross_attention_norm="group_norm", resnet_time_scale_shift="scale_shift", act_fn="gelu", norm_num_groups=8,
    )


def if_scheduler_config() -> dict:
    """IF stage I's training scheduler: DDPM over cosine betas, epsilon with a learned_range variance, dynamic
    thresholding of x0 (ratio 0.95, max 1.5)."""
    return dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", beta_start=0.0001, beta_end=0.02,
                clip_sample=True, clip_sample_range=1.0, thresholding=True, dynamic_thresholding_ratio=0.95,
                sample_max_value=1.5, prediction_type="epsilon", variance_type="learned_range")


def if_stage_1_scheduler_config() -> dict:
    """tiny-if's scheduler config: DeepFloyd/IF-I-XL-v1.0's scheduler/scheduler_config.json, i.e. IF stage I's
    training scheduler (`if_scheduler_config`, which the colour-digits pixel model's schedule derives from) and the
    file's `trained_betas: null` and `lambda_min_clipped: -5.1` (the DPM-Solver setting added to the published file
    for the cosine schedule's numerical stability)."""
    return {**if_scheduler_config(), "trained_betas": None, "lambda_min_clipped": -5.1}


def tiny_if_sr_unet_config(encoder_hid_dim: int) -> dict:
    """IF stage II's UNet layout at tiny size (after diffusers' IF super-resolution test dummy,
    `_get_superresolution_dummy_components`): tiny-if's blocks with one more down-sampling level, at 256 px
    (simple cross-attention at 32x32); six channels in (the noisy 256 px image and the 64 px input upscaled
    bilinearly), six out (noise and variance); the upscaled input's noise level enters as a timestep class
    embedding (`class_embed_type: timestep`)."""
    return {**tiny_if_unet_config(encoder_hid_dim), "sample_size": TINY_SR_RESOLUTION, "in_channels": 6,
            "block_out_channels": (16, 16, 32, 64),
            "down_block_types": ("ResnetDownsampleBlock2D",) * 3 + ("SimpleCrossAttnDownBlock2D",),
            "up_block_types": ("SimpleCrossAttnUpBlock2D",) + ("ResnetUpsampleBlock2D",) * 3,
            "class_embed_type": "timestep", "mid_block_scale_factor": 1.414, "time_embedding_act_fn": "gelu",
            "time_embedding_dim": 32}


def if_sr_scheduler_configs() -> dict[str, dict]:
    """IF stage II's two DDPM schedulers (DeepFloyd/IF-II-L-v1.0's, as diffusers' scripts/convert_if.py wrote them):
    `scheduler` denoises the 256 px image (stage I's, thresholding x0 at 1.0); `image_noising_scheduler` noises the
    upscaled input to the pipeline's `noise_level` (cosine betas, fixed variance; every DDPM parameter spelled out,
    as the published file has them)."""
    # IF-II-L-v1.0's scheduler as diffusers' scripts/convert_if.py wrote it: stage I's with sample_max_value 1, and
    # without `lambda_min_clipped`, which only stage I's published file is known to have (test_scheduler_configs.py)
    return {"scheduler": {**if_scheduler_config(), "trained_betas": None, "sample_max_value": 1.0},
            "image_noising_scheduler": dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                            beta_start=0.0001, beta_end=0.02, trained_betas=None,
                                            variance_type="fixed_small", clip_sample=True, clip_sample_range=1.0,
                                            prediction_type="epsilon", thresholding=False,
                                            dynamic_thresholding_ratio=0.995, sample_max_value=1.0)}


def build_if_preset(folder: Path, seed: int = 0, super_resolution: bool = False) -> None:
    """Build tiny-if deterministically from `seed` in DeepFloyd/IF-I-M-v1.0's folder layout (no VAE), or with
    `super_resolution` tiny-if-sr in DeepFloyd/IF-II-M-v1.0's (IFSuperResolutionPipeline: the same T5 tokenizer
    and encoder construction, a 6-channel 256 px UNet, a second `image_noising_scheduler`)."""
    if super_resolution:
        write_if_folder(folder, seed, tiny_if_sr_unet_config, if_sr_scheduler_configs(), DDPMScheduler,
                        SUPER_RESOLUTION_PIPELINE)
    else:
        write_if_folder(folder, seed, tiny_if_unet_config, {"scheduler": if_stage_1_scheduler_config()},
                        DDPMScheduler, IF_PIPELINE)


def write_if_folder(folder: Path, seed: int, unet_config, schedulers: dict[str, dict], scheduler_class,
                    pipeline_class: str, captions: tuple[str, ...] = IF_TOKENIZER_CAPTIONS) -> None:
    """Write an IF-layout folder (no VAE): a SentencePiece tokenizer trained on `captions`, a tiny T5 encoder and
    a UNet of `unet_config(text width)`, both drawn from `seed` (UNet first), `schedulers` (name -> config of
    `scheduler_class`) and a `pipeline_class` model_index.json."""
    folder = Path(folder)
    tokenizer = write_t5_tokenizer(folder / "tokenizer", captions)
    text_config = tiny_t5_config(len(tokenizer))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _save_component(UNet2DConditionModel(**unet_config(text_config.d_model)), folder / "unet", torch.float32)
        _save_component(T5EncoderModel(text_config), folder / "text_encoder", torch.float32)
    for name, config in schedulers.items():
        write_scheduler_config(folder / name, scheduler_class, config)
    model_index = {"_class_name": pipeline_class, "_diffusers_version": "0.42.1",
                   "feature_extractor": [None, None], "requires_safety_checker": False,
                   "safety_checker": [None, None], "text_encoder": ["transformers", "T5EncoderModel"],
                   "tokenizer": ["transformers", "T5Tokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
                   "watermarker": [None, None],
                   **{name: ["diffusers", scheduler_class.__name__] for name in schedulers}}
    (folder / "model_index.json").write_text(json.dumps(dict(sorted(model_index.items())), indent=2))


def write_clip_bpe_files(folder: Path) -> None:
    """Write SD 1.x's CLIP BPE tokenizer files (vocab.json, merges.txt) from open_clip's shipped vocabulary.

    This is the construction of OpenAI's CLIP tokenizer: 256 byte symbols, the same with the end-of-word
    marker, one token per merge, then the two special tokens; 49,408 tokens in all.
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    # open_clip's file, found without importing open_clip, whose imports need torchvision and ftfy: a machine that
    # has only the open_clip wheel's files (benchmarks/README.md, "The first GPU machine") builds presets too
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("building a preset needs open_clip's BPE vocabulary: pip install open-clip-torch")
    bpe_path = Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def write_clip_tokenizer(folder: Path, pad_token: str = "<|endoftext|>") -> CLIPTokenizer:
    """Save SD's CLIP tokenizer (77-token context, padding with `pad_token`) into `folder`, and return it."""
    folder = Path(folder)
    with tempfile.TemporaryDirectory() as bpe:
        write_clip_bpe_files(Path(bpe))
        tokenizer = CLIPTokenizer(vocab=f"{bpe}/vocab.json", merges=f"{bpe}/merges.txt", model_max_length=77,
                                  pad_token=pad_token)
        tokenizer.save_pretrained(folder)
    return tokenizer


def build_preset(name: str, folder: Path, seed: int = 0) -> None:
    """Build the preset `name` deterministically from `seed` and `save_pretrained` it into `folder`.

    The components are built, saved and freed one at a time, so the build holds at most one of them (SD's
    UNet: 3.4 GB in fp32) in memory.
    """
    folder = Path(folder)
    transformers_logging.disable_progress_bar()
    if name in (TINY_IF_PRESET, TINY_IF_SR_PRESET):
        build_if_preset(folder, seed, super_resolution=name == TINY_IF_SR_PRESET)
        return
    recipe = preset_recipe(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # One random stream in this order (UNet, VAE, text encoder): the order the tiny preset was drawn in.
        _save_component(UNet2DConditionModel(**recipe.unet), folder / "unet", recipe.storage_dtype)
        _save_component(AutoencoderKL(**recipe.vae), folder / "vae", recipe.storage_dtype)
        _save_component(CLIPTextModel(recipe.text_encoder), folder / "text_encoder", recipe.storage_dtype)
        if recipe.text_encoder_2 is not None:
            _save_component(CLIPTextModelWithProjection(recipe.text_encoder_2), folder / "text_encoder_2",
                            recipe.storage_dtype)
    write_clip_tokenizer(folder / "tokenizer", recipe.pad_token)
    write_scheduler_config(folder / "scheduler", recipe.scheduler_class, recipe.scheduler)
    model_index = {
        "_class_name": recipe.pipeline_class,
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", recipe.scheduler_class.__name__],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    if recipe.text_encoder_2 is not None:  # SDXL's layout (stabilityai/stable-diffusion-xl-base-1.0's index)
        write_clip_tokenizer(folder / "tokenizer_2", recipe.pad_token_2)
        for key in ("feature_extractor", "requires_safety_checker", "safety_checker"):
            del model_index[key]
        model_index.update({"force_zeros_for_empty_prompt": True, "image_encoder": [None, None],
                            "feature_extractor": [None, None], "text_encoder_2": ["transformers",
                            "CLIPTextModelWithProjection"], "tokenizer_2": ["transformers", "CLIPTokenizer"]})
        model_index = dict(sorted(model_index.items()))
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2))


def write_scheduler_config(folder: Path, scheduler_class: type[SchedulerMixin], config: dict) -> None:
    """Write `folder`/scheduler_config.json as a published model's is: the class name and exactly the keys of
    `config`, not every parameter of `scheduler_class` as `save_pretrained` writes them. A scheduler of another
    class built from the folder (sampling with Euler or DPM-Solver, DDIM inversion) then takes that class's own
    default for what the real model's file leaves out (e.g. `timestep_spacing`: PNDM's and DDPM's "leading", Euler's
    "linspace"), as it does from the real model. The class is checked to accept the config."""
    scheduler_class.from_config(config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": scheduler_class.__name__, "_diffusers_version": "0.42.1", **dict(sorted(config.items()))},
        indent=2) + "\n")


def _save_component(module: torch.nn.Module, folder: Path, dtype: torch.dtype) -> None:
    """Save one freshly built component in `dtype` (cast in place, one parameter at a time)."""
    # torch's own `to`: diffusers' override warns about fp32-only modules on every dtype cast, even with none
    torch.nn.Module.to(module, dtype).save_pretrained(folder, safe_serialization=True)


def build_tiny_model(folder: Path, seed: int = 0) -> None:
    """Build the tiny preset deterministically from `seed` and `save_pretrained` it into `folder`."""
    build_preset(TINY_PRESET, folder, seed)


def ensure_preset(name: str) -> Path:
    """Return the built preset `name`'s folder, building it on first use (atomically: concurrent jobs may race).

    The SD-shaped presets take ~20 s and 4 GiB of memory to build on two CPU cores, and 2.1 / 2.6 GB of disk.
    """
    folder = preset_folder(name)
    if (folder / "model_index.json").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        logger.info("building the %s preset (seeded random weights) into %s", name, folder)
        build_preset(name, staging)
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / "model_index.json").exists():  # lost a race is fine; anything else is not
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def ensure_tiny_model() -> Path:
    """Return the tiny preset's folder, building it on first use."""
    return ensure_preset(TINY_PRESET)
