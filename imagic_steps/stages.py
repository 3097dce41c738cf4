"""The three stages as file-to-file steps: what the CLI and the workflow's scripts call.

Each stage reads its inputs, runs one of `embed`, `finetune`, `sample`, and writes its outputs atomically
with a provenance JSON beside the main artefact. Components can be passed in, so one process (the CLI)
loads the model once for all stages; the workflow loads it per job.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .diffusion import truncated_prompt
from .embed import EmbedResult, optimize_embedding
from .figures import plot_losses
from .finetune import (
    PreviewSpec,
    ResumeCheckpoints,
    finetune_unet,
    load_finetuned_unet,
    save_finetuned,
    write_preview,
)
from .images import load_image, pil_to_tensor, tensor_to_pil
from .io import atomic_path, save_image, write_json
from .jobs import job_context
from .models import SDComponents, load_components
from .provenance import provenance
from .sample import sample_alphas
from .variants import EmbedParams, FinetuneParams, SampleParams

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how (the `model:` block of the config)."""

    model: str = "tiny"
    revision: str | None = None
    device: str = "cpu"
    dtype: str = "fp32"
    channels_last: bool = False
    compile_unet: bool = False

    @classmethod
    def from_config(cls, model: dict, device: str) -> "ModelSpec":
        """From the workflow's `model:` block, on the device this job was given."""
        return cls(model["id"], model.get("revision"), device, model.get("dtype", "fp32"),
                   model.get("channels_last", False), model.get("compile", False))

    def load(self) -> SDComponents:
        return load_components(self.model, revision=self.revision, device=self.device, dtype=self.dtype,
                               channels_last=self.channels_last, compile_unet=self.compile_unet)


@contextlib.contextmanager
def model_job(log_path, threads: int, model: dict, gpu_mem_mb: int | None = None) -> Iterator[SDComponents]:
    """A workflow job that runs the model: `job_context` (log file, threads, a device of its own, the memory
    check, one-line user errors) with the workflow's `model:` block loaded on that device."""
    with job_context(log_path, threads, model["device"], gpu_mem_mb) as device:
        yield ModelSpec.from_config(model, device).load()


def write_losses(losses: Sequence[float], csv_path, png_path, title: str) -> None:
    """Loss history as CSV (step, loss) and as a PNG curve."""
    import pandas as pd  # imported here: sampling jobs never write tables
    with atomic_path(csv_path) as tmp:
        pd.DataFrame({"step": range(len(losses)), "loss": list(losses)}).to_csv(tmp, index=False)
    plot_losses({"loss": losses}, png_path, title)


def run_embed(
    components: SDComponents,
    image_path,
    prompt: str,
    params: EmbedParams,
    *,
    resolution: int | None,
    artefact,
    losses_csv,
    loss_plot,
    record,
    pair_id: str = "",
    progress: bool = True,
) -> EmbedResult:
    """Stage A from an image file: writes e_tgt/e_opt/latents (safetensors), losses and provenance."""
    resolution = resolution or components.resolution
    image = pil_to_tensor(load_image(image_path, resolution))
    result = optimize_embedding(components, image, prompt, params, progress=progress)
    result.save(artefact)
    write_losses(result.losses, losses_csv, loss_plot, f"stage A (embedding) {pair_id}")
    write_json(record, provenance(
        "embed", asdict(params), components.provenance(), pair_id=pair_id, image=str(image_path), prompt=prompt,
        prompt_truncated_to=truncated_prompt(components, prompt), resolution=resolution,
    ))
    return result


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
    pair_id: str = "",
    progress: bool = True,
):
    """Stage B from an embed artefact: writes the fine-tune artefact, losses, preview grids and provenance.

    `final_preview` (optional path) gets a preview grid of the finished model.

    Resume checkpoints live in `checkpoint_dir` while training and are removed once the artefact exists.
    """
    embed = EmbedResult.load(embed_artefact, components.device)
    Path(previews_dir).mkdir(parents=True, exist_ok=True)
    preview = PreviewSpec(Path(previews_dir), preview_sample, params.preview_steps, resolution, resolution)
    result = finetune_unet(components, embed, params, preview=preview, checkpoint_dir=checkpoint_dir, progress=progress)
    save_finetuned(artefact, result, params.save_dtype)
    if final_preview:
        write_preview(components, result.unet, embed, preview, params.seed, params.steps, final_preview)
    write_losses(result.losses, losses_csv, loss_plot, f"stage B (fine-tune, {result.mode}) {pair_id}")
    write_json(record, provenance("finetune", asdict(params), components.provenance(), pair_id=pair_id,
                                  embed=str(embed_artefact), preview_sample=asdict(preview_sample)))
    if checkpoint_dir:
        ResumeCheckpoints(checkpoint_dir, params).remove()
    return result


def run_sample(
    components: SDComponents,
    embed_artefact,
    finetune_artefact,
    params: SampleParams,
    *,
    alphas: Sequence[float],
    seeds: Sequence[int],
    resolution: int | None,
    outputs: dict[tuple[int, float], str],
    record,
    unet: torch.nn.Module | None = None,
    pair_id: str = "",
    progress: bool = True,
) -> None:
    """Stage C: one PNG per (seed, alpha) in `outputs`, sampled from the fine-tuned UNet.

    `unet` skips loading the artefact when the caller still holds the fine-tuned model.
    """
    embed = EmbedResult.load(embed_artefact, components.device)
    unet = unet if unet is not None else load_finetuned_unet(components.unet, finetune_artefact)
    resolution = resolution or components.resolution
    images = sample_alphas(components, unet, embed.target_embedding, embed.optimized_embedding, alphas, seeds, params,
                           height=resolution, width=resolution, init_latents=embed.image_latents, progress=progress)
    for s, seed in enumerate(seeds):
        for alpha, image in zip(alphas, tensor_to_pil(images[s])):
            save_image(image, outputs[(seed, alpha)])
    write_json(record, provenance("sample", asdict(params), components.provenance(), pair_id=pair_id,
                                  alphas=list(alphas), seeds=list(seeds), embed=str(embed_artefact),
                                  finetune=str(finetune_artefact), outputs={f"{s}:{a:g}": p for (s, a), p in outputs.items()}))


def run_sdedit(components: SDComponents, image_path, prompt: str, params, *, strength: float, seeds: Sequence[int],
               resolution: int | None, outputs: Sequence[str], record, pair_id: str = "") -> None:
    """The SDEdit baseline for one strength: a PNG per seed (in `outputs` order) and one provenance record."""
    from .sdedit import sdedit

    resolution = resolution or components.resolution
    images = sdedit(components, load_image(image_path, resolution), prompt, strength, seeds, params)
    for edited, output in zip(images, outputs):
        save_image(edited, output)
    write_json(record, provenance("sdedit", asdict(params), components.provenance(), pair_id=pair_id,
                                  image=str(image_path), prompt=prompt, strength=strength, seeds=list(seeds)))
