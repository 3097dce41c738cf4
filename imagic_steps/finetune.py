"""Stage B: fine-tune the UNet on the input image with the optimised embedding e_opt held fixed.

The base UNet is never modified: training happens on a copy, so the next pair starts from the
untouched weights. The artefact written is the smallest one that reproduces the fine-tuned UNet
(`finetune_artefact`). Preview grids sample the model being trained (the one use of `sample` here).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import trajectory
from .components import SDComponents
from .diffusion import LossHistory, denoising_loss, draw_noise_and_timesteps
from .embed import EmbedResult
from .drawing import save_grid, write_loss_curve
from .finetune_artefact import FinetuneResult, save_finetuned, shared_weights_copy, trainable_state
from .images import tensor_to_pil
from .io import load_tensors, read_json, save_tensors, save_torch, write_json
from .provenance import provenance
from .sample import sample_alphas
from .variants import LORA_TARGET_MODULES, FinetuneParams, SampleParams

logger = logging.getLogger(__name__)

PREVIEW_ALPHAS = (0.0, 0.3, 0.6, 0.9, 1.2)  # the modified pipeline's progress grid


@dataclass
class PreviewSpec:
    """Where and how to write preview grids during training."""

    folder: Path
    sample: SampleParams
    steps: int = 10  # denoising steps of a preview sample
    height: int | None = None
    width: int | None = None


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


def autocast_and_scaler(device: torch.device, mixed_precision: str, *, fp16_on_cpu: bool = False):
    """Autocast context and gradient scaler for `mixed_precision`.

    fp16 is for CUDA: elsewhere it is turned off with a warning and training runs in fp32 (PyTorch's half-precision
    CPU kernels are slow: a tiny-preset step at 64 px took ~10x its fp32 time). `fp16_on_cpu=True` keeps fp16 autocast
    and the gradient scaler on the CPU, so that the tests exercise the path a GPU user's fp16 run takes (torch's
    autocast and GradScaler both run on the CPU). An explicit argument rather than an environment switch: it cannot
    leak from a shell into a user's workflow jobs, and a test that wants it says so at the call.

    The scaler unscales the gradients before the optimiser's update (fused Adam takes the scale and does it in its
    kernel), so lr means the same as in fp32; there is no gradient clipping here, which would otherwise need an
    explicit `scaler.unscale_(optimizer)` before it."""
    if mixed_precision == "fp16" and device.type != "cuda" and not fp16_on_cpu:
        logger.warning("fp16 mixed precision needs CUDA; training in fp32 on %s", device.type)
        mixed_precision = "no"
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=mixed_precision == "fp16")
    return autocast, scaler


class SkippedSteps:
    """Logs each step the fp16 gradient scaler skipped: a non-finite gradient (an overflow of the scaled fp16
    backward pass) leaves the weights and Adam's state unchanged and halves the loss scale.

    A skip is read from the scale dropping, without a host sync per step (`GradScaler.get_scale()` is one, and fused
    Adam's scaler path otherwise has none): each step's scale stays on the device until `log()`, which the loop calls
    every `check_every` steps, at checkpoints and at the end (as it reads the losses)."""

    def __init__(self, scaler: torch.amp.GradScaler, device: torch.device, first_step: int, check_every: int = 50):
        self.scaler = scaler
        self.check_every = check_every
        self.enabled = scaler.is_enabled()
        self._one = torch.ones((), device=device)
        self._last = scaler.scale(self._one) if self.enabled else None  # the scale in force (init or restored)
        self._pending: list[torch.Tensor] = []
        self._next_step = first_step  # the step of self._pending[0]
        self.skipped: list[int] = []

    def after_update(self) -> None:
        if self.enabled:
            self._pending.append(self.scaler.scale(self._one))  # a one-element device tensor: no sync
            if len(self._pending) >= self.check_every:
                self.log()

    def log(self) -> None:
        if not self._pending:
            return
        scales = torch.stack([self._last, *self._pending]).tolist()
        for offset, (before, after) in enumerate(zip(scales, scales[1:])):
            if after < before:
                step = self._next_step + offset
                self.skipped.append(step)
                logger.info("finetune: step %d skipped: fp16 gradient overflow (inf/NaN gradient), weights "
                            "unchanged; loss scale lowered from %g to %g", step, before, after)
        self._last = self._pending[-1]
        self._next_step += len(self._pending)
        self._pending = []


def finetune_unet(
    components: SDComponents,
    embed: EmbedResult,
    params: FinetuneParams,
    *,
    preview: PreviewSpec | None = None,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    fp16_on_cpu: bool = False,
    at_steps: Mapping[int, Callable[[torch.nn.Module, list[float]], None]] | None = None,
) -> FinetuneResult:
    """Run stage B: Adam on the denoising MSE of the image latents conditioned on e_opt.

    Noise and timesteps come from a generator seeded with `params.seed`. With `checkpoint_dir` and
    `params.checkpoint_every > 0`, the training state (weights, optimiser, generator, losses) is saved every
    N steps and training resumes from the latest checkpoint found there, ending bit-identical to an
    uninterrupted run on the CPU (the fp16 gradient scaler's state included).

    `fp16_on_cpu`: run `mixed_precision: fp16` on the CPU too rather than falling back to fp32 (for tests;
    `autocast_and_scaler`). A step the fp16 scaler skips (gradient overflow) is logged (`SkippedSteps`).

    `at_steps`: {step: callback(unet, losses so far)} called once that many steps are done (a shared trajectory's
    stops, `run_finetune`); the callback must leave the weights and the training mode as it found them.
    """
    if params.steps == 0:
        return FinetuneResult(shared_weights_copy(components.unet), "base", params)
    device = components.device
    unet = trainable_unet(components.unet, params)
    trainable = [p for p in unet.parameters() if p.requires_grad]
    # fused Adam updates in place: foreach would allocate a temporary copy of every trainable weight per step
    optimizer = torch.optim.Adam(trainable, lr=params.lr, fused=True)
    autocast, scaler = autocast_and_scaler(device, params.mixed_precision, fp16_on_cpu=fp16_on_cpu)
    generator = torch.Generator().manual_seed(params.seed)
    latents = embed.image_latents.to(device)
    conditioning = embed.optimized.to(device)
    restored: list[float] = []
    start = 0
    checkpoints = ResumeCheckpoints(checkpoint_dir, params) if checkpoint_dir and params.checkpoint_every else None
    if checkpoints is not None:
        start = checkpoints.restore(unet, optimizer, scaler, generator, restored)
    losses = LossHistory("finetune", restored)
    skipped = SkippedSteps(scaler, device, start, losses.check_every)

    forward = components.unet_forward(unet)
    dtype = unet.dtype
    bar = tqdm(range(start, params.steps), desc=f"finetune ({params.mode})", disable=not progress, mininterval=1.0)
    for step in bar:
        noise, timesteps = draw_noise_and_timesteps(latents, components.scheduler, generator)
        with autocast:
            loss = denoising_loss(forward, components.scheduler, latents, conditioning, noise, timesteps, dtype)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        skipped.after_update()
        losses.append(loss)
        done = step + 1
        # the last step's grid is the final preview (run_finetune's `final_preview`), not drawn twice
        if preview is not None and params.preview_every and done % params.preview_every == 0 and done < params.steps:
            losses.values()  # no grid of a diverged model
            write_preview(components, unet, embed, preview, params.seed, done)
        if at_steps and done in at_steps:
            at_steps[done](unet, losses.values())
        if checkpoints is not None and done % params.checkpoint_every == 0 and done < params.steps:
            skipped.log()
            checkpoints.save(done, unet, optimizer, scaler, generator, losses.values(), params.mode)
    unet.eval()
    skipped.log()
    if skipped.skipped:
        logger.info("finetune: fp16 loss scaling skipped %d of %d steps (gradient overflow)", len(skipped.skipped),
                    params.steps - start)
    return FinetuneResult(unet, params.mode, params, losses.values())


def write_preview(components, unet, embed: EmbedResult, preview: PreviewSpec, seed: int, step: int,
                  path: str | Path | None = None) -> Path:
    """Sample PREVIEW_ALPHAS with the current weights and write a grid (default `step_NNNNNN.png` in the
    preview folder); the training generator is untouched."""
    was_training = unet.training
    unet.eval()
    sample_params = SampleParams(**{**asdict(preview.sample), "steps": preview.steps})
    images = sample_alphas(components, unet, embed.target, embed.optimized, PREVIEW_ALPHAS,
                           [seed], sample_params, height=preview.height, width=preview.width,
                           init_latents=embed.image_latents, unconditional=embed.unconditional, progress=False)
    unet.train(was_training)
    path = Path(path) if path else Path(preview.folder) / f"step_{step:06d}.png"
    save_grid(path, [tensor_to_pil(images[0])], column_labels=[f"a={a:g}" for a in PREVIEW_ALPHAS])
    return path


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
        previous = self._latest()
        files = self._files(step)
        try:
            save_tensors(files[0], tensors)
            save_torch({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}, files[1])
            write_json(self.folder / "latest.json", {"step": step, "params": self.params})
        except BaseException:  # e.g. a full disk: the previous checkpoint stays in force, and this one's files,
            if previous != step:  # which no latest.json names, are removed rather than left taking space
                for path in files:
                    path.unlink(missing_ok=True)
            raise
        if previous is not None and previous != step:
            for path in self._files(previous):
                path.unlink(missing_ok=True)

    def _files(self, step: int) -> tuple[Path, Path]:
        """A checkpoint's two files: the trained tensors (with the generator state and losses), the optimiser's."""
        return self.folder / f"step_{step:06d}.safetensors", self.folder / f"step_{step:06d}.optim.pt"

    def _latest_record(self) -> dict | None:
        """`latest.json` (the step of the complete checkpoint in force and its parameters), None without one."""
        marker = self.folder / "latest.json"
        return read_json(marker) if marker.exists() else None

    def _latest(self) -> int | None:
        record = self._latest_record()
        return None if record is None else int(record["step"])

    def resume_step(self) -> int:
        """The step `restore` would continue from: the latest checkpoint's, if made with these parameters; else 0."""
        record = self._latest_record()
        return int(record["step"]) if record is not None and record.get("params") == self.params else 0

    def restore(self, unet, optimizer, scaler, generator, losses: list[float]) -> int:
        """Load the latest checkpoint into the given objects; returns the step to continue from (0 if none)."""
        record = self._latest_record()
        if record is None:
            return 0
        if record.get("params") != self.params:
            logger.warning("ignoring resume checkpoint in %s: made with other parameters", self.folder)
            return 0
        step = int(record["step"])
        tensors_file, optimizer_file = self._files(step)
        tensors = load_tensors(tensors_file)
        generator.set_state(tensors.pop("__generator_state__"))
        losses[:] = tensors.pop("__losses__").tolist()
        if self.params["mode"] == "full":
            unet.load_state_dict(tensors)
        else:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(unet, tensors)
        state = torch.load(optimizer_file, weights_only=True)
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


def run_finetune(
    components: SDComponents,
    embed_artefact,
    params: FinetuneParams,
    *,
    preview_sample: SampleParams,
    resolution: int | None,
    artefact,
    losses_csv,
    loss_plot,
    previews_dir,
    record,
    final_preview=None,
    checkpoint_dir=None,
    stops: Sequence[tuple[int, str | Path]] = (),
    pair_id: str = "",
    progress: bool = True,
) -> FinetuneResult:
    """Stage B from an embed artefact: writes the fine-tune artefact, losses, preview grids and provenance.

    `final_preview` (optional path) gets a preview grid of the finished model.

    `stops`: (steps, folder) of shorter fine-tunes with these settings (a shared trajectory,
    `plan.SharedTrajectory`): when training passes a stop's step count, that run's files are written into its
    folder under the names of this run's (`trajectory.adopt` moves them into the shorter run's own outputs),
    each as a separate run of that length would write it.

    Resume checkpoints live in `checkpoint_dir` while training and are removed once the artefact exists.
    """
    embed = EmbedResult.load(embed_artefact, components.device)
    Path(previews_dir).mkdir(parents=True, exist_ok=True)
    preview = PreviewSpec(Path(previews_dir), preview_sample, params.preview_steps, resolution, resolution)
    outputs = FinetuneOutputs(Path(artefact), Path(losses_csv), Path(loss_plot), Path(previews_dir), Path(record),
                              Path(final_preview) if final_preview else None)
    record_fields = {"pair_id": pair_id, "embed": str(embed_artefact), "preview_sample": asdict(preview_sample)}
    at_steps = {}
    if stops:
        trajectory.clear_unreached(stops, ResumeCheckpoints(checkpoint_dir, params).resume_step()
                                   if checkpoint_dir else 0)
        stop_folders = {int(steps): Path(folder) for steps, folder in stops}

        def write_stop(steps, unet, losses):
            stop_params = replace(params, steps=steps)
            write_finetune_outputs(components, FinetuneResult(unet, params.mode, stop_params, list(losses)), embed,
                                   preview, outputs.moved_to(stop_folders[steps]), record_fields,
                                   trajectory={"trained_by": str(outputs.artefact.parent), "stopped_at": steps},
                                   previews_before=steps)

        at_steps = {steps: functools.partial(write_stop, steps) for steps in stop_folders}
    result = finetune_unet(components, embed, params, preview=preview, checkpoint_dir=checkpoint_dir,
                           progress=progress, at_steps=at_steps)
    write_finetune_outputs(components, result, embed, preview, outputs, record_fields, **trajectory.stops_record(stops))
    if checkpoint_dir:
        ResumeCheckpoints(checkpoint_dir, params).remove()
    return result


@dataclass(frozen=True)
class FinetuneOutputs:
    """The files a fine-tune writes (the finetune rule's outputs)."""

    artefact: Path
    losses_csv: Path
    loss_plot: Path
    previews_dir: Path
    record: Path
    final_preview: Path | None = None

    def moved_to(self, folder: Path) -> "FinetuneOutputs":
        """The same file names in `folder` (a trajectory stop's)."""
        return FinetuneOutputs(*(None if path is None else folder / path.name for path in (
            self.artefact, self.losses_csv, self.loss_plot, self.previews_dir, self.record, self.final_preview)))

    def paths(self) -> list[Path]:
        return [p for p in (self.artefact, self.losses_csv, self.loss_plot, self.previews_dir, self.record,
                            self.final_preview) if p is not None]


def write_finetune_outputs(components: SDComponents, result: FinetuneResult, embed: EmbedResult,
                           preview: PreviewSpec, outputs: FinetuneOutputs, record_fields: dict, *,
                           previews_before: int | None = None, **record_extra) -> None:
    """A fine-tune's files for `result` (the weights as they are now): artefact, final preview grid, loss curve,
    provenance. `previews_before`: also link the grids `preview.folder` holds for earlier steps into
    `outputs.previews_dir` (a trajectory stop: its own run would have drawn exactly those)."""
    params = result.params
    grids = {int(grid.stem.removeprefix("step_")): grid for grid in Path(preview.folder).glob("step_*.png")}
    if previews_before is not None:
        outputs.previews_dir.mkdir(parents=True, exist_ok=True)
        for step, grid in grids.items():
            if step < previews_before:
                trajectory.link_or_copy(grid, outputs.previews_dir / grid.name)
    save_finetuned(outputs.artefact, result, params.save_dtype)
    if outputs.final_preview and previews_before is not None and params.steps in grids:
        # a stop on a step the longer run drew its grid at: the same weights, sampler and seed, so the same grid
        trajectory.link_or_copy(grids[params.steps], outputs.final_preview)
    elif outputs.final_preview:
        write_preview(components, result.unet, embed, preview, params.seed, params.steps, outputs.final_preview)
    write_loss_curve(result.losses, outputs.losses_csv, outputs.loss_plot,
                     f"stage B (fine-tune, {result.mode}) {record_fields['pair_id']}")
    write_json(outputs.record, provenance("finetune", asdict(params), components.provenance(), **record_fields,
                                          **record_extra))
