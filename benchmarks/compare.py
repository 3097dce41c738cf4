"""Ours against the naive reference, side by side in one process on the same model, steps and seeds.

Measures (wall seconds, the minimum over repeats: the least-disturbed run on a shared machine):
stage A, stage B and stage C with N alphas for both implementations, ours with 1 alpha, and ours stage B
with preview grids every steps/4. Checks that both implementations compute the same thing (max abs
differences of e_opt, the fine-tuned weights and the images) before any ratio is worth reading.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from imagic_steps.embed import EmbedResult, optimize_embedding
from imagic_steps.finetune import PreviewSpec, finetune_unet
from imagic_steps.finetune_artefact import FinetuneResult
from imagic_steps.models import SDComponents
from imagic_steps.sample import sample_alphas
from imagic_steps.variants import PRESETS

from . import naive
from .common import BenchConfig, PeakMemory, max_abs_diff, max_abs_weight_diff, timed

# Step counts of the `original` preset (embed 500, fine-tune 1000, DDIM 50), for the projection.
ORIGINAL_STEPS = {stage: PRESETS["original"][stage]["steps"] for stage in ("embed", "finetune", "sample")}


@dataclass
class Timings:
    """Wall seconds per measurement name, one entry per repeat; peak fine-tune memory (bytes, GPU only)."""

    seconds: dict[str, list[float]] = field(default_factory=dict)
    finetune_peak_bytes: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, seconds: float) -> None:
        self.seconds.setdefault(name, []).append(seconds)

    def best(self, name: str) -> float:
        return min(self.seconds[name])


@dataclass
class Outputs:
    """What one implementation produced: e_opt (1, 77, D), the fine-tuned UNet, images (A, 3, H, W)."""

    optimized_embedding: torch.Tensor
    unet: torch.nn.Module
    images: torch.Tensor
    embed: EmbedResult | None = None  # ours only: stage A's full result, reused by the preview run


def run_naive(components: SDComponents, image: torch.Tensor, config: BenchConfig, timings: Timings) -> Outputs:
    """Naive stages A, B, C (one pipeline call per alpha), timed into `timings` under naive_*."""
    device = components.device
    (target, optimized, latents), seconds = timed(lambda: naive.optimize_embedding(
        components, image, config.prompt, config.steps_embed, config.embed_lr, config.seed), device)
    timings.add("naive_embed", seconds)
    with PeakMemory(device) as memory:
        unet, seconds = timed(lambda: naive.finetune_unet(
            components, latents, optimized, config.steps_finetune, config.finetune_lr, config.seed), device)
    timings.add("naive_finetune", seconds)
    timings.finetune_peak_bytes["naive"] = memory.delta
    sample = config.sample_params(batch_size=1)
    images, seconds = timed(lambda: naive.sample_alphas(
        components, unet, target, optimized, config.alphas(), config.seed, sample.scheduler, sample.steps,
        sample.guidance_scale, sample.eta), device)
    timings.add("naive_sample", seconds)
    return Outputs(optimized, unet, images)


def components_for_ours(components: SDComponents, config: BenchConfig) -> SDComponents:
    """Ours with the config's speed options: a channels-last copy of the UNet, torch.compile of every UNet run."""
    unet = components.unet
    if config.channels_last:
        unet = copy.deepcopy(unet).to(memory_format=torch.channels_last)
    return replace(components, unet=unet, channels_last=config.channels_last, compile_unet=config.compile)


def run_ours(components: SDComponents, image: torch.Tensor, config: BenchConfig, timings: Timings) -> Outputs:
    """Our stages A, B, C (all alphas in one batch) and C with one alpha, timed into `timings` under ours_*."""
    device = components.device
    embed, seconds = timed(lambda: optimize_embedding(components, image, config.prompt, config.embed_params(),
                                                      progress=False), device)
    timings.add("ours_embed", seconds)
    with PeakMemory(device) as memory:
        finetuned, seconds = timed(lambda: finetune_unet(components, embed, config.finetune_params(), progress=False),
                                   device)
    timings.add("ours_finetune", seconds)
    timings.finetune_peak_bytes["ours"] = memory.delta
    images = sample_with(components, finetuned, embed, config, config.alphas(), timings, "ours_sample")
    sample_with(components, finetuned, embed, config, config.alphas(1), timings, "ours_sample_1alpha")
    return Outputs(embed.optimized_embedding, finetuned.unet, images, embed)


def sample_with(components: SDComponents, finetuned: FinetuneResult, embed: EmbedResult, config: BenchConfig,
                alphas: list[float], timings: Timings, name: str) -> torch.Tensor:
    """Our stage C for `alphas` in one batch, timed under `name`; images (A, 3, H, W)."""
    params = config.sample_params(batch_size=len(alphas))
    images, seconds = timed(lambda: sample_alphas(
        components, finetuned.unet, embed.target_embedding, embed.optimized_embedding, alphas, [config.seed], params,
        progress=False), components.device)
    timings.add(name, seconds)
    return images[0]


def run_previews(components: SDComponents, embed: EmbedResult, config: BenchConfig, folder: Path,
                 timings: Timings) -> None:
    """Our stage B with a preview grid every steps/4 steps (written to `folder`), timed as ours_finetune_previews."""
    params = config.finetune_params(preview_every=max(1, config.steps_finetune // 4))
    preview = PreviewSpec(folder, config.sample_params(batch_size=8))
    _, seconds = timed(lambda: finetune_unet(components, embed, params, preview=preview, progress=False),
                       components.device)
    timings.add("ours_finetune_previews", seconds)


def compare(components: SDComponents, image: torch.Tensor, config: BenchConfig, repeats: int,
            preview_folder: Path) -> tuple[Timings, dict[str, float]]:
    """Run both implementations `repeats` times (alternating which goes first) and the preview run.

    Returns the timings and the max abs differences ours vs naive of e_opt, fine-tuned weights and images.
    """
    timings = Timings()
    differences: dict[str, float] = {}
    ours_components = components_for_ours(components, config)
    for repeat in range(repeats):
        if repeat % 2:
            ours = run_ours(ours_components, image, config, timings)
            reference = run_naive(components, image, config, timings)
        else:
            reference = run_naive(components, image, config, timings)
            ours = run_ours(ours_components, image, config, timings)
        run_previews(ours_components, ours.embed, config, preview_folder, timings)
        if repeat == 0:
            differences = {
                "e_opt": max_abs_diff(ours.optimized_embedding, reference.optimized_embedding),
                "finetuned_weights": max_abs_weight_diff(ours.unet, reference.unet),
                "images": max_abs_diff(ours.images, reference.images),
            }
    return timings, differences


def ratios(timings: Timings, config: BenchConfig, device: torch.device) -> list[dict]:
    """Rows (metric, ours, reference, reference_label, ratio = ours / reference, target, met) from the best timings.

    Times are seconds, memory GiB. The fine-tune memory row is GPU only: CPU RSS is not attributable in-process.
    """
    t = timings.best
    n = config.n_alphas
    every = max(1, config.steps_finetune // 4)
    ours_edit = t("ours_embed") + t("ours_finetune") + t("ours_sample")
    naive_edit = t("naive_embed") + t("naive_finetune") + t("naive_sample")
    rows = [
        ratio_row(f"whole edit A+B+C, {n} alphas (s)", ours_edit, naive_edit, "naive", 0.67),
        ratio_row("whole edit at original preset steps 500/1000/50, projected (s)", *projected_edit(timings, config),
                  "naive", 0.67),
        ratio_row("stage A embed (s)", t("ours_embed"), t("naive_embed"), "naive", None),
        ratio_row("stage B fine-tune full (s)", t("ours_finetune"), t("naive_finetune"), "naive", None),
        ratio_row(f"stage C sample {n} alphas (s)", t("ours_sample"), t("naive_sample"), "naive", None),
        ratio_row(f"ours: sample {n} alphas vs 1 alpha (s)", t("ours_sample"), t("ours_sample_1alpha"),
                  "ours, 1 alpha", 2.0),
        ratio_row(f"ours: fine-tune with previews every {every} steps vs none (s)", t("ours_finetune_previews"),
                  t("ours_finetune"), "ours, no previews", 1.05),
        ratio_row("ours: same at 1000 fine-tune steps, previews every 250, projected (s)",
                  *projected_previews(timings, config), "ours, no previews", 1.05),
    ]
    if config.compile:
        first_edit = sum(timings.seconds[f"ours_{stage}"][0] for stage in ("embed", "finetune", "sample"))
        rows.append(ratio_row("ours: first whole edit (includes torch.compile) vs best (s)", first_edit, ours_edit,
                              "ours, best repeat", None))
        ours_projected, naive_projected = projected_edit(timings, config)
        rows.append(ratio_row("whole edit at original preset steps plus one compile, projected (s)",
                              ours_projected + first_edit - ours_edit, naive_projected, "naive", 0.67))
    if device.type == "cuda":
        peaks = timings.finetune_peak_bytes
        rows.append(ratio_row("fine-tune peak memory above loaded model (GiB)", peaks["ours"] / 2**30,
                              peaks["naive"] / 2**30, "naive", None))
    return rows


def ratio_row(metric: str, ours: float, reference: float, reference_label: str, limit: float | None) -> dict:
    """One comparison: ratio = ours / reference; `met` is ratio <= limit ('' without a target)."""
    ratio = ours / reference
    return {"metric": metric, "ours": ours, "reference": reference, "reference_label": reference_label,
            "ratio": ratio, "target": "" if limit is None else f"<= {limit:g}",
            "met": "" if limit is None else ratio <= limit}


def projected_previews(timings: Timings, config: BenchConfig, steps: int = 1000) -> tuple[float, float]:
    """(with, without previews) fine-tune seconds at `steps` steps with 4 previews, from the measured costs.

    A preview costs the same whatever the step count; the fine-tune scales with it.
    """
    every = max(1, config.steps_finetune // 4)
    previews = config.steps_finetune // every
    per_preview = (timings.best("ours_finetune_previews") - timings.best("ours_finetune")) / previews
    without = timings.best("ours_finetune") * steps / config.steps_finetune
    return without + 4 * per_preview, without


def projected_edit(timings: Timings, config: BenchConfig) -> tuple[float, float]:
    """(ours, naive) whole-edit seconds at the `original` preset's step counts, from the measured per-step costs.

    Stages A and B scale with their step counts; stage C is scaled by denoising steps (its VAE decode and
    set-up are scaled too, a small over-estimate at these sizes).
    """
    scale = {"embed": ORIGINAL_STEPS["embed"] / config.steps_embed,
             "finetune": ORIGINAL_STEPS["finetune"] / config.steps_finetune,
             "sample": ORIGINAL_STEPS["sample"] / config.sample_steps}
    return tuple(sum(timings.best(f"{impl}_{stage}") * factor for stage, factor in scale.items())
                 for impl in ("ours", "naive"))
