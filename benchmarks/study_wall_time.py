"""Wall time of a study on this machine: the workflow's Imagic jobs against the community pipeline looped over the
study's runs (`python -m benchmarks.study --measure`; the count it goes with is benchmarks/study.py's).

* ours: `snakemake --cores 1 --configfile X --config results=NEW --until sample`, from the repository, into a new
  results folder: the jobs of rule sample and what they need (rules embed and finetune), nothing else (the baselines,
  scores and figures are no dependencies of rule sample), with the config's defaults (the warm worker included).
  Timed: the command's wall time, `time.perf_counter` around it (planning, the worker's imports, every job's start,
  model load and work), and the sum of each rule's job wall times (their `benchmark:` files);
* loop: benchmarks/reference.py's stages for every run of the plan, in this process at 1 torch thread: each model
  loaded once (timed), then per run stage A, stage B in place and stage C (one pipeline call per image), each timed;
  the in-place fine-tune undone after each run, untimed (`reference.restore_unet`, as benchmarks/compare.py does).
  Its imports are not timed, ours' are (in the warm worker): that favours the loop. Stages A and B add noise with the
  community example's DDIM scheduler (as compare.py); stage C samples with the variant's scheduler for
  `study.loop_denoising_steps` steps at the variant's resolution.

Each repeat runs both, one after the other, alternating which goes first; the ratio is taken per repeat (ours /
loop of the same repeat) and reported as the median with its min-max. Times in seconds.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imagic_steps.images import load_image, pil_to_tensor
from imagic_steps.memory import known_family_name
from imagic_steps.model_folder import local_model_folder
from imagic_steps.model_loading import load_components
from imagic_steps.sample import make_scheduler

from . import reference
from .common import set_threads, timed
from .main_job import log_span_and_loads
from .study import REPO_ROOT, config_name, loop_denoising_steps

IMAGIC_RULES = ("embed", "finetune", "sample")  # the workflow's Imagic rules; the loop's stages go by their names
TRAINING_SCHEDULER = "DDIMScheduler"  # the community example's scheduler, whose add_noise stages A and B use
MEASURED_TARGETS = {"config/config.yaml": 0.6}  # the issue's: the digits default's wall time <= 0.6x the loop's


@dataclass(frozen=True)
class JobTimes:
    """Seconds summed over one rule's jobs: their wall (`benchmark:` files), of which their start (wall less the job
    log's span: Python, Snakemake's preamble, the hand-over to the warm worker) and their model loads (the logs')."""

    wall: float
    start: float
    loads: float


@dataclass(frozen=True)
class Repeat:
    """One repeat's seconds: ours' command, and per rule its jobs' wall, job starts (wall less the job log's span) and
    model loads; the loop in all and per stage, and its model loads; the machine's 1-minute load average before each
    side started."""

    ours_wall: float
    ours_jobs: dict[str, JobTimes]
    loop_wall: float
    loop_stages: dict[str, float]
    loop_loads: float
    load_before: dict[str, float]

    @property
    def ratio(self) -> float:
        return self.ours_wall / self.loop_wall


def reference_problem(plan: dict[str, Any]) -> str | None:
    """Why the reference cannot run this plan's models here (None: it can): the model's files must be on this
    machine, a Stable Diffusion latent model predicting the noise (the community pipeline's), loaded in fp32 (the
    reference trains in the dtype it loads, as the community pipeline does)."""
    for label, block in plan["models"].items():
        folder = local_model_folder(block["id"], block.get("revision"))
        if folder is None:
            return f"model {label}: its files are not on this machine"
        if known_family_name(block["id"], block.get("revision")) != "sd":
            return f"model {label}: not a Stable Diffusion model (the community pipeline's family)"
        if block["dtype"] != "fp32":
            return f"model {label}: dtype {block['dtype']} (the reference trains in its load dtype: fp32 only)"
    return None


def time_workflow(configfile: str) -> tuple[float, dict[str, JobTimes]]:
    """Ours' Imagic jobs on 1 core into a new results folder: (the command's wall s, {rule: its jobs' times})."""
    with tempfile.TemporaryDirectory(prefix="study-ours-") as folder:
        results = Path(folder) / "results"
        command = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", configfile,
                   "--config", f"results={results}", "--until", "sample"]
        environment = {**os.environ, "OMP_NUM_THREADS": "1"}
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, env=environment)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"error: {' '.join(command[2:])} failed:\n{done.stderr[-3000:]}")
        jobs = {rule: rule_times(results, rule) for rule in IMAGIC_RULES}
    return wall, jobs


def rule_times(results: Path, rule: str) -> JobTimes:
    wall = sum(float(path.read_text().splitlines()[1].split("\t")[0])
               for path in (results / "benchmark" / rule).rglob("*.tsv"))
    spans, loads = zip(*(log_span_and_loads(path) for path in (results / "logs" / rule).rglob("*.log")))
    return JobTimes(wall, wall - sum(spans), sum(loads))


def time_loop(plan: dict[str, Any]) -> tuple[float, dict[str, float], float]:
    """The reference over every run of `plan` at 1 torch thread: (wall s less the untimed restores, {stage: s},
    model loading s)."""
    set_threads(1)
    pairs = {pair["pair_id"]: pair for pair in plan["pairs"]}
    runs_of = defaultdict(list)
    for run in plan["runs"]:
        runs_of[run["model"]].append(run)
    stages = dict.fromkeys(IMAGIC_RULES, 0.0)
    loads = 0.0
    for label, runs in runs_of.items():
        block = plan["models"][label]
        components, seconds = timed(lambda: load_components(block["id"], revision=block.get("revision"),
                                                            device=block["device"], dtype=block["dtype"]),
                                    torch.device(block["device"]))
        loads += seconds
        base_state = {name: tensor.clone() for name, tensor in components.unet.state_dict().items()}
        for run in runs:
            for stage, seconds in loop_run(components, pairs[run["pair_id"]], run["variant"], plan["seeds"]).items():
                stages[stage] += seconds
            reference.restore_unet(components, base_state)
    return loads + sum(stages.values()), stages, loads


def loop_run(components, pair: dict[str, Any], variant: dict[str, Any], seeds: list[int]) -> dict[str, float]:
    """One run of the community pipeline: its own stage A, stage B in place, one call per image; seconds per stage."""
    embed, finetune, sample = variant["embed"], variant["finetune"], variant["sample"]
    device = components.device
    resolution = variant["resolution"]
    image = pil_to_tensor(load_image(str(REPO_ROOT / pair["image"]), resolution or components.resolution))
    training_scheduler = make_scheduler(TRAINING_SCHEDULER, components.scheduler.config)
    sampler = make_scheduler(sample["scheduler"], components.scheduler.config)
    torch.manual_seed(embed["seed"])  # the global RNG the community loops draw from
    generator = torch.Generator(device).manual_seed(embed["seed"])
    seconds = {}
    (target, optimized, latents), seconds["embed"] = timed(lambda: reference.optimize_embedding(
        components, training_scheduler, image, pair["prompt"], embed["steps"], embed["lr"], generator), device)
    _, seconds["finetune"] = timed(lambda: reference.finetune_in_place(
        components, training_scheduler, latents, optimized, finetune["steps"], finetune["lr"]), device)
    _, seconds["sample"] = timed(lambda: reference.sample_alphas(
        components, sampler, target, optimized, variant["alphas"], seeds, loop_denoising_steps(sample),
        sample["guidance_scale"], sample["eta"], resolution), device)
    return seconds


def measure(configfile: str, plan: dict[str, Any], repeats: int) -> list[Repeat]:
    """`repeats` runs of ours and of the loop, alternating which goes first."""
    problem = reference_problem(plan)
    if problem is not None:
        sys.exit(f"error: --measure: the reference cannot run {configfile} here: {problem}")
    measured = []
    for repeat in range(repeats):
        load_before, results = {}, {}
        for side in ("ours", "loop") if repeat % 2 == 0 else ("loop", "ours"):
            load_before[side] = os.getloadavg()[0]
            results[side] = time_workflow(configfile) if side == "ours" else time_loop(plan)
        (ours_wall, ours_jobs), (loop_wall, loop_stages, loop_loads) = results["ours"], results["loop"]
        measured.append(Repeat(ours_wall, ours_jobs, loop_wall, loop_stages, loop_loads, load_before))
    return measured


def format_measured(configfile: str, measured: list[Repeat]) -> str:
    """The measured table (Markdown): per stage the medians of ours' jobs (and of their starts and model loads) and
    of the loop's stages; then the whole study's wall time with the per-repeat ratio, the target and the machine's
    load."""
    def median(values) -> float:
        return statistics.median(list(values))

    ratios = [repeat.ratio for repeat in measured]
    lines = [
        f"measured: {configfile}, {len(measured)} repeat(s) alternating which goes first; seconds, medians",
        "",
        "| stage | ours: jobs' wall | of which job starts | of which model loads | loop | ours / loop |",
        "|---|---|---|---|---|---|",
    ]
    for rule, stage in zip(IMAGIC_RULES, ("A embed", "B fine-tune (ours with its previews)", "C sample")):
        jobs = [repeat.ours_jobs[rule] for repeat in measured]
        wall, loop = median(job.wall for job in jobs), median(repeat.loop_stages[rule] for repeat in measured)
        lines.append(f"| {stage} | {wall:.1f} | {median(job.start for job in jobs):.1f} | "
                     f"{median(job.loads for job in jobs):.1f} | {loop:.1f} | {wall / loop:.2f} |")
    ours_wall, loop_wall = median(r.ours_wall for r in measured), median(r.loop_wall for r in measured)
    lines += [
        f"| loop's model loads | | | | {median(r.loop_loads for r in measured):.1f} | |",
        f"| **whole study** (ours: the snakemake command; loop: its loads and stages) | {ours_wall:.1f} | | | "
        f"{loop_wall:.1f} | **{median(ratios):.2f}** ({min(ratios):.2f}-{max(ratios):.2f}, n = {len(ratios)}) |",
        "",
        "load average (1 min) before each side: " + "; ".join(
            f"repeat {index + 1}: " + ", ".join(f"{side} {load:.2f}" for side, load in repeat.load_before.items())
            for index, repeat in enumerate(measured)),
    ]
    target = MEASURED_TARGETS.get(config_name(configfile))
    if target is not None:
        met = "met" if median(ratios) <= target else "not met"
        lines.append(f"target (the issue's, for {config_name(configfile)}): whole study ours / loop <= {target:g}: "
                     f"{met}.")
    return "\n".join(lines)
