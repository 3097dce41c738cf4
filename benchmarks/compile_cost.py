"""Does torch.compile pay within one job? Its one-off cost against its per-step saving, stages A and B.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python -m benchmarks.compile_cost [--settings digits original] [--steps 60]

For each setting (benchmarks.common.bench_settings) two fresh processes run one after the other with one new, empty
inductor cache folder: the first compiles with a cold cache (the first job on a machine), the second finds the
first's kernels and graphs on disk (every later job: the workflow starts each job afresh or forks it from a warm
worker that has compiled nothing). Each process runs stage A (`optimize_embedding`) and stage B (`finetune_unet`,
full) for `--steps` steps, eager and then with `compile_unet` (the package's `model.compile`), timing the start
of every step (the stage's per-step noise draw).

Per run: `steady ms/step` is the median step after the first two, `one-off s` is the run's wall time minus
steps x steady (for the compiled run: dynamo tracing, AOTAutograd, inductor codegen or its cache look-up, and
the first calls; for eager: the first calls). A job of n steps pays off compiling when
    compiled one-off + n x compiled steady < eager one-off + n x eager steady,
so the break-even is n* = (compiled one-off - eager one-off) / (eager steady - compiled steady) steps, and never
(inf) when compiled steps are not faster. The table sets n* against the setting's own steps (the default run's
200 / 150 at `digits`, the `original` preset's 500 / 1000 on the tiny model).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from tabulate import tabulate

from .common import REPO_ROOT, BenchConfig, bench_settings, json_from_subprocess, load_model_and_image, set_threads

STAGE_MODULES = {"A embed": "embed", "B fine-tune full": "finetune"}  # imagic_steps.<module> draws once a step


class StepClock:
    """Records the start of every step of a stage by wrapping the draw that opens each step (eager code, outside
    anything torch.compile traces)."""

    def __init__(self, module: str):
        import importlib

        self.module = importlib.import_module(f"imagic_steps.{module}")
        self.starts: list[float] = []

    def __enter__(self) -> "StepClock":
        self.original = self.module.draw_noise_and_timesteps

        def timed_draw(*args, **kwargs):
            self.starts.append(time.perf_counter())
            return self.original(*args, **kwargs)

        self.module.draw_noise_and_timesteps = timed_draw
        return self

    def __exit__(self, *exc) -> None:
        self.module.draw_noise_and_timesteps = self.original


def steady_and_one_off(starts: list[float], end: float, begin: float) -> tuple[float, float]:
    """(steady s per step, one-off s) of a run from `begin` to `end` whose steps started at `starts`: the median
    step after the first two, and what the run took beyond steps x that."""
    durations = [b - a for a, b in zip(starts, starts[1:] + [end])]
    steady = statistics.median(durations[2:])
    return steady, (end - begin) - len(starts) * steady


def break_even_steps(eager: dict, compiled: dict) -> float:
    """Steps after which the compiled run has cost less than the eager one (inf when compiled steps are not
    faster); 0 when compiling costs nothing extra."""
    saving = eager["steady_s"] - compiled["steady_s"]
    extra = compiled["one_off_s"] - eager["one_off_s"]
    if saving <= 0:
        return math.inf
    return max(extra, 0.0) / saving


def measure(config: BenchConfig) -> list[dict]:
    """Stage A and B, eager then compiled, in this process: steady s/step and one-off s of each run."""
    from imagic_steps.embed import optimize_embedding
    from imagic_steps.finetune import finetune_unet

    components, image = load_model_and_image(config)
    embed = optimize_embedding(components, image, config.prompt, replace(config.embed_params(), steps=0),
                               progress=False)  # e_opt = e_tgt: enough to drive stage B
    rows = []
    for compiled in (False, True):
        stage_components = replace(components, compile_unet=compiled)
        runs = {"A embed": lambda: optimize_embedding(stage_components, image, config.prompt, config.embed_params(),
                                                      progress=False),
                "B fine-tune full": lambda: finetune_unet(stage_components, embed, config.finetune_params(),
                                                          progress=False)}
        for stage, run in runs.items():
            with StepClock(STAGE_MODULES[stage]) as clock:
                begin = time.perf_counter()
                run()
                end = time.perf_counter()
            steady, one_off = steady_and_one_off(clock.starts, end, begin)
            rows.append({"stage": stage, "compiled": compiled, "steps": len(clock.starts), "steady_s": steady,
                         "one_off_s": one_off})
    return rows


def table(setting: BenchConfig, runs: dict[str, list[dict]]) -> list[dict]:
    """One row per stage and cache state: eager vs compiled per step, compile's extra one-off cost, break-even."""
    own_steps = {"A embed": setting.steps_embed, "B fine-tune full": setting.steps_finetune}
    rows = []
    for cache, measured in runs.items():
        for stage in STAGE_MODULES:
            eager, compiled = ({r["compiled"]: r for r in measured if r["stage"] == stage}[c] for c in (False, True))
            n_star = break_even_steps(eager, compiled)
            rows.append({"setting": setting.setting, "model": setting.model, "stage": stage, "inductor cache": cache,
                         "eager ms/step": 1e3 * eager["steady_s"], "compiled ms/step": 1e3 * compiled["steady_s"],
                         "compiled / eager": compiled["steady_s"] / eager["steady_s"],
                         "compile one-off s": compiled["one_off_s"] - eager["one_off_s"],
                         "break-even steps": n_star, "setting's steps": own_steps[stage],
                         "pays within the job": n_star < own_steps[stage]})
    return rows


def main(argv: list[str] | None = None) -> None:
    settings = bench_settings()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compile_cost", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(settings), choices=list(settings))
    parser.add_argument("--steps", type=int, default=60, help="steps per run (>= 4; the steady rate is a median)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "out" / "compile_cost.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # a BenchConfig as JSON: measure in this process
    args = parser.parse_args(argv)
    if args.worker:
        config = BenchConfig(**json.loads(args.worker))
        set_threads(config.threads)
        print(json.dumps(measure(config)))
        return
    if args.steps < 4:
        parser.error("--steps must be at least 4: the steady rate is the median step after the first two")
    from imagic_steps.io import write_json

    rows, raw = [], {}
    for name in args.settings:
        config = replace(settings[name], threads=args.threads)
        measured_config = replace(config, steps_embed=args.steps, steps_finetune=args.steps)
        runs = {}
        with tempfile.TemporaryDirectory(prefix="inductor-cache-") as cache:
            for state in ("cold", "warm"):
                print(f"{name}: {state} inductor cache, fresh process ...", flush=True)
                runs[state] = json_from_subprocess(
                    [sys.executable, "-m", "benchmarks.compile_cost", "--worker", json.dumps(asdict(measured_config))],
                    config.threads, {"TORCHINDUCTOR_CACHE_DIR": cache})
        raw[name] = runs
        rows += table(config, runs)
    print(f"\ntorch.compile within one job ({args.steps} steps a run; one-off = wall - steps x steady step):")
    print(tabulate(rows, headers="keys", floatfmt=".3g"))
    write_json(args.out, {"steps": args.steps, "threads": args.threads, "runs": raw, "table": rows})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
