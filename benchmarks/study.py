"""The cost of a study: a config's Imagic experiment as the workflow runs it ("ours") against the diffusers community
pipeline run once per (pair, variant) ("loop"), in UNet work and, with `--measure`, in wall time.

    python -m benchmarks.study --configfile config/sd15.yaml   # the count: plans (seconds), loads no model
    python -m benchmarks.study --all                            # every shipped config's count
    HF_HUB_OFFLINE=1 python -m benchmarks.study --measure       # the digits default: the count, then both run (minutes)

UNet work is counted in forward-equivalents (FE): one UNet forward on a batch of one latent = 1 FE; a training step
(forward + backward) = `TRAINING_STEP_FE` (a backward ~ 2 forwards; stage A's backward, which reaches only the
embedding, and a LoRA fine-tune's are counted the same); a sampling step on b latents = b FE, 2b under
classifier-free guidance (the unconditional and the conditional rows of one batch). Imagic's stages only: the
config's baselines (SDEdit, LEDITS++, DDIM inversion) are left out of both sides.

* ours: the jobs of the plan (`snakemake --until experiment_plan`'s plan.json, `imagic_steps.plan.plan_record`): one
  embed per embed key; one fine-tune per fine-tune key, except that a shared trajectory's stops train nothing (its
  owner trains to the longest step count and writes theirs on the way); one sample set per sample key, all its seeds
  x alphas. And the preview grids the fine-tune jobs draw (`imagic_steps.finetune`): one every `preview_every` steps
  before the last, one of the finished model, and one of each stop's model (an owner's), each `PREVIEW_ALPHAS` x one
  seed at `preview_steps` with the variant's sampler. A zero-step embed or fine-tune trains nothing.
* loop: per run (pair, variant), benchmarks/reference.py's algorithm: its own stage A (`embed.steps`), its own stage B
  (`finetune.steps`, every weight: the community pipeline has no LoRA), one pipeline call per image (seed x alpha), a
  batch of 2 when guided (`guidance_scale` > 1, the pipeline's test; ours guides when it is not 1), no previews.

Denoising steps per image come from the schedulers themselves: each variant's sampler is built from the model's
scheduler config (as the jobs build it; where the model's files are not on this machine, from the class defaults,
said in the output) and `set_timesteps` gives the steps, as `imagic_steps.sample.denoise` and
`benchmarks.reference.pipeline_call` take them. Ours skips the first `round(init_timestep_rate x steps) x order` of
them; the community pipeline has no such option, so the loop runs, from noise, as many steps as ours denoises
(`loop_denoising_steps`: the same UNet calls at batch 2, not the same images), which is also what `--measure`'s
reference runs.

`--measure` (benchmarks/study_wall_time.py) then runs both on this CPU for a config whose models are local and run
in the reference (the digits default): ours as `snakemake --until sample` on 1 core, the loop in this process at 1
torch thread.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from diffusers import DDPMScheduler

from imagic_steps.finetune import PREVIEW_ALPHAS
from imagic_steps.memory import known_family_name
from imagic_steps.model_folder import local_model_folder
from imagic_steps.plan import BASELINES
from imagic_steps.sample import make_scheduler

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = "config/config.yaml"
SHIPPED_CONFIGS = ("config/config.yaml", "config/sd15.yaml", "config/sdxl.yaml", "config/if.yaml",
                   "config/tiny.yaml", "config/analysis.yaml", "config/tedbench.yaml")
TRAINING_STEP_FE = 3  # a training step: one forward (1 FE) and one backward (~2 forwards)
GUIDED_BATCH_FACTOR = 2  # classifier-free guidance runs the unconditional and the conditional row of each latent
WORK_TARGETS = {"config/sd15.yaml": 0.6}  # the issue's: config/sd15.yaml's study <= 0.6x the loop's UNet work
STAGES = ("A embed", "B fine-tune", "B previews", "C sample")


def config_name(configfile: str) -> str:
    """`configfile` as a path from the repository's root where it lies inside it (the targets' keys)."""
    path = Path(configfile).resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else configfile


def plan_of(configfile: str, results: Path) -> dict[str, Any]:
    """The plan.json of `configfile` planned into `results` (no model is loaded; `--nolock`: it writes only there)."""
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--nolock", "--configfile", configfile,
               "--config", f"results={results}", "--until", "experiment_plan"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"error: planning {configfile} failed:\n{done.stderr[-3000:]}")
    return json.loads((results / "plan.json").read_text())


@dataclass(frozen=True)
class Work:
    """UNet work of one stage: forward-equivalents and steps (training steps in A and B; UNet calls in the previews
    and in C, one per batch and denoising step)."""

    fe: int = 0
    steps: int = 0

    def __add__(self, other: "Work") -> "Work":
        return Work(self.fe + other.fe, self.steps + other.steps)

    def __sub__(self, other: "Work") -> "Work":
        return Work(self.fe - other.fe, self.steps - other.steps)

    def __mul__(self, times: int) -> "Work":
        return Work(self.fe * times, self.steps * times)


def training(steps: int) -> Work:
    """The work of `steps` training steps (each a forward and a backward on one latent)."""
    return Work(TRAINING_STEP_FE * steps, steps)


def sampling(images: int, batch_size: int, calls_per_image: int, guided: bool) -> Work:
    """The work of denoising `images` latents `batch_size` at a time with `calls_per_image` UNet calls each: FE, and
    UNet calls (one per batch and denoising step)."""
    factor = GUIDED_BATCH_FACTOR if guided else 1
    return Work(images * calls_per_image * factor, math.ceil(images / batch_size) * calls_per_image)


class Samplers:
    """Denoising steps per image of each model's samplers, from the scheduler config its jobs load."""

    def __init__(self, models: dict[str, dict[str, Any]]):
        self.base_configs = {}
        self.defaulted = []  # labels of the models whose scheduler config is not on this machine
        for label, block in models.items():
            folder = local_model_folder(block["id"], block.get("revision"))
            if folder is not None and (folder / "scheduler").is_dir():
                self.base_configs[label] = DDPMScheduler.from_pretrained(folder, subfolder="scheduler").config
            else:
                self.base_configs[label] = DDPMScheduler().config
                self.defaulted.append(label)

    def timesteps(self, model: str, scheduler: str, steps: int) -> tuple[int, int]:
        """(the timesteps `set_timesteps(steps)` gives, the scheduler's order) of `model`'s sampler `scheduler`."""
        sampler = make_scheduler(scheduler, self.base_configs[model])
        sampler.set_timesteps(steps)
        return len(sampler.timesteps), sampler.order

    def ours(self, model: str, sample: dict[str, Any], steps: int | None = None) -> int:
        """UNet calls per image of `imagic_steps.sample.denoise` (`steps`: a preview's instead of the variant's)."""
        steps = sample["steps"] if steps is None else steps
        count, order = self.timesteps(model, sample["scheduler"], steps)
        return count - int(round(sample["init_timestep_rate"] * steps)) * order

    def loop(self, model: str, sample: dict[str, Any]) -> int:
        """UNet calls per image of `benchmarks.reference.pipeline_call` at `loop_denoising_steps`."""
        return self.timesteps(model, sample["scheduler"], loop_denoising_steps(sample))[0]


def loop_denoising_steps(sample: dict[str, Any]) -> int:
    """The `steps` the loop's pipeline call is given: the variant's, less the part of the schedule ours skips
    (`init_timestep_rate`, which the community pipeline lacks)."""
    return sample["steps"] - int(round(sample["init_timestep_rate"] * sample["steps"]))


def preview_grids(steps: int, preview_every: int, stops: Sequence[int]) -> int:
    """The preview grids a fine-tune job draws (`imagic_steps.finetune.finetune_unet`, `write_finetune_outputs`): one
    every `preview_every` steps before the last, the finished model's (a zero-step job's: the base model's), and the
    finished grid of each of its trajectory's stops (at these step counts) that falls between two of those (a stop's
    earlier grids, and its last one where the owner drew a grid at that step, are the owner's, linked)."""
    during = (steps - 1) // preview_every if preview_every and steps > 0 else 0
    return during + 1 + sum(1 for stop in stops if not (preview_every and stop % preview_every == 0))


def ours_guided(sample: dict[str, Any]) -> bool:
    """Whether ours samples with classifier-free guidance (`imagic_steps.sample.denoise`'s test)."""
    return sample["guidance_scale"] != 1.0


def loop_guided(sample: dict[str, Any]) -> bool:
    """Whether the loop does (`benchmarks.reference.pipeline_call`'s test, the community pipeline's)."""
    return sample["guidance_scale"] > 1.0


@dataclass(frozen=True)
class StudyWork:
    """Both sides' work per stage (`STAGES`), and the job counts behind ours."""

    ours: dict[str, Work]
    loop: dict[str, Work]
    jobs: dict[str, int]

    def total(self, side: str) -> Work:
        return sum(getattr(self, side).values(), Work())

    def ratio(self) -> float:
        return self.total("ours").fe / self.total("loop").fe


def count_study(plan: dict[str, Any], samplers: Samplers, share_trajectories: bool = True) -> StudyWork:
    """Ours' and the loop's UNet work for `plan`; `share_trajectories=False` counts ours as if every stop of the plan's
    shared trajectories trained in its own job."""
    runs = plan["runs"]
    trajectories = plan["trajectories"] if share_trajectories else []
    stops = {(t["stage"], t["pair_id"], stop["key"]) for t in trajectories for stop in t["stops"]}
    stop_steps = {(t["pair_id"], t["owner_key"]): [stop["steps"] for stop in t["stops"]]
                  for t in trajectories if t["stage"] == "finetune"}
    embeds = {(r["pair_id"], r["embed_key"]): r for r in runs}
    finetunes = {(r["pair_id"], r["finetune_key"]): r for r in runs}  # the last run stands for the job (plan.py)
    sample_sets = {(r["pair_id"], r["sample_key"]): r for r in runs}
    ours = dict.fromkeys(STAGES, Work())
    for job, run in embeds.items():
        if ("embed", *job) not in stops:  # a stop's owner wrote its files: the job moves them into place
            ours["A embed"] += training(run["variant"]["embed"]["steps"])
    for job, run in finetunes.items():
        if ("finetune", *job) in stops:
            continue
        finetune, sample = run["variant"]["finetune"], run["variant"]["sample"]
        ours["B fine-tune"] += training(finetune["steps"])
        grids = preview_grids(finetune["steps"], finetune["preview_every"], stop_steps.get(job, []))
        calls = samplers.ours(run["model"], sample, finetune["preview_steps"])
        ours["B previews"] += sampling(len(PREVIEW_ALPHAS), sample["batch_size"], calls, ours_guided(sample)) * grids
    per_alpha = plan["config"]["sample_jobs"] == "per_alpha"
    for run in sample_sets.values():
        sample, seeds, alphas = run["variant"]["sample"], len(plan["seeds"]), len(run["variant"]["alphas"])
        calls = samplers.ours(run["model"], sample)
        images_per_job = [seeds] * alphas if per_alpha else [seeds * alphas]  # one job per alpha, or one per set
        for images in images_per_job:
            ours["C sample"] += sampling(images, sample["batch_size"], calls, ours_guided(sample))
    loop = dict.fromkeys(STAGES, Work())
    for run in runs:
        variant = run["variant"]
        loop["A embed"] += training(variant["embed"]["steps"])
        loop["B fine-tune"] += training(variant["finetune"]["steps"])
        loop["C sample"] += sampling(len(plan["seeds"]) * len(variant["alphas"]), 1,
                                     samplers.loop(run["model"], variant["sample"]), loop_guided(variant["sample"]))
    finetune_stops = sum(1 for stage, *_ in stops if stage == "finetune")
    jobs = {"embed": len(embeds) - (len(stops) - finetune_stops), "fine-tune": len(finetunes) - finetune_stops,
            "stops": len(stops),
            "sample sets": len(sample_sets), "runs": len(runs)}
    return StudyWork(ours, loop, jobs)


def notes(plan: dict[str, Any], samplers: Samplers) -> list[str]:
    """What the count assumes for this plan, one line each."""
    lines = []
    baselines = [name for name in BASELINES if plan.get(name)]
    lines.append(f"baselines not counted ({', '.join(baselines)}): Imagic's stages only" if baselines
                 else "no baselines in this config")
    for label in samplers.defaulted:
        lines.append(f"{label}: its scheduler config is not on this machine; denoising steps counted with the "
                     "samplers' class defaults")
    variants = {run["variant"]["name"]: (run["model"], run["variant"]) for run in plan["runs"]}
    for name, (model, variant) in variants.items():
        sample = variant["sample"]
        if sample["init_timestep_rate"] > 0:
            lines.append(f"{name}: init_timestep_rate {sample['init_timestep_rate']:g}: ours denoises "
                         f"{samplers.ours(model, sample)} of {sample['scheduler']}'s {sample['steps']} steps from the "
                         f"noised input; the community pipeline has no such option: the loop denoises "
                         f"{loop_denoising_steps(sample)} from noise (the same UNet calls, not the same images)")
        if variant["finetune"]["mode"] == "lora" and variant["finetune"]["steps"]:
            lines.append(f"{name}: a LoRA fine-tune; the loop fine-tunes every weight (the community pipeline "
                         "has no LoRA); a training step is counted the same on both sides")
    for label, block in plan["models"].items():
        family = known_family_name(block["id"], block.get("revision"))
        if family not in ("sd", None):
            lines.append(f"{label}: a model of the {family} family; the community pipeline is Stable Diffusion's: the "
                         "loop is its algorithm counted on this model")
    return lines


def format_count(configfile: str, plan: dict[str, Any], samplers: Samplers) -> str:
    """The printed count of one config: its runs and jobs, the per-stage table (Markdown), the ratio without shared
    trajectories, the target and the notes."""
    work = count_study(plan, samplers)
    unshared = count_study(plan, samplers, share_trajectories=False)
    runs, jobs = plan["runs"], work.jobs
    variants = sorted({run["variant"]["name"] for run in runs})
    alphas = sorted({len(run["variant"]["alphas"]) for run in runs})
    batch = sorted({run["variant"]["sample"]["batch_size"] for run in runs})
    calls = sum(len(plan["seeds"]) * len(run["variant"]["alphas"]) for run in runs)
    lines = [
        f"{configfile}: {len(plan['pairs'])} pair(s) x {len(variants)} variant(s) = {len(runs)} runs on "
        f"{', '.join(plan['models'])}; {len(plan['seeds'])} seed(s) x {'/'.join(map(str, alphas))} alpha(s) a run",
        f"ours: {jobs['embed']} embed jobs, {jobs['fine-tune']} fine-tune jobs that train ({jobs['stops']} stops of "
        f"shared trajectories train nothing), {jobs['sample sets']} sample sets ({plan['config']['sample_jobs']}, "
        f"batch {'/'.join(map(str, batch))})",
        f"loop: the community pipeline once per run: {len(runs)} embeds, {len(runs)} fine-tunes, {calls} pipeline "
        "calls (one per image)",
        "",
        "| stage | ours FE | loop FE | ours / loop | ours steps | loop steps |",
        "|---|---|---|---|---|---|",
    ]
    for stage in STAGES:
        ours, loop = work.ours[stage], work.loop[stage]
        ratio = f"{ours.fe / loop.fe:.3f}" if loop.fe else "-"
        lines.append(f"| {stage} | {ours.fe:,} | {loop.fe:,} | {ratio} | {ours.steps:,} | {loop.steps:,} |")
    lines.append(f"| **total** | {work.total('ours').fe:,} | {work.total('loop').fe:,} | **{work.ratio():.3f}** | "
                 "| |")
    saved = sum(unshared.ours[stage].steps - work.ours[stage].steps for stage in ("A embed", "B fine-tune"))
    without_previews = work.total("ours").fe - work.ours["B previews"].fe
    lines += [
        "",
        f"steps: training steps in A and B, UNet calls in the previews and C. FE: a UNet forward on one latent = 1; "
        f"a training step = {TRAINING_STEP_FE} (forward + backward ~ 2 forwards); a sampling step on b latents = b, "
        f"{GUIDED_BATCH_FACTOR}b guided.",
        f"without shared trajectories ours would train {saved:,} more steps in A and B (the stops') and draw "
        f"{unshared.ours['B previews'].fe - work.ours['B previews'].fe:+,} FE of previews: total "
        f"{unshared.total('ours').fe:,} FE, {unshared.ratio():.3f} of the loop.",
        f"without ours' previews (the loop draws none): {without_previews:,} FE, "
        f"{without_previews / work.total('loop').fe:.3f} of the loop.",
    ]
    target = WORK_TARGETS.get(config_name(configfile))
    if target is not None:
        met = "met" if work.ratio() <= target else "not met"
        lines.append(f"target (the issue's, for {config_name(configfile)}): ours / loop <= {target:g}: {met}.")
    lines += [f"note: {line}" for line in notes(plan, samplers)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--configfile", default=DEFAULT_CONFIG, help=f"the config to count (default {DEFAULT_CONFIG})")
    which.add_argument("--all", action="store_true", help="count every shipped config")
    parser.add_argument("--measure", action="store_true",
                        help="also run both on this CPU and print their wall time (minutes; local models only)")
    parser.add_argument("--repeats", type=int, default=1, help="with --measure: runs of each, alternating order")
    args = parser.parse_args(argv)
    if args.all and args.measure:
        parser.error("--measure runs one config: give --configfile")
    for configfile in SHIPPED_CONFIGS if args.all else [args.configfile]:
        with tempfile.TemporaryDirectory(prefix="study-plan-") as folder:
            plan = plan_of(configfile, Path(folder) / "results")
        samplers = Samplers(plan["models"])
        print(format_count(configfile, plan, samplers), end="\n\n", flush=True)
    if args.measure:
        from .study_wall_time import format_measured, measure

        print(format_measured(args.configfile, measure(args.configfile, plan, args.repeats)))


if __name__ == "__main__":
    main()
