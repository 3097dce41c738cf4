"""Peak memory of the stages on one device, estimated from the model's parameter size.

The workflow uses these estimates for each job's `mem_mb` (host) and `gpu_mem_mb` (device) resources, so a
scheduler (Snakemake `--resources`, SLURM) knows what a job needs before it runs. Import-light (no torch):
parameter counts come from the safetensors headers of a local model folder or the hub cache.

The model of a stage's peak (GiB = 2**30 bytes; "dtype bytes" = 2 for fp16/bf16 weights, 4 for fp32):

* frozen weights: UNet + text encoder(s) + VAE in the load dtype (SDXL's VAE in fp32 under fp16, below;
  `load_components` keeps them all on the device; a pixel-space model, DeepFloyd IF stage I, has no VAE);
  fine-tune and sample jobs load no text encoder (the embed artefact holds every conditioning they use), embed,
  SDEdit, LEDITS++ and DDIM inversion jobs do;
* UNet copy: stage B trains a copy (`full`: cast to fp32; `lora`: only fp32 LoRA weights, the layers share the
  frozen weights); stage C samples from a copy with a full artefact applied (load dtype), or from LoRA weights
  over the shared frozen ones;
* stage B's gradients (fp32) and Adam's two moments (fp32) of the trainable parameters;
* the largest transient: stage B's saved activations (backward) or Adam's step temporaries (`foreach=True`: one
  fp32 copy of the trainables; `fused=True`, as the package uses: none); stage A's saved activations; stage C's
  inference activations for its batch (CFG doubles it). Stage B's preview samples are transient too.
* activations were counted per family (`ACTIVATIONS`: the SD-1.x UNet at 512 px, SDXL's at 512 px, IF-I-M's at
  its native 64 px; batch 1, fp32, `benchmarks/memory.py`) and are scaled by batch x (resolution / reference)^2 x
  activation dtype bytes / 4. SD-2.x uses SD-1.x's (the same UNet shape conditioned on wider text states).
  The family comes from model_index.json's `_class_name` (or, for a known hub id not downloaded yet, from
  `KNOWN_MODELS`).
* the VAE decode of the jobs that end in images (sample, sdedit, ledits, ddim_inversion): a transient of its own
  (the UNet's working memory is freed before it), measured per image (`VAE_DECODE_GIB_512`) and scaled by the
  images decoded together x (resolution / 512)^2. SDXL's VAE runs in fp32 when the weights load in fp16 (its
  config's `force_upcast`; `families.StableDiffusionXLFamily.finish_loading` casts it as every job loads it), so
  every SDXL fp16 job holds the VAE at 4 bytes per parameter and decodes in fp32 (`vae_dtype_bytes`).
* the baselines (`estimate_ledits_memory`, `estimate_ddim_inversion_memory`): the base model with its text
  encoder(s). LEDITS++ keeps its inversion and the cross-attention maps its mask is made of through the edits
  (`edit_state`) and runs its UNet with explicit attention processors, which hold whole attention score matrices
  (`ATTENTION_SCORE_COPIES`, from each model's `AttentionShape`).

Not included: the CUDA context and cuDNN workspaces (`CUDA_OVERHEAD_GIB` is added to device figures),
allocator fragmentation (`SAFETY_FACTOR`), the VAE encoder's working memory (embed, SDEdit and the baselines encode
one image: less than one decode, `python -m benchmarks.baseline_memory --decode`) and the decode of stage B's
preview grids.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .locations import MODEL_PRESETS
from .model_folder import (component_weight_files, family_name, holds_own_text_encoder, local_model_folder,
                           read_model_index, required_components, safetensors_shapes)
from .variants import (LEDITS_PIPELINE_INVERSION_STEPS, LORA_TARGET_MODULES, BaselineParams, FinetuneParams,
                       LeditsParams)

GIB = 2**30
MB = 10**6  # Snakemake's mem_mb is in megabytes

# Saved activations of the SD-1.x UNet per sample at 512 px in fp32, GiB, from `python -m benchmarks.memory
# --count-sd15` (torch 2.14.1, diffusers 0.42.1): without / with diffusers' gradient checkpointing.
SD15_ACTIVATION_GIB_512 = {False: 1.743, True: 0.426}
# Peak working memory of one no-grad UNet forward per sample at 512 px in fp32, GiB (RSS added by an
# inference-mode forward of the SD-1.5 UNet architecture on the CPU, batch 1).
SD15_INFERENCE_GIB_512 = 0.23
ADAM_STEP_TEMPORARIES = {"foreach": 1.0, "single": 0.0, "fused": 0.0}  # x trainable fp32 bytes
SAVE_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}  # a fine-tune artefact's dtype
DTYPE_BYTES = {"fp32": 4, "float32": 4, "fp16": 2, "float16": 2, "bf16": 2, "bfloat16": 2}

LIBRARY_RSS_GIB = 1.0  # torch + diffusers + transformers in a job process (measured ~0.9 GiB on the CPU)
CUDA_OVERHEAD_GIB = 1.0  # CUDA context and cuDNN/cuBLAS workspaces, roughly
SAFETY_FACTOR = 1.2
PREVIEW_BATCH = 5  # imagic_steps.finetune.PREVIEW_ALPHAS: one preview sample per alpha

# Working memory of one VAE decode per image at 512 px, GiB, by the VAE's dtype bytes: SD's VAE (SD-1.x, SD-2.x and
# SDXL share its shape), the median of 5 fresh processes on the CPU (fp32 runs 1.62-1.84, bf16 1.02-1.32) from
# `python -m benchmarks.baseline_memory --decode` (torch 2.14.1, diffusers 0.42.1). Not half in bf16: the CPU's
# bf16 convolutions and norms keep fp32 temporaries. Scaled by images x (resolution / 512)^2.
VAE_DECODE_GIB_512 = {4: 1.79, 2: 1.24}
# LEDITS++'s attention processors (diffusers' `AttnProcessor` and `LEDITSCrossAttnProcessor`) materialise every
# attention's scores (batch x heads x tokens x keys): the largest, the finest self-attention's, counts this many
# times in a job's peak. One UNet forward on its own holds it 2.4-3 times (baddbmm's output buffer, the scores,
# their softmax): 2.39 and 2.86 in two runs for SD-1.5's bf16 scores, 2.94 for SD-2.1's fp32 ones (its config
# upcasts the attention), each UNet at 512 px, batch 2, with them vs diffusers' default processors (`python -m
# benchmarks.baseline_memory --attention --repeats 3`); a whole LEDITS++ job peaks one copy higher (its inversion
# decodes a reconstruction first, whose freed memory the scores do not fit in): sd15-shaped, bf16, 640 px, 2
# inversion steps, peak RSS 7810-8261 MiB in 3 runs against 8436 MiB estimated with 4 (benchmarks/README.md,
# "Baselines' memory").
ATTENTION_SCORE_COPIES = 4
LEDITS_EDIT_PROMPTS = 1  # imagic_steps.ledits.ledits_edits edits towards one prompt per call
TEXT_TOKENS = 77  # CLIP's context: the keys of the cross-attention maps LEDITS++ stores
LATENT_CHANNELS, LATENT_FACTOR = 4, 8  # SD's and SDXL's VAE latents: channels, pixels per cell side (LEDITS++'s)


@dataclass(frozen=True)
class ActivationProfile:
    """Measured activations of one family's UNet per sample at `resolution` px (the UNet's input side times the
    VAE's down-sampling), fp32, GiB: saved for backward without / with gradient checkpointing (`training`), and the
    working memory of one no-grad forward (`inference`)."""

    resolution: int
    training: dict[bool, float]
    inference: float

    def scale(self, resolution: int, batch: int) -> float:
        return batch * (resolution / self.resolution) ** 2


# From `python -m benchmarks.memory --count-activations` (torch 2.14.1, diffusers 0.42.1, CPU, random weights,
# fp32, batch 1; it also recounts SD-1.5's: 1.743 / 0.426 / 0.227). SDXL's UNet at 512 px (its native 1024 px
# does not fit beside the 10.3 GB of fp32 weights on this 24 GiB machine; scaled by area), IF-I-M's at its native
# 64 px. The inference figures of SD-1.5 and SDXL at 512 px are the same 0.227 GiB: at that size a no-grad
# forward's working set is small and the RSS measure is mostly the allocator's floor, so treat them as an upper
# bound at 512 px; scaled by area they are generous at 1024 px.
ACTIVATIONS = {
    "sd": ActivationProfile(512, SD15_ACTIVATION_GIB_512, SD15_INFERENCE_GIB_512),
    "sdxl": ActivationProfile(512, {False: 3.241, True: 0.344}, 0.227),
    "if": ActivationProfile(64, {False: 0.511, True: 0.288}, 0.141),
}


@dataclass(frozen=True)
class AttentionShape:
    """Where a latent UNet attends, as LEDITS++'s explicit attention processors see it.

    `heads` and `factor` (image pixels per token side: the VAE's down-sampling x the UNet's) of its finest
    self-attention level, whose scores are the largest (heads x tokens^2 per sample, tokens = (side / factor)^2);
    `fp32_scores`: the config's `upcast_attention` (scores in fp32 whatever the weights); `mask_maps`: the
    cross-attention maps (layers x heads) of the down and up blocks at a quarter of the latent side, the ones
    LEDITS++ stores to make its mask of (`max_size` of its attention store; the mid block's are not stored).
    """

    heads: int
    factor: int
    fp32_scores: bool
    mask_maps: int


@dataclass(frozen=True)
class ModelSize:
    """Parameters of a model's components, its native image side in pixels and its family (`sd`, `sdxl`, `if`).

    `text_encoder`: all text encoders together (SDXL's two). `vae`: 0 for a pixel-space model (IF).
    `lora_per_rank`: LoRA parameters per unit of rank on the attention projections (the sum of in + out
    features over LORA_TARGET_MODULES). `attention`: where the UNet attends (`unet_attention_shape`; None: no
    cross-attention blocks, or not known). `vae_upcast`: the family runs the VAE in fp32 when the weights load in
    fp16 (SDXL, whose VAE config sets `force_upcast`). Equality compares the parameter counts, resolution and
    family only (what `benchmarks.memory --count-architectures` counts).
    """

    unet: int
    text_encoder: int
    vae: int
    lora_per_rank: int
    resolution: int = 512
    largest_weight_file: int | None = None  # bytes on disk of the largest component's weights; None: fp32 UNet
    family: str = "sd"
    attention: AttentionShape | None = field(default=None, compare=False)
    vae_upcast: bool = field(default=False, compare=False)

    @property
    def activations(self) -> ActivationProfile:
        return ACTIVATIONS[self.family]

    @property
    def load_transient_bytes(self) -> int:
        """While a component loads, its weight file stays mapped (and resident) beside the tensors made from it."""
        return self.largest_weight_file if self.largest_weight_file is not None else 4 * self.unet

    def lora(self, rank: int) -> int:
        return rank * self.lora_per_rank


# The published architectures, counted exactly from their configs on the meta device by `python -m
# benchmarks.memory --count-architectures` (diffusers 0.42.1, transformers 5.23.0; the configs and their sources
# are in benchmarks/memory.py; the `sd15-shaped` / `sd21-shaped` presets are built from the same SD ones).
# SD 1.5 and 2.1 (768-v): CLIP ViT-L/14 / OpenCLIP ViT-H text towers, SD's VAE.
# Their `attention` is `unet_attention_shape` of the same UNet configs (tests/test_memory.py checks it).
SD15 = ModelSize(unet=859_520_964, text_encoder=123_060_480, vae=83_653_863, lora_per_rank=199_296, resolution=512,
                 attention=AttentionShape(heads=8, factor=8, fp32_scores=False, mask_maps=40))
SD21 = ModelSize(unet=865_910_724, text_encoder=340_387_840, vae=83_653_863, lora_per_rank=207_488, resolution=768,
                 attention=AttentionShape(heads=5, factor=8, fp32_scores=True, mask_maps=100))
# SDXL base 1.0: text encoders CLIP ViT-L/14 (123.1 M) + OpenCLIP ViT-bigG/14 with its projection, SD's VAE shape
# (its config sets `force_upcast`).
SDXL = ModelSize(unet=2_567_463_684, text_encoder=123_060_480 + 694_659_840, vae=83_653_863, lora_per_rank=1_451_520,
                 resolution=1024, family="sdxl",
                 attention=AttentionShape(heads=10, factor=16, fp32_scores=False, mask_maps=1000), vae_upcast=True)
# DeepFloyd IF stage I, pixel space (64 px, no VAE), T5-v1.1-XXL's encoder. IF-I-XL's UNet config is published
# (read from a copy); IF-I-M's is assumed to be IF-I-XL's at 192 base channels (see benchmarks/memory.py).
T5_V1_1_XXL_ENCODER = 4_762_310_656
IF_I_M = ModelSize(unet=371_605_830, text_encoder=T5_V1_1_XXL_ENCODER, vae=0, lora_per_rank=102_912, resolution=64,
                   family="if")
IF_I_XL = ModelSize(unet=4_304_695_110, text_encoder=T5_V1_1_XXL_ENCODER, vae=0, lora_per_rank=377_344, resolution=64,
                    family="if")
# by `imagic_steps.locations.ModelPreset.architecture` and KNOWN_MODELS
ARCHITECTURE_SIZES = {"sd15": SD15, "sd21": SD21, "sdxl": SDXL, "if-i-m": IF_I_M, "if-i-xl": IF_I_XL}
ARCHITECTURE_FAMILIES = {name: size.family for name, size in ARCHITECTURE_SIZES.items()}
# Hub ids whose architecture is one of the above: planned with its published size before they are downloaded.
KNOWN_MODELS = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "sd15",
    "runwayml/stable-diffusion-v1-5": "sd15",
    "CompVis/stable-diffusion-v1-4": "sd15",
    "stabilityai/stable-diffusion-2-1": "sd21",
    "stabilityai/stable-diffusion-2": "sd21",
    "stabilityai/stable-diffusion-xl-base-1.0": "sdxl",
    "DeepFloyd/IF-I-M-v1.0": "if-i-m",
    "DeepFloyd/IF-I-XL-v1.0": "if-i-xl",
}


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak memory of one stage in GiB, by part (see the module docstring)."""

    frozen_weights: float
    unet_copy: float = 0.0
    gradients: float = 0.0
    adam_moments: float = 0.0
    activations: float = 0.0
    optimizer_temporaries: float = 0.0
    loading: float = 0.0  # host only: a weight file mapped while its tensors are built (model or artefact)
    decode: float = 0.0  # the VAE decode of the images a job decodes together (after the UNet's work is freed)
    edit_state: float = 0.0  # what a baseline keeps between UNet calls (LEDITS++: inversion, attention maps)

    @property
    def resident(self) -> float:
        """What lives through the whole stage: weights, the UNet copy, gradients, Adam moments, a baseline's
        state."""
        return self.frozen_weights + self.unet_copy + self.gradients + self.adam_moments + self.edit_state

    @property
    def device_total(self) -> float:
        """Peak on the compute device: the resident part plus the largest transient of the computation."""
        return self.resident + max(self.activations, self.optimizer_temporaries, self.decode)

    @property
    def total(self) -> float:
        """Peak in host memory when the stage runs on the CPU: loading a weight file is a transient too (measured
        on sd15-shaped: +1.47 GiB beyond the loaded weights, the size of the UNet's file)."""
        return self.resident + max(self.activations, self.optimizer_temporaries, self.decode, self.loading)


def _frozen_gib(size: ModelSize, weights_bytes: int, vae_bytes: int | None = None) -> float:
    """The frozen components in GiB: UNet and text encoder(s) at `weights_bytes` per parameter, the VAE at
    `vae_bytes` (None: the same)."""
    vae_bytes = weights_bytes if vae_bytes is None else vae_bytes
    return (weights_bytes * (size.unet + size.text_encoder) + vae_bytes * size.vae) / GIB


def vae_dtype_bytes(size: ModelSize, dtype: str) -> int:
    """Bytes per parameter and per decoded activation of the VAE a job loads in `dtype`: the load dtype's, except
    a `vae_upcast` VAE (SDXL's) in fp16, which runs in fp32 (`families.StableDiffusionXLFamily.finish_loading` casts
    it as every job loads it, as diffusers' SDXL pipelines cast it to decode; bf16 has fp32's range and is kept)."""
    if size.vae_upcast and dtype in ("fp16", "float16"):
        return 4
    return DTYPE_BYTES[dtype]


def vae_decode_gib(size: ModelSize, vae_bytes: int, resolution: int, images: int = 1) -> float:
    """Working memory of decoding `images` latents together at `resolution` px, GiB (0 without a VAE)."""
    if not size.vae:
        return 0.0
    return VAE_DECODE_GIB_512[vae_bytes] * images * (resolution / 512) ** 2


def estimate_training_memory(
    size: ModelSize = SD15,
    weights_bytes: int = 2,
    mode: str = "full",
    lora_rank: int = 4,
    gradient_checkpointing: bool = False,
    mixed_precision: str = "no",
    resolution: int = 512,
    batch: int = 1,
    adam: str = "fused",
    preview: bool = False,
    vae_bytes: int | None = None,
) -> MemoryEstimate:
    """Stage B (fine-tune) peak. Activations are fp32 in `full` mode unless autocast (`mixed_precision` fp16/bf16)
    stores half precision, and in the load dtype in `lora` mode. `preview`: preview grids are sampled mid-training.
    `vae_bytes`: per VAE parameter (`vae_dtype_bytes`; None: `weights_bytes`)."""
    if mode not in ("full", "lora"):
        raise ValueError(f"mode must be 'full' or 'lora', got {mode!r}")
    trainable = size.unet if mode == "full" else size.lora(lora_rank)
    copy_bytes = 4 * size.unet if mode == "full" else 4 * trainable
    if mode == "lora":
        activation_bytes = weights_bytes
    else:
        activation_bytes = 2 if mixed_precision in ("fp16", "bf16") else 4
    profile = size.activations
    activations = profile.training[gradient_checkpointing] * profile.scale(resolution, batch) * activation_bytes / 4
    if preview:
        activations = max(activations, profile.inference * profile.scale(resolution, 2 * PREVIEW_BATCH)
                          * activation_bytes / 4)
    return MemoryEstimate(
        frozen_weights=_frozen_gib(size, weights_bytes, vae_bytes),
        unet_copy=copy_bytes / GIB,
        gradients=4 * trainable / GIB,
        adam_moments=8 * trainable / GIB,
        activations=activations,
        optimizer_temporaries=ADAM_STEP_TEMPORARIES[adam] * 4 * trainable / GIB,
    )


def estimate_embedding_memory(size: ModelSize = SD15, weights_bytes: int = 2, resolution: int = 512,
                              vae_bytes: int | None = None) -> MemoryEstimate:
    """Stage A peak: the frozen model and the activations of a backward to the embedding (load dtype)."""
    profile = size.activations
    activations = profile.training[False] * profile.scale(resolution, 1) * weights_bytes / 4
    return MemoryEstimate(frozen_weights=_frozen_gib(size, weights_bytes, vae_bytes), activations=activations)


def estimate_sampling_memory(size: ModelSize = SD15, weights_bytes: int = 2, mode: str | None = "full",
                             lora_rank: int = 4, resolution: int = 512, batch: int = 1,
                             vae_bytes: int | None = None) -> MemoryEstimate:
    """Stage C peak for `batch` samples (alphas x seeds) with classifier-free guidance (2 x batch UNet inputs),
    then the decode of the `batch` images together.

    `mode`: the fine-tune artefact: "full" (loaded into a copy of the UNet), "lora" (adapters over the shared
    frozen weights) or None (the base UNet itself: SDEdit, or no fine-tune steps). `vae_bytes`: per VAE parameter
    and decoded activation (`vae_dtype_bytes`; None: `weights_bytes`).
    """
    copy_bytes = {"full": weights_bytes * size.unet, "lora": 4 * size.lora(lora_rank)}.get(mode, 0)
    vae_bytes = weights_bytes if vae_bytes is None else vae_bytes
    return MemoryEstimate(
        frozen_weights=_frozen_gib(size, weights_bytes, vae_bytes),
        unet_copy=copy_bytes / GIB,
        activations=size.activations.inference * size.activations.scale(resolution, 2 * batch) * weights_bytes / 4,
        decode=vae_decode_gib(size, vae_bytes, resolution, batch),
    )


def estimate_ddim_inversion_memory(size: ModelSize = SD15, weights_bytes: int = 2, resolution: int = 512,
                                   vae_bytes: int | None = None) -> MemoryEstimate:
    """DDIM inversion's peak (`imagic_steps.ddim_inversion`): the base model with its text encoder(s) inverts the
    input at batch 1 (no guidance), then regenerates once per setting at batch 2 (classifier-free guidance) and
    decodes one image: one sample's sampling estimate on the base UNet (SDEdit's shape). Its latents (x_T, one
    regeneration's) are a few hundred KiB, not counted."""
    return estimate_sampling_memory(size, weights_bytes, None, resolution=resolution, batch=1, vae_bytes=vae_bytes)


def estimate_ledits_memory(size: ModelSize = SD15, weights_bytes: int = 2, resolution: int = 512,
                           inversion_steps: int = LEDITS_PIPELINE_INVERSION_STEPS["sd"],
                           vae_bytes: int | None = None) -> MemoryEstimate:
    """LEDITS++'s peak (diffusers' LEditsPPPipelineStableDiffusion(XL) as `imagic_steps.ledits` runs it: one
    inversion per seed, then one edit per setting towards LEDITS_EDIT_PROMPTS prompt), GiB.

    `edit_state`, kept through the edits: the inversion's noise maps `zs` (one latent per inversion step) and its
    latents `xts` (steps + 1: the pipeline's `init_latents` is a view of them) in the load dtype; an edit's
    guidance and mask records (`sem_guidance`, `activation_mask`: steps x (1 + edit prompts) latents, fp32); the
    cross-attention maps LEDITS++ makes its mask of (`AttentionShape.mask_maps` at a quarter of the latent side
    over TEXT_TOKENS keys for the 1 + edit prompts rows, the step's and the running average: 2 copies).
    `activations`: the UNet at batch 1 + edit prompts (the edit; the inversion runs batch 1, or 2 with the source
    prompt's guidance on SDXL), whose explicit attention processors hold the finest self-attention's scores
    ATTENTION_SCORE_COPIES times beside a forward's working memory. `decode`: one image.
    """
    vae_bytes = weights_bytes if vae_bytes is None else vae_bytes
    batch = 1 + LEDITS_EDIT_PROMPTS
    attention = size.attention
    latent_side = resolution / LATENT_FACTOR
    latent = LATENT_CHANNELS * latent_side**2  # elements
    inversion = (2 * inversion_steps + 1) * latent * weights_bytes  # zs, xts
    records = inversion_steps * (1 + LEDITS_EDIT_PROMPTS) * latent * 4  # sem_guidance, activation_mask
    scores = 0.0
    maps = 0.0
    if attention is not None:
        score_bytes = 4 if attention.fp32_scores else weights_bytes
        tokens = (resolution / attention.factor) ** 2
        scores = ATTENTION_SCORE_COPIES * batch * attention.heads * tokens**2 * score_bytes
        maps = 2 * attention.mask_maps * batch * (latent_side / 4) ** 2 * TEXT_TOKENS * weights_bytes
    forward = size.activations.inference * size.activations.scale(resolution, batch) * weights_bytes / 4
    return MemoryEstimate(
        frozen_weights=_frozen_gib(size, weights_bytes, vae_bytes),
        activations=forward + scores / GIB,
        decode=vae_decode_gib(size, vae_bytes, resolution, 1),
        edit_state=(inversion + records + maps) / GIB,
    )


# --------------------------------------------------------------------------------------------------
# Parameter counts from safetensors headers (read by imagic_steps.model_folder)
# --------------------------------------------------------------------------------------------------


def lora_per_rank_of(unet_shapes: dict[str, list[int]]) -> int:
    """LoRA parameters per unit of rank over a UNet's attention projections (LORA_TARGET_MODULES), from its
    parameter names and shapes: the sum of in + out features of each adapted linear layer."""
    return sum(sum(shape) for name, shape in unet_shapes.items()
               if len(shape) == 2 and any(name.endswith(f".{m}.weight") for m in LORA_TARGET_MODULES))


def read_model_size(model_folder: str | Path) -> ModelSize | None:
    """Parameter counts (from the safetensors headers), native resolution (the UNet's sample size times the VAE's
    down-sampling; x 1 without a VAE) and family (model_index.json) of a diffusers model folder; None if a
    component has no safetensors weights. An SDXL folder's second text encoder (`text_encoder_2/`) counts into
    `text_encoder`: both are frozen weights loaded beside the UNet. A folder whose model_index.json lists no VAE
    (pixel-space IF) has `vae` 0."""
    model_folder = Path(model_folder)
    index = read_model_index(model_folder)
    required = required_components(index)
    shapes = {}
    components = ("unet", "text_encoder") + tuple(c for c in ("vae", "text_encoder_2") if c in required or (
        not index and (model_folder / c).is_dir()))
    for component in components:
        files = component_weight_files(model_folder / component)
        if not files:
            return None
        shapes[component] = {name: shape for path in files for name, shape in safetensors_shapes(path).items()}
    totals = {component: sum(math.prod(shape) for shape in table.values()) for component, table in shapes.items()}
    unet_config = json.loads((model_folder / "unet" / "config.json").read_text())
    down_sampling = 1
    if "vae" in components:
        vae_config = json.loads((model_folder / "vae" / "config.json").read_text())
        down_sampling = 2 ** (len(vae_config["block_out_channels"]) - 1)
    largest_file = max(sum(path.stat().st_size for path in component_weight_files(model_folder / component))
                       for component in components)
    text_encoders = totals["text_encoder"] + totals.get("text_encoder_2", 0)
    family = family_name(index, str(model_folder))
    # diffusers' AutoencoderKL defaults `force_upcast` to true; only the SDXL family acts on it
    vae_upcast = family == "sdxl" and "vae" in components and vae_config.get("force_upcast", True)
    return ModelSize(totals["unet"], text_encoders, totals.get("vae", 0), lora_per_rank_of(shapes["unet"]),
                     unet_config["sample_size"] * down_sampling, largest_file, family,
                     unet_attention_shape(unet_config, down_sampling), bool(vae_upcast))


# UNet2DConditionModel's default down and up blocks (SD's), for a config that leaves them out
UNET_DEFAULT_BLOCKS = (("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)


def unet_attention_shape(unet_config: dict, down_sampling: int = 8) -> AttentionShape | None:
    """Where a UNet2DConditionModel with transformer blocks (`CrossAttnDownBlock2D`) attends, from its config
    (`down_sampling`: the VAE's); None for one without them (IF's simple cross-attention blocks, a tiny UNet).
    Read as diffusers builds the UNet: heads per level are `num_attention_heads`, else `attention_head_dim` (which
    SD's configs use for the head count); each down level has `layers_per_block` transformer blocks and its up
    mirror one more, each `transformer_layers_per_block` deep (the up blocks' reversed unless
    `reverse_transformer_layers_per_block` is set)."""
    down = list(unet_config.get("down_block_types", UNET_DEFAULT_BLOCKS[0]))
    levels = len(down)
    attending = [level for level, block in enumerate(down) if block == "CrossAttnDownBlock2D"]
    if not attending:
        return None

    def per_level(value) -> list[int]:
        return list(value) if isinstance(value, (list, tuple)) else [value] * levels

    heads = per_level(unet_config.get("num_attention_heads") or unet_config.get("attention_head_dim", 8))
    depth = per_level(unet_config.get("transformer_layers_per_block", 1))
    up_depth = ([per_level(d)[0] for d in unet_config["reverse_transformer_layers_per_block"]]
                if unet_config.get("reverse_transformer_layers_per_block") else depth[::-1])
    up = list(unet_config.get("up_block_types", UNET_DEFAULT_BLOCKS[1]))
    layers = per_level(unet_config.get("layers_per_block", 2))
    quarter = 2  # a quarter of the latent side: 2 down-samplings
    mask_maps = 0
    if quarter < levels:
        if down[quarter] == "CrossAttnDownBlock2D":
            mask_maps += layers[quarter] * depth[quarter] * heads[quarter]
        mirror = levels - 1 - quarter
        if up[mirror] == "CrossAttnUpBlock2D":
            mask_maps += (layers[::-1][mirror] + 1) * up_depth[mirror] * heads[::-1][mirror]
    finest = attending[0]
    return AttentionShape(heads=heads[finest], factor=down_sampling * 2**finest,
                          fp32_scores=bool(unet_config.get("upcast_attention")), mask_maps=mask_maps)


def model_size(model: str, revision: str | None = None) -> ModelSize | None:
    """The size of a model reference, or None when its weights are not on this machine yet."""
    folder = local_model_folder(model, revision)
    return read_model_size(folder) if folder is not None else None


def planning_model_size(model: str, revision: str | None = None) -> tuple[ModelSize | None, str | None]:
    """The size to plan job memory with, and a note when it is not read from the model's own weights.

    Weights on this machine: their size, no note. A preset with a published architecture that is not built yet:
    that architecture's size (the preset has exactly it). Another preset not built yet (tiny): None, no note;
    it is small. A known hub id (KNOWN_MODELS) not downloaded yet: its architecture's published size. Any other
    model not on this machine yet: SD-1.5's size.
    """
    size = model_size(model, revision)
    if size is not None:
        return size, None
    preset = MODEL_PRESETS.get(model)
    download = "download it first (hf download) for figures from its own weights"
    if preset is None and model in KNOWN_MODELS:
        return ARCHITECTURE_SIZES[KNOWN_MODELS[model]], (
            f"model '{model}' is not on this machine yet, so job memory resources assume its architecture's "
            f"published size ({KNOWN_MODELS[model]}); {download}")
    if preset is None:
        return SD15, (f"model '{model}' is not on this machine yet, so job memory resources assume Stable Diffusion "
                      f"1.5's size; {download}")
    if preset.architecture is None:
        return None, None
    return ARCHITECTURE_SIZES[preset.architecture], (
        f"preset '{model}' is not built yet (its first job builds it), so job memory resources assume its "
        f"architecture's published size ({preset.architecture}), which it is built with")


def known_own_text_encoder(model: str, revision: str | None = None) -> bool:
    """Whether a model reference holds its family's own text encoder (`model_folder.holds_own_text_encoder`), as far
    as its model_index.json on this machine tells; True without one (every preset and known hub model does)."""
    folder = local_model_folder(model, revision)
    index = read_model_index(folder) if folder is not None else {}
    return not index or holds_own_text_encoder(index, model)


def known_family_name(model: str, revision: str | None = None) -> str | None:
    """The family name (`sd`, `sdxl`, `if`) of a model reference as far as it is known without loading or
    downloading it: from the model_index.json of a local folder, a built preset or the hub cache, else a preset's
    own or a known hub id's architecture (`KNOWN_MODELS`); None when it cannot be told yet (loading tells)."""
    folder = local_model_folder(model, revision)
    if folder is not None and (index := read_model_index(folder)):
        return family_name(index, model)
    preset = MODEL_PRESETS.get(model)
    if preset is not None:
        return preset.family
    return ARCHITECTURE_FAMILIES.get(KNOWN_MODELS.get(model))


# --------------------------------------------------------------------------------------------------
# Job resources
# --------------------------------------------------------------------------------------------------


def stage_estimate(stage: str, size: ModelSize, dtype: str, resolution: int | None = None,
                   finetune: FinetuneParams | None = None, sample_batch: int = 1,
                   baseline: BaselineParams | None = None) -> MemoryEstimate:
    """The estimate for one workflow job: `stage` is embed, finetune, sample, sdedit, ledits or ddim_inversion;
    `resolution` None is the model's native side; `sample_batch` the number of images a sampling job denoises
    together; `baseline` a LEDITS++ job's parameters (None: LeditsParams' defaults: the family's pipeline's
    inversion steps)."""
    weights_bytes = DTYPE_BYTES[dtype]
    vae_bytes = vae_dtype_bytes(size, dtype)
    resolution = resolution or size.resolution
    finetune = finetune or FinetuneParams(steps=0)
    loading = size.load_transient_bytes / GIB
    mode = None if finetune.steps == 0 else finetune.mode
    if stage in ("finetune", "sample"):  # their jobs load no text encoder: the embed artefact holds the conditioning
        size = dataclasses.replace(size, text_encoder=0)
    if stage == "embed":
        estimate = estimate_embedding_memory(size, weights_bytes, resolution, vae_bytes)
    elif stage == "finetune" and mode is None:  # the embed-only marker: nothing trained, the base weights shared
        estimate = MemoryEstimate(frozen_weights=_frozen_gib(size, weights_bytes, vae_bytes))
    elif stage == "finetune":
        estimate = estimate_training_memory(size, weights_bytes, mode, finetune.lora_rank,
                                            finetune.gradient_checkpointing, finetune.mixed_precision, resolution,
                                            preview=finetune.preview_every > 0, vae_bytes=vae_bytes)
    elif stage in ("sample", "sdedit"):
        mode = mode if stage == "sample" else None
        estimate = estimate_sampling_memory(size, weights_bytes, mode, finetune.lora_rank, resolution, sample_batch,
                                            vae_bytes)
        if mode == "full":  # the full artefact's file is mapped while it is loaded into the UNet copy
            loading = max(loading, SAVE_DTYPE_BYTES[finetune.save_dtype] * size.unet / GIB)
    elif stage == "ledits":
        if size.family not in LEDITS_PIPELINE_INVERSION_STEPS:
            raise ValueError(f"no memory estimate for LEDITS++ on the {size.family} family (it has no pipeline)")
        steps = (baseline or LeditsParams()).steps_for(size.family)
        estimate = estimate_ledits_memory(size, weights_bytes, resolution, steps, vae_bytes)
    elif stage == "ddim_inversion":
        estimate = estimate_ddim_inversion_memory(size, weights_bytes, resolution, vae_bytes)
    else:
        raise ValueError(f"no memory estimate for stage {stage!r}")
    return dataclasses.replace(estimate, loading=loading)


def job_memory_mb(estimate: MemoryEstimate, device: str) -> dict[str, int]:
    """`mem_mb` (host) and, on a GPU, `gpu_mem_mb` (device), in MB, for a job whose stage peak is `estimate`.

    On the CPU everything is host memory; on a GPU the host holds the libraries and one copy of the weights
    while they are loaded.
    """
    if device == "cpu":
        return {"mem_mb": math.ceil((LIBRARY_RSS_GIB + SAFETY_FACTOR * estimate.total) * GIB / MB)}
    return {
        "mem_mb": math.ceil((LIBRARY_RSS_GIB + SAFETY_FACTOR * (estimate.frozen_weights + estimate.loading)) * GIB / MB),
        "gpu_mem_mb": math.ceil((CUDA_OVERHEAD_GIB + SAFETY_FACTOR * estimate.device_total) * GIB / MB),
    }
