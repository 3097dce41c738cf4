"""Ours against the faithful reference (`benchmarks.reference`), side by side in one process, same model and steps.

Each repeat runs both implementations' stages A, B and C once, alternating which goes first (interleaved, so a
disturbance on a shared machine hits both alike); the ratio ours / reference is taken per repeat and reported as
its median with the min-max over the n repeats. The reference fine-tunes the loaded UNet in place, so its base
weights are restored after it (untimed), as its users would have to reload the model before the next image.
Before any ratio is worth reading, stage C is checked to compute the same thing: ours sampling the reference's
e_opt and fine-tuned UNet gives the reference's images (stages A and B draw from different random streams, the
global RNG vs ours' seeded generator; tests/test_benchmarks.py checks they agree when the draws are the same).
"""

from __future__ import annotations

import copy
import statistics
from dataclasses import dataclass, field, replace

import torch

from imagic_steps.components import SDComponents
from imagic_steps.embed import optimize_embedding
from imagic_steps.finetune import finetune_unet
from imagic_steps.sample import make_scheduler, sample_alphas

from . import reference
from .common import BenchConfig, timed

STAGES = ("embed", "finetune", "sample")
WHOLE_EDIT_TARGET = 0.67  # the target: whole edit <= 0.67x the community algorithm (benchmarks/README.md)


@dataclass
class Timings:
    """Wall seconds per (implementation, stage), one entry per repeat."""

    seconds: dict[str, list[float]] = field(default_factory=dict)

    def add(self, implementation: str, stage: str, seconds: float) -> None:
        self.seconds.setdefault(f"{implementation}_{stage}", []).append(seconds)

    def per_repeat(self, implementation: str, stage: str) -> list[float]:
        """Seconds of `stage` ('edit': A + B + C) in each repeat."""
        if stage == "edit":
            return [sum(times) for times in zip(*(self.seconds[f"{implementation}_{s}"] for s in STAGES))]
        return self.seconds[f"{implementation}_{stage}"]


def components_for_ours(components: SDComponents, config: BenchConfig) -> SDComponents:
    """Ours with the config's speed options: a channels-last copy of the UNet, torch.compile of every UNet run."""
    unet = components.unet
    if config.channels_last:
        unet = copy.deepcopy(unet).to(memory_format=torch.channels_last)
    return replace(components, unet=unet, channels_last=config.channels_last, compile_unet=config.compile)


def run_ours(components: SDComponents, image: torch.Tensor, config: BenchConfig, timings: Timings) -> torch.Tensor:
    """Our stages A, B, C as the CLI edit runs them (no previews; all samples in one batch); images (S, A, 3, H, W)."""
    device = components.device
    embed, seconds = timed(lambda: optimize_embedding(components, image, config.prompt, config.embed_params(),
                                                      progress=False), device)
    timings.add("ours", "embed", seconds)
    finetuned, seconds = timed(lambda: finetune_unet(components, embed, config.finetune_params(), progress=False),
                               device)
    timings.add("ours", "finetune", seconds)
    images, seconds = timed(lambda: sample_alphas(
        components, finetuned.unet, embed.target, embed.optimized, config.alphas, config.seeds, config.sample_params(),
        height=config.resolution, width=config.resolution, init_latents=embed.image_latents,
        unconditional=embed.unconditional, progress=False), device)
    timings.add("ours", "sample", seconds)
    return images


def run_reference(components: SDComponents, image: torch.Tensor, config: BenchConfig, timings: Timings,
                  check_against_ours: bool) -> float | None:
    """The reference's stages A, B, C timed into `timings`; the loaded UNet is fine-tuned in place and left so.

    With `check_against_ours`, returns the max abs difference (in [0, 1] pixel units) between the reference's
    images and ours sampled from the reference's e_opt and fine-tuned UNet.
    """
    device = components.device
    # The pipeline's scheduler, built once with the pipeline (untimed): the community example's DDIM
    scheduler = make_scheduler(config.scheduler, components.scheduler.config)
    torch.manual_seed(config.seed)  # the global RNG the community loops draw noise and timesteps from
    generator = torch.Generator(device).manual_seed(config.seed)  # train()'s generator: the posterior sample
    (target, optimized, latents), seconds = timed(lambda: reference.optimize_embedding(
        components, scheduler, image, config.prompt, config.steps_embed, config.embed_lr, generator), device)
    timings.add("reference", "embed", seconds)
    unet, seconds = timed(lambda: reference.finetune_in_place(
        components, scheduler, latents, optimized, config.steps_finetune, config.finetune_lr), device)
    timings.add("reference", "finetune", seconds)
    images, seconds = timed(lambda: reference.sample_alphas(
        components, scheduler, target, optimized, config.alphas, config.seeds, config.sample_steps,
        config.guidance_scale, config.eta, config.resolution), device)
    timings.add("reference", "sample", seconds)
    if not check_against_ours:
        return None
    ours = sample_alphas(components, unet.eval(), target, optimized, config.alphas, config.seeds,
                         config.sample_params(), height=config.resolution, width=config.resolution, progress=False)
    ours = ((ours / 2 + 0.5).clamp(0, 1)).permute(0, 1, 3, 4, 2).numpy()
    return float(abs(ours - images).max())


def compare(components: SDComponents, image: torch.Tensor, config: BenchConfig, repeats: int
            ) -> tuple[Timings, float]:
    """Both implementations `repeats` times, interleaved; returns the timings and stage C's image difference."""
    ours_components = components_for_ours(components, config)
    base_state = {name: tensor.clone() for name, tensor in components.unet.state_dict().items()}
    # Untimed warm-up of both (a process's first UNet calls pay one-off kernel and allocator set-up, and
    # torch.compile its first compile; stage C's larger batch may still recompile in the first repeat), so the
    # first timed repeat is no outlier for whichever goes first.
    warm_up = replace(config, steps_embed=2, steps_finetune=2, sample_steps=2, alphas=config.alphas[:1],
                      seeds=config.seeds[:1])
    run_ours(ours_components, image, warm_up, Timings())
    run_reference(components, image, warm_up, Timings(), check_against_ours=False)
    reference.restore_unet(components, base_state)
    timings = Timings()
    difference = float("nan")
    for repeat in range(repeats):
        if repeat % 2:
            run_ours(ours_components, image, config, timings)
        checked = run_reference(components, image, config, timings, check_against_ours=repeat == 0)
        difference = difference if checked is None else checked
        reference.restore_unet(components, base_state)
        if not repeat % 2:
            run_ours(ours_components, image, config, timings)
    return timings, difference


def ratios(timings: Timings, config: BenchConfig) -> list[dict]:
    """Rows per stage and for the whole edit: median seconds of each implementation, the median and min-max of the
    per-repeat ratio ours / reference over n repeats, and the target (whole edit only)."""
    names = {"embed": f"A embed {config.steps_embed}", "finetune": f"B fine-tune full {config.steps_finetune}",
             "sample": f"C sample {len(config.alphas)} alphas x {len(config.seeds)} seeds, DDIM {config.sample_steps}",
             "edit": "whole edit A+B+C"}
    rows = []
    for stage, name in names.items():
        ours, ref = timings.per_repeat("ours", stage), timings.per_repeat("reference", stage)
        per_repeat = [o / r for o, r in zip(ours, ref)]
        ratio = statistics.median(per_repeat)
        target = WHOLE_EDIT_TARGET if stage == "edit" else None
        rows.append({"setting": config.setting, "stage": name, "n": len(per_repeat),
                     "ours_s": statistics.median(ours), "reference_s": statistics.median(ref), "ratio": ratio,
                     "ratio_min": min(per_repeat), "ratio_max": max(per_repeat),
                     "target": "" if target is None else f"<= {target:g}",
                     "met": "" if target is None else ratio <= target})
    return rows
