"""Training-memory estimate of stage B (UNet fine-tune) for real models, checked on the tiny model.

    python -m benchmarks.memory                 # SD-1.5 table at 512 px + the tiny model check (~15 s)
    python -m benchmarks.memory --count-sd15    # also recount SD-1.5's activations (~30 s, ~3 GiB RAM)
    python -m benchmarks.memory --count-architectures  # exact parameter counts of the published models (~1 min)
    python -m benchmarks.memory --count-activations    # activations of the SDXL and IF-I-M UNets (~5 min, ~18 GiB)
    python -m benchmarks.memory --table         # the README's per-family table (estimates, no model built)

The estimate itself, and the model of peak memory it implements, is `imagic_steps.memory` (the workflow sets
each job's `mem_mb` / `gpu_mem_mb` from it). This script prints its SD-1.5 table, recounts the activations it
relies on (`count_unet_activation_bytes`), and checks its weights + optimiser part against the tensors a real
training step on the tiny model holds. Not checked against a GPU run.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
from dataclasses import fields

import torch
from tabulate import tabulate

from imagic_steps.execution.workflow_job import peak_rss_bytes
from imagic_steps.memory import (
    ACTIVATIONS,
    ARCHITECTURE_FAMILIES,
    ARCHITECTURE_SIZES,
    GIB,
    KNOWN_MODELS,
    SD15_ACTIVATION_GIB_512,
    ModelSize,
    estimate_training_memory,
    lora_per_rank_of,
    stage_estimate,
)


def count_unet_activation_bytes(unet: torch.nn.Module, latent_side: int, batch: int = 1,
                                text_tokens: int = 77) -> tuple[int, int]:
    """Bytes of activations autograd saves in one training forward of `unet`: (without, with checkpointing).

    Runs the forward once on random inputs (the UNet's own dtype and device) with the parameters that require
    grad as they are (all for a full fine-tune), counting each saved tensor's storage once and never the
    parameters. diffusers' checkpointing hook is replaced by a recorder that runs the block normally and
    attributes what it saves to that block, so with checkpointing = saved outside blocks + the blocks'
    inputs + the largest block (its recompute). Modifies `unet` (checkpointing hook, train mode): pass a copy.
    """
    unet.train()
    parameter_storages = {p.untyped_storage().data_ptr() for p in unet.parameters()}
    seen: set[int] = set()
    kept: list[torch.Tensor] = []  # holds every counted tensor, so no storage address is reused mid-count
    saved = [0]  # bytes saved outside checkpointed blocks, then one entry per block call
    block_inputs: dict[int, int] = {}
    current = [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameter_storages and storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            kept.append(tensor)
            saved[current[-1]] += storage.nbytes()
        return tensor

    def record_block(block, *args):
        for arg in args:
            if isinstance(arg, torch.Tensor):
                kept.append(arg)
                block_inputs[arg.untyped_storage().data_ptr()] = arg.untyped_storage().nbytes()
        saved.append(0)
        current.append(len(saved) - 1)
        try:
            return block(*args)
        finally:
            current.pop()

    unet.enable_gradient_checkpointing(gradient_checkpointing_func=record_block)
    args, kwargs = unet_inputs(unet, latent_side, batch, text_tokens)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        unet(*args, **kwargs)
    outside, blocks = saved[0], saved[1:]
    return outside + sum(blocks), outside + sum(block_inputs.values()) + max(blocks, default=0)


def unet_inputs(unet: torch.nn.Module, side: int, batch: int = 1, text_tokens: int = 77) -> tuple[tuple, dict]:
    """Random inputs of one UNet call (the UNet's dtype and device): `side` x `side` samples (latents, or pixels for
    a pixel-space UNet), text states of the width the UNet takes (IF: T5's 4096, projected inside the UNet), and
    SDXL's added pooled embedding and six time ids."""
    config = unet.config
    parameter = next(unet.parameters())
    like = dict(dtype=parameter.dtype, device=parameter.device)
    sample = torch.randn(batch, config.in_channels, side, side, **like)
    text = torch.randn(batch, text_tokens, config.encoder_hid_dim or config.cross_attention_dim, **like)
    kwargs = {}
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        pixels = side * 8  # the time ids: original size, crop top-left, target size
        kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(batch, pooled, **like),
                                       "time_ids": torch.tensor([[pixels, pixels, 0, 0, pixels, pixels]] * batch, **like)}
    return (sample, torch.full((batch,), 500, device=parameter.device), text), kwargs


def inference_working_bytes(unet: torch.nn.Module, side: int, batch: int = 1) -> int:
    """Peak RSS an inference-mode forward of `unet` adds beyond its (resident) weights, batch `batch`, on the CPU.

    Reads the process's high-water mark (`peak_rss_bytes`), so it must run before anything else large in the
    process (`measure_architecture` runs it first, in a fresh process)."""
    args, kwargs = unet_inputs(unet, side, batch)
    with open("/proc/self/statm") as handle:
        before = int(handle.read().split()[1]) * resource.getpagesize()
    with torch.inference_mode():
        unet.eval()(*args, **kwargs)
    return peak_rss_bytes() - before


def sd15_unet_uninitialised() -> torch.nn.Module:
    """SD-1.5's UNet architecture on the CPU with uninitialised fp32 weights (3.2 GiB, no init time)."""
    return unet_uninitialised("sd15")


# --------------------------------------------------------------------------------------------------
# The published architectures, counted exactly (configs instantiated on the meta device, no weights)
# --------------------------------------------------------------------------------------------------


def sdxl_unet_config() -> dict:
    """stabilityai/stable-diffusion-xl-base-1.0's unet/config.json (fields that differ from diffusers' defaults;
    `attention_head_dim` is, as in SD-2, the number of heads per level)."""
    return dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=2816)


def if_unet_config(model_channels: int) -> dict:
    """A DeepFloyd IF stage I UNet (pixel space: 3 channels in, 6 out = epsilon and the learned variance, 64 px).

    IF-I-XL-v1.0's unet/config.json (read from a DreamBooth copy of it whose `_name_or_path` is
    DeepFloyd/IF-I-XL-v1.0, huggingface.co/lucostiguy11/dreambooth_if) is `model_channels=704`: blocks
    (704, 1408, 2112, 2816), cross-attention width 2816, T5 states (4096) projected in by `text_proj`. IF-I-M's
    config was not found; assumed: the same config at `model_channels=192` (blocks (192, 384, 576, 768)), the
    width whose count (371.6 M) is nearest the model card's "400M" (224 gives 485 M).
    """
    return dict(sample_size=64, in_channels=3, out_channels=6, layers_per_block=3,
                block_out_channels=tuple(model_channels * m for m in (1, 2, 3, 4)),
                down_block_types=("ResnetDownsampleBlock2D",) + ("SimpleCrossAttnDownBlock2D",) * 3,
                up_block_types=("SimpleCrossAttnUpBlock2D",) * 3 + ("ResnetUpsampleBlock2D",),
                mid_block_type="UNetMidBlock2DSimpleCrossAttn", cross_attention_dim=4 * model_channels,
                attention_head_dim=64, addition_embed_type="text", addition_embed_type_num_heads=64,
                encoder_hid_dim=4096, encoder_hid_dim_type="text_proj", cross_attention_norm="group_norm",
                act_fn="gelu", resnet_time_scale_shift="scale_shift", upcast_attention=False)


IF_MODEL_CHANNELS = {"if-i-m": 192, "if-i-xl": 704}


def unet_config(architecture: str) -> dict:
    from imagic_steps.preset_recipes import sd15_unet_config, sd21_unet_config

    if architecture in IF_MODEL_CHANNELS:
        return if_unet_config(IF_MODEL_CHANNELS[architecture])
    return {"sd15": sd15_unet_config, "sd21": sd21_unet_config, "sdxl": sdxl_unet_config}[architecture]()


def t5_xxl_encoder_config():
    """google/t5-v1_1-xxl (IF's text encoder, the encoder half only): 24 layers of d_model 4096, 64 heads of 64,
    gated-GELU feed-forward of 10240, a 32128-token vocabulary."""
    from transformers import T5Config

    return T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                    feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, is_encoder_decoder=False,
                    use_cache=False)


def text_encoders(architecture: str) -> list[torch.nn.Module]:
    """The architecture's text encoder(s) on the meta device."""
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, T5EncoderModel

    from imagic_steps.preset_recipes import clip_text_config, sd15_text_config, sd21_text_config

    with torch.device("meta"):
        if architecture in IF_MODEL_CHANNELS:
            return [T5EncoderModel(t5_xxl_encoder_config())]
        if architecture == "sdxl":  # CLIP ViT-L/14's text tower + OpenCLIP ViT-bigG/14's, with its projection
            big_g = clip_text_config(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                                     num_attention_heads=20, projection_dim=1280, pad_token_id=0, hidden_act="gelu")
            return [CLIPTextModel(sd15_text_config()), CLIPTextModelWithProjection(big_g)]
        return [CLIPTextModel({"sd15": sd15_text_config, "sd21": sd21_text_config}[architecture]())]


def unet_uninitialised(architecture: str) -> torch.nn.Module:
    """The architecture's UNet on the CPU with uninitialised fp32 weights (no init time)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config(architecture))
    return unet.to_empty(device="cpu").requires_grad_(True)


def count_architecture(architecture: str) -> ModelSize:
    """Exact parameter counts of a published architecture, from its configs on the meta device."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from imagic_steps.preset_recipes import sd_vae_config

    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config(architecture))
        vae = None if architecture in IF_MODEL_CHANNELS else AutoencoderKL(**sd_vae_config(512))  # SDXL's VAE: SD's
    resolution = unet.config.sample_size * (1 if vae is None else 8)
    return ModelSize(unet=sum(p.numel() for p in unet.parameters()),
                     text_encoder=sum(p.numel() for m in text_encoders(architecture) for p in m.parameters()),
                     vae=0 if vae is None else sum(p.numel() for p in vae.parameters()),
                     lora_per_rank=lora_per_rank_of({n: list(p.shape) for n, p in unet.named_parameters()}),
                     resolution=resolution, family=ARCHITECTURE_FAMILIES[architecture])


# Where each family's activations are measured: (architecture, reference side in pixels). SDXL's native 1024 px
# does not fit this machine's ~20 GiB beside its 10.3 GB of fp32 weights: measured at 512 px, scaled by area.
ACTIVATION_REFERENCES = {"sd": ("sd15", 512), "sdxl": ("sdxl", 512), "if": ("if-i-m", 64)}


def measure_architecture(architecture: str, side: int) -> dict:
    """In this (fresh) process: the inference working memory, then the saved activations without / with
    checkpointing, of the architecture's UNet at `side` px, batch 1, fp32, random weights, in GiB."""
    unet = unet_uninitialised(architecture)
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.zero_()  # resident, so the forward's RSS is its working memory only
    latent_side = side // (1 if architecture in IF_MODEL_CHANNELS else 8)
    inference = inference_working_bytes(unet, latent_side)
    without, with_checkpointing = count_unet_activation_bytes(unet, latent_side)
    return {"architecture": architecture, "side": side, "training": [without / GIB, with_checkpointing / GIB],
            "inference": inference / GIB}


def measure_in_subprocess(architecture: str, side: int, threads: int) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--measure", architecture, str(side),
                           "--threads", str(threads)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def family_table() -> list[dict]:
    """Per family: an example hub id, its published parameters and the estimated device peak of each stage (fp16
    weights on a GPU, the `paper` preset's full fine-tune at the native side, one sample per sampling job)."""
    from imagic_steps.variants import resolve_variant

    finetune = resolve_variant("paper").finetune
    rows = []
    for model_id, architecture in KNOWN_MODELS.items():
        if model_id not in TABLE_IDS:
            continue
        size = ARCHITECTURE_SIZES[architecture]
        peaks = {stage: stage_estimate(stage, size, "fp16", None, finetune).device_total
                 for stage in ("embed", "finetune", "sample")}
        rows.append({"family": size.family, "example id": model_id, "px": size.resolution,
                     "UNet (M)": size.unet / 1e6, "text encoder(s) (M)": size.text_encoder / 1e6,
                     "VAE (M)": size.vae / 1e6, **{f"{stage} GiB": peak for stage, peak in peaks.items()}})
    return rows


TABLE_IDS = ("stable-diffusion-v1-5/stable-diffusion-v1-5", "stabilityai/stable-diffusion-2-1",
             "stabilityai/stable-diffusion-xl-base-1.0", "DeepFloyd/IF-I-M-v1.0", "DeepFloyd/IF-I-XL-v1.0")


def sd15_table(adam: str = "fused") -> list[dict]:
    """Rows of the SD-1.5 estimate at 512 px, batch 1: fp16/fp32 loading x full/LoRA x checkpointing."""
    rows = []
    for weights_bytes in (2, 4):
        for mode in ("full", "lora"):
            for checkpointing in (False, True):
                estimate = estimate_training_memory(weights_bytes=weights_bytes, mode=mode,
                                                    gradient_checkpointing=checkpointing, adam=adam)
                rows.append({"weights": "fp16" if weights_bytes == 2 else "fp32", "mode": mode,
                             "checkpointing": checkpointing,
                             **{f.name: getattr(estimate, f.name) for f in fields(estimate)},
                             "resident": estimate.resident, "total_GiB": estimate.total})
    return rows


def tiny_check() -> list[dict]:
    """Estimated vs measured weights + optimiser bytes on the tiny model after one training step (full, LoRA).

    Measured: the byte counts of the live tensors (frozen components, the training copy's parameters and
    buffers, each storage once, so weights the LoRA copy shares with the base count once; gradients, Adam
    state) after one real step of `imagic_steps`' loss and optimiser set-up.
    """
    from imagic_steps.diffusion import denoising_loss, draw_noise_and_timesteps
    from imagic_steps.finetune import trainable_unet
    from imagic_steps.model_loading import load_components
    from imagic_steps.variants import FinetuneParams

    components = load_components("tiny")

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    def storage_bytes(tensors) -> int:
        """Bytes of the distinct storages behind `tensors`: weights the LoRA copy shares with the base count once."""
        return sum({t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}.values())

    frozen = [t for m in (components.unet, components.text_encoder, components.vae)
              for t in [*m.parameters(), *m.buffers()]]
    rows = []
    for mode in ("full", "lora"):
        unet = trainable_unet(components.unet, FinetuneParams(mode=mode))
        activations, activations_checkpointed = count_unet_activation_bytes(copy.deepcopy(unet), latent_side=8)
        trainable = [p for p in unet.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(trainable, lr=1e-6, fused=True)
        latents = torch.randn(1, 4, 8, 8)
        noise, timesteps = draw_noise_and_timesteps(latents, components.scheduler, torch.Generator().manual_seed(0))
        denoising_loss(unet, components.scheduler, latents, torch.randn(1, 77, 32), noise, timesteps).backward()
        optimizer.step()
        adam_state = [v for state in optimizer.state.values() for k, v in state.items() if k != "step"]
        measured = storage_bytes([*frozen, *unet.parameters(), *unet.buffers(), *(p.grad for p in trainable),
                                  *adam_state])
        lora_rank = FinetuneParams().lora_rank
        size = ModelSize(count(components.unet), count(components.text_encoder), count(components.vae),
                         lora_per_rank=sum(p.numel() for p in trainable) // lora_rank)
        estimate = estimate_training_memory(size, weights_bytes=4, mode=mode, lora_rank=lora_rank)
        rows.append({"mode": mode, "unet_params": count(components.unet),
                     "trainable_params": sum(p.numel() for p in trainable),
                     "estimated_resident_MiB": estimate.resident * 1024,
                     "measured_tensor_bytes_MiB": measured / 2**20,
                     "activations_counted_MiB": activations / 2**20,
                     "activations_counted_checkpointed_MiB": activations_checkpointed / 2**20})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count-sd15", action="store_true",
                        help="recount SD-1.5's activations at 512 px (CPU, ~30 s, ~3 GiB of RAM)")
    parser.add_argument("--count-architectures", action="store_true",
                        help="print the exact parameter counts of the published architectures (meta device, ~1 min)")
    parser.add_argument("--count-activations", action="store_true",
                        help="measure each family's UNet activations (CPU, fresh process each, ~5 min, ~18 GiB)")
    parser.add_argument("--table", action="store_true", help="print the README's per-family estimate table")
    parser.add_argument("--measure", nargs=2, metavar=("ARCHITECTURE", "SIDE"), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.measure:  # one architecture in this fresh process (run by --count-activations); JSON on stdout
        print(json.dumps(measure_architecture(args.measure[0], int(args.measure[1]))))
        return
    if args.count_architectures:
        for architecture in ARCHITECTURE_SIZES:
            print(f"{architecture}: {count_architecture(architecture)}")
        return
    if args.count_activations:
        for family, (architecture, side) in ACTIVATION_REFERENCES.items():
            measured = measure_in_subprocess(architecture, side, args.threads)
            print(f"{family} ({architecture} UNet, {side} px, batch 1, fp32): activations "
                  f"{measured['training'][0]:.3f} GiB without checkpointing, {measured['training'][1]:.3f} GiB with; "
                  f"inference working memory {measured['inference']:.3f} GiB (now: {ACTIVATIONS[family]})",
                  flush=True)
        return
    if args.table:
        print("Estimated device peak per stage (GiB), fp16 weights on a GPU, `paper` full fine-tune, native side")
        print(tabulate(family_table(), headers="keys", floatfmt=".1f", tablefmt="github"))
        return
    if args.count_sd15:
        without, with_checkpointing = count_unet_activation_bytes(sd15_unet_uninitialised(), latent_side=64)
        print(f"SD-1.5 UNet, 512 px, batch 1, fp32: activations {without / GIB:.3f} GiB without checkpointing, "
              f"{with_checkpointing / GIB:.3f} GiB with (SD15_ACTIVATION_GIB_512 = {SD15_ACTIVATION_GIB_512})\n")
    print("Estimated peak memory of stage B for SD-1.5 at 512 px, batch 1, fused Adam (GiB; not checked "
          "against a GPU run)")
    print(tabulate(sd15_table(), headers="keys", floatfmt=".2f"))
    foreach = {(r["weights"], r["mode"], r["checkpointing"]): r["total_GiB"] for r in sd15_table(adam="foreach")}
    print("\nSame with Adam foreach=True (one temporary copy of the trainables per step), total GiB: "
          + ", ".join(f"{w}/{m}/{'ckpt' if c else 'no ckpt'} {v:.2f}" for (w, m, c), v in foreach.items()))
    print("\nTiny model: weights + optimiser part of the estimate vs tensor byte counts after one step (fp32)")
    print(tabulate(tiny_check(), headers="keys", floatfmt=".3f"))


if __name__ == "__main__":
    main()
