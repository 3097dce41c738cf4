"""Stage B: fine-tune the UNet on the input image with the optimised embedding e_opt held fixed.

The base UNet is never modified: training happens on a copy, so the next pair starts from the
untouched weights. The saved artefact is the smallest one that reproduces the fine-tuned UNet:
LoRA weights in `lora` mode, the UNet's state dict (optionally fp16) in `full` mode, and nothing
but a marker when `steps = 0` (the embed-only ablation).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .diffusion import check_finite, denoising_loss, draw_noise_and_timesteps
from .embed import EmbedResult
from .figures import save_grid
from .images import tensor_to_pil
from .io import atomic_path, load_tensors, read_json, read_metadata, save_tensors, write_json
from .models import SDComponents
from .sample import sample_alphas
from .variants import LORA_TARGET_MODULES, FinetuneParams, SampleParams

logger = logging.getLogger(__name__)

PREVIEW_ALPHAS = (0.0, 0.3, 0.6, 0.9, 1.2)  # the modified pipeline's progress grid
SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


@dataclass
class FinetuneResult:
    unet: torch.nn.Module  # the fine-tuned copy (fp32 trainable weights)
    mode: str  # "full", "lora" or "base" (no steps)
    params: FinetuneParams
    losses: list[float] = field(default_factory=list)


@dataclass
class PreviewSpec:
    """Where and how to write preview grids during training."""

    folder: Path
    sample: SampleParams
    steps: int = 10  # denoising steps of a preview sample
    height: int | None = None
    width: int | None = None


def shared_weights_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of `module`'s layers whose parameters and buffers are the original's tensors: no weight memory.

    Adapters can be added to the copy without touching `module`; nothing may change the shared (frozen) tensors.
    """
    memo = {id(tensor): tensor for tensor in (*module.parameters(), *module.buffers())}
    return copy.deepcopy(module, memo)


def trainable_unet(base_unet: torch.nn.Module, params: FinetuneParams) -> torch.nn.Module:
    """A training copy of `base_unet`: every weight trainable in fp32 (`full`, a real copy), or LoRA adapters in
    fp32 on the attention projections over the base's own frozen weights, shared, not copied (`lora`). LoRA's
    random init is seeded."""
    if params.mode == "full":
        unet = copy.deepcopy(base_unet)
        unet.float().requires_grad_(True)
    else:
        unet = shared_weights_copy(base_unet)
        from peft import LoraConfig

        config = LoraConfig(r=params.lora_rank, lora_alpha=params.lora_alpha, init_lora_weights="gaussian",
                            target_modules=list(LORA_TARGET_MODULES))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(params.seed)
            unet.add_adapter(config)
        for parameter in unet.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
    if params.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return unet.train()


def trainable_state(unet: torch.nn.Module, mode: str) -> dict[str, torch.Tensor]:
    """The tensors that define the fine-tune: all weights (`full`) or the LoRA weights (`lora`)."""
    if mode == "full":
        return dict(unet.state_dict())
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(unet)


def _autocast_and_scaler(device: torch.device, mixed_precision: str):
    """Autocast context and gradient scaler for `mixed_precision`; fp16 is CUDA only and off elsewhere."""
    if mixed_precision == "fp16" and device.type != "cuda":
        logger.warning("fp16 mixed precision needs CUDA; training in fp32 on %s", device.type)
        mixed_precision = "no"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    # GradScaler.step() unscales before the optimiser step, so lr means the same as in fp32.
    scaler = torch.amp.GradScaler(device.type, enabled=mixed_precision == "fp16")
    return autocast, scaler


def finetune_unet(
    components: SDComponents,
    embed: EmbedResult,
    params: FinetuneParams,
    *,
    preview: PreviewSpec | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
) -> FinetuneResult:
    """Run stage B: Adam on the denoising MSE of the image latents conditioned on e_opt.

    Noise and timesteps come from a generator seeded with `params.seed`. With `checkpoint_dir` and
    `params.checkpoint_every > 0`, the training state (weights, optimiser, generator, losses) is saved every
    N steps and training resumes from the latest checkpoint found there, ending bit-identical to an
    uninterrupted run on the CPU.
    """
    if params.steps == 0:
        return FinetuneResult(shared_weights_copy(components.unet), "base", params)
    device = components.device
    unet = trainable_unet(components.unet, params)
    trainable = [p for p in unet.parameters() if p.requires_grad]
    # fused Adam updates in place: foreach would allocate a temporary copy of every trainable weight per step
    optimizer = torch.optim.Adam(trainable, lr=params.lr, fused=True)
    autocast, scaler = _autocast_and_scaler(device, params.mixed_precision)
    generator = torch.Generator().manual_seed(params.seed)
    latents = embed.image_latents.to(device)
    embedding = embed.optimized_embedding.to(device)
    losses: list[float] = []
    start = 0
    checkpoints = ResumeCheckpoints(checkpoint_dir, params) if checkpoint_dir and params.checkpoint_every else None
    if checkpoints is not None:
        start = checkpoints.restore(unet, optimizer, scaler, generator, losses)

    forward = components.unet_forward(unet)
    bar = tqdm(range(start, params.steps), desc=f"finetune ({params.mode})", disable=not progress, mininterval=1.0)
    for step in bar:
        noise, timesteps = draw_noise_and_timesteps(latents, components.scheduler, generator)
        with autocast:
            loss = denoising_loss(forward, components.scheduler, latents, embedding, noise, timesteps)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
        check_finite(losses[-1], "finetune", step)
        done = step + 1
        if preview is not None and params.preview_every and done % params.preview_every == 0:
            write_preview(components, unet, embed, preview, params.seed, done)
        if checkpoints is not None and done % params.checkpoint_every == 0 and done < params.steps:
            checkpoints.save(done, unet, optimizer, scaler, generator, losses, params.mode)
    unet.eval()
    return FinetuneResult(unet, params.mode, params, losses)


def write_preview(components, unet, embed: EmbedResult, preview: PreviewSpec, seed: int, step: int,
                  path: str | Path | None = None) -> Path:
    """Sample PREVIEW_ALPHAS with the current weights and write a grid (default `step_NNNNNN.png` in the
    preview folder); the training generator is untouched."""
    was_training = unet.training
    unet.eval()
    sample_params = SampleParams(**{**asdict(preview.sample), "steps": preview.steps})
    images = sample_alphas(components, unet, embed.target_embedding, embed.optimized_embedding, PREVIEW_ALPHAS,
                           [seed], sample_params, height=preview.height, width=preview.width,
                           init_latents=embed.image_latents, progress=False)
    unet.train(was_training)
    path = Path(path) if path else Path(preview.folder) / f"step_{step:06d}.png"
    save_grid(path, [tensor_to_pil(images[0])], column_labels=[f"a={a:g}" for a in PREVIEW_ALPHAS])
    return path


# --------------------------------------------------------------------------------------------------
# Artefacts
# --------------------------------------------------------------------------------------------------


def save_finetuned(path: str | Path, result: FinetuneResult, save_dtype: str = "fp32") -> None:
    """Write the smallest artefact that reproduces the fine-tuned UNet (safetensors, atomically)."""
    metadata = {"mode": result.mode}
    tensors: dict[str, torch.Tensor] = {}
    if result.mode == "full":
        tensors = {k: v.to(SAVE_DTYPES[save_dtype]) for k, v in trainable_state(result.unet, "full").items()}
    elif result.mode == "lora":
        tensors = {k: v.to(SAVE_DTYPES[save_dtype]) for k, v in trainable_state(result.unet, "lora").items()}
        metadata.update(lora_rank=str(result.params.lora_rank), lora_alpha=str(result.params.lora_alpha),
                        target_modules=json.dumps(LORA_TARGET_MODULES))
    save_tensors(path, tensors, metadata=metadata)


def _copy_weights_from_file(unet: torch.nn.Module, path: str | Path) -> None:
    """Write a full artefact's tensors into `unet`'s weights one at a time (converted to their dtype), so loading
    never holds a second whole state dict: for SD-1.5 that would be 1.6 GiB more per copy (measured: a sampling
    job's peak fell from 7.6 to the estimate's 6.2 GiB on sd15-shaped, bf16)."""
    from safetensors import safe_open

    state = unet.state_dict()  # tensors that share the module's storage
    with safe_open(str(path), framework="pt") as handle:
        names = set(handle.keys())
        if names != set(state):
            raise ValueError(f"{path}: the artefact's tensors do not match the UNet (missing "
                             f"{sorted(set(state) - names)[:3]}, unexpected {sorted(names - set(state))[:3]}); "
                             "rerun the finetune stage")
        with torch.no_grad():
            for name in names:
                state[name].copy_(handle.get_tensor(name))


def load_finetuned_unet(base_unet: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """A new UNet: `base_unet` with the artefact at `path` applied; `base_unet` is left as it was.

    A full artefact is loaded into a copy; LoRA adapters and the base marker reuse the base's weights.
    """
    metadata = read_metadata(path)
    mode = metadata.get("mode")
    unet = copy.deepcopy(base_unet) if mode == "full" else shared_weights_copy(base_unet)
    if mode == "full":
        _copy_weights_from_file(unet, path)
    elif mode == "lora":
        from peft import LoraConfig, set_peft_model_state_dict

        config = LoraConfig(r=int(metadata["lora_rank"]), lora_alpha=float(metadata["lora_alpha"]),
                            target_modules=json.loads(metadata["target_modules"]))
        unet.add_adapter(config)
        tensors = load_tensors(path, next(base_unet.parameters()).device)
        result = set_peft_model_state_dict(unet, {k: v.float() for k, v in tensors.items()})
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"LoRA artefact {path} has keys the UNet does not: {result.unexpected_keys[:3]}")
    elif mode != "base":
        raise ValueError(f"{path} is not a fine-tune artefact of this project (mode={mode!r}); rerun the finetune stage")
    return unet.eval()


# --------------------------------------------------------------------------------------------------
# Resume checkpoints
# --------------------------------------------------------------------------------------------------


class ResumeCheckpoints:
    """Training state every N steps in a folder outside the stage's declared outputs.

    `latest.json` is written last (atomically) and names a complete pair of files, so a job killed
    while writing leaves the previous checkpoint in force. Only checkpoints made with the same
    parameters are resumed.
    """

    def __init__(self, folder: str | Path, params: FinetuneParams):
        self.folder = Path(folder)
        self.params = asdict(params)

    def save(self, step, unet, optimizer, scaler, generator, losses, mode) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors = dict(trainable_state(unet, mode))
        tensors["__generator_state__"] = generator.get_state()
        tensors["__losses__"] = torch.tensor(losses, dtype=torch.float64)
        save_tensors(self.folder / f"step_{step:06d}.safetensors", tensors)
        with atomic_path(self.folder / f"step_{step:06d}.optim.pt") as tmp:
            torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}, tmp)
        previous = self._latest()
        write_json(self.folder / "latest.json", {"step": step, "params": self.params})
        if previous is not None and previous != step:
            for suffix in (".safetensors", ".optim.pt"):
                (self.folder / f"step_{previous:06d}{suffix}").unlink(missing_ok=True)

    def _latest(self) -> int | None:
        marker = self.folder / "latest.json"
        if not marker.exists():
            return None
        return int(read_json(marker)["step"])

    def restore(self, unet, optimizer, scaler, generator, losses: list[float]) -> int:
        """Load the latest checkpoint into the given objects; returns the step to continue from (0 if none)."""
        marker = self.folder / "latest.json"
        if not marker.exists():
            return 0
        record = read_json(marker)
        if record.get("params") != self.params:
            logger.warning("ignoring resume checkpoint in %s: made with other parameters", self.folder)
            return 0
        step = int(record["step"])
        tensors = load_tensors(self.folder / f"step_{step:06d}.safetensors")
        generator.set_state(tensors.pop("__generator_state__"))
        losses[:] = tensors.pop("__losses__").tolist()
        if self.params["mode"] == "full":
            unet.load_state_dict(tensors)
        else:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(unet, tensors)
        state = torch.load(self.folder / f"step_{step:06d}.optim.pt", weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        logger.info("resumed fine-tuning from step %d (%s)", step, self.folder)
        return step

    def remove(self) -> None:
        """Delete the checkpoints once the stage's output exists."""
        if self.folder.exists():
            for path in self.folder.iterdir():
                path.unlink()
            self.folder.rmdir()
