"""The first GPU machine's check, in one command of at most 10 minutes on one H100-class GPU.

    python -m benchmarks.gpu_check                     # CUDA: sd15-shaped at 512 px
    python -m benchmarks.gpu_check --dry-run           # the same check on the CPU with the tiny model (< 1 min)

On `sd15-shaped` (SD-1.5's exact architecture with seeded random weights, built offline on first use: a step costs
what SD-1.5's does) at 512 px with the `original` preset's per-step costs (its learning rates, DDIM with guidance
7.5, fp32 weights), a few steps of each stage, ours against the faithful reference (`benchmarks.reference`, the
community pipeline's algorithm) in one process:

* A embed, B fine-tune full and LoRA (the reference has only full: LoRA is set against it), C sample 8 alphas x
  1 seed: seconds per step, each stage run twice (`--steps` S and 3S steps, after an untimed S-step warm-up), CUDA
  synchronised around each timing; per step = (t(3S) - t(S)) / 2S, so one-off set-up (encoding, copying the UNet,
  decoding) is left out and reported apart;
* the peak GPU memory of each stage (`torch.cuda.max_memory_allocated`, the model's resident weights included)
  against `imagic_steps.memory`'s estimate (`stage_estimate`, through `benchmarks.stage_worker`'s
  `estimated_peak_bytes`);
* C's 8-alpha / 1-alpha cost per DDIM step (ours denoises the 8 in one batch, the reference in 8 calls);
* B with fp16 autocast against fp32 (per step, peak memory, the losses);
* the whole edit projected to the `original` preset's 500 / 1000 / 50 steps, ours / reference.

Everything printed is also written as JSON (`--out`). `--dry-run` runs all of it on the CPU with the tiny model
(bf16 autocast stands in for fp16, which needs CUDA; CPU peak memory is the process's RSS high-water mark, not
one stage's). Runs from a checkout without `pip install -e .`: benchmarks/README.md, "The first GPU machine".
TF32 is left at torch's defaults on both sides, as in `benchmarks.run`.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import torch

from imagic_steps.embed import optimize_embedding
from imagic_steps.finetune import finetune_unet, trainable_unet
from imagic_steps.io import write_json
from imagic_steps.sample import make_scheduler, sample_alphas
from imagic_steps.variants import EmbedParams, FinetuneParams

from . import reference
from .common import MIB, REPO_ROOT, BenchConfig, PeakMemory, bench_settings, load_model_and_image, timed
from .compare import WHOLE_EDIT_TARGET
from .stage_worker import estimated_peak_bytes

GPU_MODEL, GPU_RESOLUTION = "sd15-shaped", 512
DRY_MODEL = "tiny"
ALPHAS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4)  # 8 samples in one batch (the default config's 4 x 2 seeds)
SECTIONS = ("A embed", "B fine-tune full", "B fine-tune LoRA", "C sample", "Peak memory against the estimate",
            "C: 8 alphas against 1", "B: fp16 autocast against fp32", "Whole edit at the original preset's steps")


def check_config(dry_run: bool, model: str | None, resolution: int | None) -> BenchConfig:
    """The `original` setting of `benchmarks.run` (its learning rates, sampler and guidance) on the check's model:
    sd15-shaped at 512 px on CUDA, or the tiny model at its native side on the CPU; 8 alphas x 1 seed."""
    original = bench_settings()["original"]
    if dry_run:
        return replace(original, model=model or DRY_MODEL, device="cpu", resolution=resolution, alphas=ALPHAS,
                       seeds=(0,))
    return replace(original, model=model or GPU_MODEL, device="cuda", resolution=resolution or GPU_RESOLUTION,
                   alphas=ALPHAS, seeds=(0,))


def free(device: torch.device) -> None:
    """Drop what the last run left (its UNet copies, optimiser states) before the next is measured."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Check:
    """The model, the input, the stage inputs (e_tgt / e_opt, latents) and what has been measured so far."""

    def __init__(self, config: BenchConfig, steps: int, autocast: str):
        self.config, self.steps, self.autocast = config, steps, autocast
        start = time.perf_counter()
        self.components, self.image = load_model_and_image(config)
        self.load_s = time.perf_counter() - start
        self.device = self.components.device
        # the reference pipeline's scheduler (DDIM), used by its training and sampling alike
        self.scheduler = make_scheduler(config.scheduler, self.components.scheduler.config)
        self.embed = optimize_embedding(self.components, self.image, config.prompt,
                                        EmbedParams(steps=0, seed=config.seed), progress=False)  # e_opt = e_tgt
        self.base_state = {name: tensor.detach().to("cpu", copy=True)
                           for name, tensor in self.components.unet.state_dict().items()}
        self.results: dict[str, dict[str, Any]] = {}

    def per_step(self, name: str, run: Callable[[int], Any], estimate: int | None = None,
                 after: Callable[[Any], None] | None = None) -> dict[str, Any]:
        """`run(n)` (a stage of n steps) after an untimed warm-up, at S and 3S steps: seconds per step, the
        one-off rest, the peak memory of the longer run and its estimate; `after(result)` undoes a run (untimed)."""
        short, long = self.steps, 3 * self.steps
        seconds = {}
        for steps in (short, short, long):  # the first: warm-up (kernels, allocator, cuDNN's algorithm choice)
            free(self.device)
            with PeakMemory(self.device) as memory:
                result, seconds[steps] = timed(lambda: run(steps), self.device)
            if after is not None:
                after(result)
            losses = getattr(result, "losses", None)
            del result  # before the next run: a fine-tune's UNet copy must not count in its peak
        per_step = (seconds[long] - seconds[short]) / (long - short)
        row = {"stage": name, "steps": [short, long], "seconds": [seconds[short], seconds[long]],
               "s_per_step": per_step, "one_off_s": max(seconds[short] - short * per_step, 0.0),
               "peak_bytes": memory.peak, "memory_kind": memory.kind, "estimated_peak_bytes": estimate,
               "losses": losses}
        self.results[name] = row
        return row

    def estimate(self, stage: str, config: BenchConfig | None = None) -> int | None:
        return estimated_peak_bytes(stage, config or self.config, self.device.type)

    # ---- the stages, ours and the reference's ------------------------------------------------------------------
    def embed_ours(self, steps: int):
        return optimize_embedding(self.components, self.image, self.config.prompt,
                                  replace(self.config.embed_params(), steps=steps), progress=False)

    def embed_reference(self, steps: int):
        generator = torch.Generator(self.device).manual_seed(self.config.seed)
        return reference.optimize_embedding(self.components, self.scheduler, self.image, self.config.prompt, steps,
                                            self.config.embed_lr, generator)

    def finetune_ours(self, mode: str, mixed_precision: str = "no") -> Callable[[int], Any]:
        params = replace(self.config.finetune_params(mode), mixed_precision=mixed_precision)
        return lambda steps: finetune_unet(self.components, self.embed, replace(params, steps=steps), progress=False)

    def finetune_reference(self, steps: int):
        return reference.finetune_in_place(self.components, self.scheduler, self.embed.image_latents,
                                           self.embed.optimized_embedding, steps, self.config.finetune_lr)

    def restore(self, _result) -> None:
        reference.restore_unet(self.components, self.base_state)  # the reference fine-tunes the loaded UNet

    def sample_ours(self, unet, alphas) -> Callable[[int], Any]:
        config = self.config
        return lambda steps: sample_alphas(
            self.components, unet, self.embed.target_embedding, self.embed.optimized_embedding, alphas, config.seeds,
            replace(config.sample_params(), steps=steps, batch_size=len(alphas) * len(config.seeds)),
            height=config.resolution, width=config.resolution, progress=False)

    def sample_reference(self, unet, alphas) -> Callable[[int], Any]:
        config = self.config
        components = replace(self.components, unet=unet)
        return lambda steps: reference.sample_alphas(
            components, self.scheduler, self.embed.target_embedding, self.embed.optimized_embedding, alphas,
            config.seeds, steps, config.guidance_scale, config.eta, config.resolution)


def ms(seconds: float) -> str:
    return f"{1000 * seconds:9.1f}"


def mib(value: int | None) -> str:
    return "        -" if value is None else f"{value / MIB:9.0f}"


def ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def section(title: str, lines: list[str]) -> list[str]:
    return ["", f"== {title}", *lines]


def emit(lines: list[str], printed: list[str]) -> None:
    """Print `lines` now (a run cut short still shows what it measured) and keep them in `printed`."""
    for line in lines:
        print(line, flush=True)
    printed.extend(lines)


def stage_lines(rows: list[dict], against: dict | None) -> list[str]:
    """Per-step and one-off cost of each row; the ratio to `against` (the reference's row) when given."""
    lines = ["   implementation                 ms/step   one-off s   ours/reference"]
    for row in rows:
        versus = "" if against is None or row is against else f"{ratio(row['s_per_step'], against['s_per_step']):8.2f}"
        lines.append(f"   {row['stage']:<28}{ms(row['s_per_step'])}   {row['one_off_s']:9.2f}   {versus}")
    return lines


def run_check(config: BenchConfig, steps: int, autocast: str) -> tuple[list[str], dict[str, Any]]:
    """Every measurement of the check, printed as it comes; returns the printed lines and the JSON record."""
    lines: list[str] = []
    check = Check(config, steps, autocast)
    device = check.device
    emit([f"gpu_check: {describe_device(device)}; model {config.model} at "
          f"{config.resolution or check.components.resolution} px, {config.dtype} weights, loaded (built on first "
          f"use) in {check.load_s:.1f} s; the original preset's per-step costs (embed lr {config.embed_lr:g}, "
          f"fine-tune lr {config.finetune_lr:g}, {config.scheduler} guidance {config.guidance_scale:g}, "
          f"{len(config.alphas)} alphas x {len(config.seeds)} seed); each stage {steps} steps (warm-up), {steps} and "
          f"{3 * steps}, per step = the difference"]
         + (["(CPU dry run: the check's mechanics on the tiny model; its figures say nothing about a GPU)"]
            if device.type == "cpu" else []), lines)

    ours_a = check.per_step("ours A", check.embed_ours, check.estimate("embed"))
    ref_a = check.per_step("reference A", check.embed_reference)
    emit(section(SECTIONS[0], stage_lines([ours_a, ref_a], ref_a)), lines)

    ref_b = check.per_step("reference B full", check.finetune_reference, after=check.restore)
    ours_b = check.per_step("ours B full", check.finetune_ours("full"), check.estimate("finetune-full"))
    emit(section(SECTIONS[1], stage_lines([ours_b, ref_b], ref_b)), lines)
    ours_lora = check.per_step("ours B LoRA", check.finetune_ours("lora"), check.estimate("finetune-lora"))
    emit(section(SECTIONS[2], stage_lines([ours_lora, ref_b], ref_b)
                 + ["   (the reference has no LoRA: set against its full fine-tune)"]), lines)

    unet = trainable_unet(check.components.unet, FinetuneParams()).eval()  # what stage C gets from a full B
    ours_c = check.per_step("ours C 8 alphas", check.sample_ours(unet, config.alphas), check.estimate("sample"))
    ref_c = check.per_step("reference C 8 alphas", check.sample_reference(unet, config.alphas))
    ours_c1 = check.per_step("ours C 1 alpha", check.sample_ours(unet, config.alphas[:1]))
    ref_c1 = check.per_step("reference C 1 alpha", check.sample_reference(unet, config.alphas[:1]))
    del unet
    emit(section(SECTIONS[3], stage_lines([ours_c, ref_c], ref_c)
                 + [f"   (a step: one DDIM step of all {len(config.alphas)} samples; one-off: encoding, decoding)"]),
         lines)

    mixed = replace(config, mixed_precision=autocast)
    ours_b16 = check.per_step(f"ours B full {autocast} autocast", check.finetune_ours("full", autocast),
                              check.estimate("finetune-full", mixed))
    free(device)

    memory_rows = [ours_a, ref_a, ours_b, ref_b, ours_lora, ours_b16, ours_c, ref_c]
    memory = ["   stage                              peak MiB  estimate MiB  peak/estimate"]
    for row in memory_rows:
        estimate = row["estimated_peak_bytes"]
        share = "" if estimate is None else f"{ratio(row['peak_bytes'], estimate):13.2f}"
        memory.append(f"   {row['stage']:<33}{mib(row['peak_bytes'])}     {mib(estimate)}  {share}")
    memory.append("   (" + ("torch.cuda.max_memory_allocated over each stage's longer run, resident weights included"
                           if device.type == "cuda" else "CPU dry run: the process's RSS high-water mark, which "
                           "never goes down: not one stage's peak") + "; the reference's stages have no estimate)")
    emit(section(SECTIONS[4], memory), lines)

    emit(section(SECTIONS[5], [
        f"   ours      8 alphas / 1 alpha per DDIM step: {ratio(ours_c['s_per_step'], ours_c1['s_per_step']):6.2f}"
        f"   ({ms(ours_c1['s_per_step']).strip()} -> {ms(ours_c['s_per_step']).strip()} ms; one batch)",
        f"   reference 8 alphas / 1 alpha per DDIM step: {ratio(ref_c['s_per_step'], ref_c1['s_per_step']):6.2f}"
        f"   ({ms(ref_c1['s_per_step']).strip()} -> {ms(ref_c['s_per_step']).strip()} ms; 8 calls)"]), lines)

    last = {name: row["losses"][-1] if row["losses"] else math.nan for name, row in
            (("fp32", ours_b), (autocast, ours_b16))}
    emit(section(SECTIONS[6], [
        f"   {autocast} autocast / fp32 per step: {ratio(ours_b16['s_per_step'], ours_b['s_per_step']):.2f} "
        f"({ms(ours_b['s_per_step']).strip()} -> {ms(ours_b16['s_per_step']).strip()} ms); peak "
        f"{mib(ours_b['peak_bytes']).strip()} -> {mib(ours_b16['peak_bytes']).strip()} MiB; last loss fp32 "
        f"{last['fp32']:.4g}, {autocast} {last[autocast]:.4g} (finite: "
        f"{all(math.isfinite(v) for v in last.values())})"]
        + (["   (CPU dry run: bf16 stands in for fp16, whose gradient scaler needs CUDA)"] if autocast != "fp16"
           else [])), lines)

    preset = {"A": config.steps_embed, "B": config.steps_finetune, "C": config.sample_steps}

    def edit_seconds(a, b, c):
        return sum(row["s_per_step"] * preset[stage] + row["one_off_s"] for stage, row in zip("ABC", (a, b, c)))

    reference_edit = edit_seconds(ref_a, ref_b, ref_c)
    projections = {"ours, B fp32": edit_seconds(ours_a, ours_b, ours_c),
                   f"ours, B {autocast} autocast": edit_seconds(ours_a, ours_b16, ours_c),
                   "ours, B LoRA": edit_seconds(ours_a, ours_lora, ours_c)}
    emit(section(SECTIONS[7], [f"   A {preset['A']} + B {preset['B']} + C {preset['C']} steps ({len(config.alphas)} "
                               f"samples), per-step costs above: reference {reference_edit:.1f} s"]
                 + [f"   {name:<28}{seconds:8.1f} s   ours/reference {ratio(seconds, reference_edit):.2f} "
                    f"(target <= {WHOLE_EDIT_TARGET:g})" for name, seconds in projections.items()]), lines)
    record = {"config": asdict(config), "device": describe_device(device), "steps": [steps, 3 * steps],
              "autocast": autocast, "load_s": check.load_s, "stages": list(check.results.values()),
              "projected_edit_s": {"reference": reference_edit, **projections}, "versions": versions()}
    return lines, record


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return (f"cuda ({torch.cuda.get_device_name(device)}), TF32 matmul "
                f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'} / cuDNN "
                f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'}")
    return f"cpu ({torch.get_num_threads()} torch threads)"


def versions() -> dict[str, str]:
    """The packages' versions, and where imagic_steps was imported from (the checkout, without an install)."""
    import diffusers
    import transformers

    import imagic_steps

    found = {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
             "transformers": transformers.__version__, "imagic_steps_from": str(Path(imagic_steps.__file__).parent)}
    try:
        import peft

        found["peft"] = peft.__version__
    except ImportError:
        pass
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the whole check on the CPU with the tiny model")
    parser.add_argument("--steps", type=int, default=None,
                        help="S: each stage runs S (warm-up), S and 3S steps (default 5 on CUDA, 2 dry)")
    parser.add_argument("--model", help=f"override the model (default {GPU_MODEL}; dry run {DRY_MODEL})")
    parser.add_argument("--resolution", type=int, help=f"override the side in px (default {GPU_RESOLUTION}; "
                                                       "dry run: the model's native side)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "out" / "gpu_check.json")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        parser.error("no CUDA device: run on the GPU machine, or give --dry-run for the CPU rehearsal")
    start = time.perf_counter()
    config = check_config(args.dry_run, args.model, args.resolution)
    steps = args.steps or (2 if args.dry_run else 5)
    _, record = run_check(config, steps, "bf16" if args.dry_run else "fp16")
    record["wall_s"] = time.perf_counter() - start
    write_json(args.out, json.loads(json.dumps(record, default=str)))
    print(f"\ngpu_check done in {record['wall_s']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
