"""Training-memory estimate of stage B (UNet fine-tune) for real models, checked on the tiny model.

    python -m benchmarks.memory                 # SD-1.5 table at 512 px + the tiny model check (~15 s)
    python -m benchmarks.memory --count-sd15    # also recount SD-1.5's activations (~30 s, ~3 GiB RAM)

The estimate itself, and the model of peak memory it implements, is `imagic_steps.memory` (the workflow sets
each job's `mem_mb` / `gpu_mem_mb` from it). This script prints its SD-1.5 table, recounts the activations it
relies on (`count_unet_activation_bytes`), and checks its weights + optimiser part against the tensors a real
training step on the tiny model holds. Not checked against a GPU run.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import fields

import torch
from tabulate import tabulate

from imagic_steps.memory import GIB, SD15_ACTIVATION_GIB_512, ModelSize, estimate_training_memory


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
    config = unet.config
    parameter = next(unet.parameters())
    inputs = torch.randn(batch, config.in_channels, latent_side, latent_side, dtype=parameter.dtype,
                         device=parameter.device)
    text = torch.randn(batch, text_tokens, config.cross_attention_dim, dtype=parameter.dtype, device=parameter.device)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        unet(inputs, torch.full((batch,), 500, device=parameter.device), text)
    outside, blocks = saved[0], saved[1:]
    return outside + sum(blocks), outside + sum(block_inputs.values()) + max(blocks, default=0)


def sd15_unet_uninitialised() -> torch.nn.Module:
    """SD-1.5's UNet architecture on the CPU with uninitialised fp32 weights (3.2 GiB, no init time)."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # the defaults are SD-1.x's UNet
    return unet.to_empty(device="cpu").requires_grad_(True)


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
    from imagic_steps.models import load_components
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
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
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
