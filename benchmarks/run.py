"""Benchmark the Imagic stages and compare them with the naive reference implementation.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python -m benchmarks.run                      # tiny model, CPU, ~3 min
    python -m benchmarks.run --model stable-diffusion-v1-5/stable-diffusion-v1-5 --device cuda --threads 8

Two parts, each printed as a table and written as CSV under --out (atomically):

* results.csv — one row per stage, each run once in a fresh process (so CPU peak RSS is the stage's own):
  steps, wall time (s), steps/s, peak memory (bytes; RSS on CPU, CUDA max allocated on GPU), memory the stage
  added on top of the loaded model, and for fine-tunes the artefact size (bytes) saved in fp32 and fp16;
* comparison.csv — ours / naive in one process, same model, steps and seeds (best of --repeats), the
  targets of issue 7, and equivalence.csv: max abs differences between ours and naive outputs.

run.json records the configuration, the machine, the package versions and every repeat's timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from tabulate import tabulate

from imagic_steps.io import atomic_path, write_json

from .common import MIB, REPO_ROOT, BenchConfig, load_model_and_image, set_threads
from .compare import compare, ratios
from .stage_worker import STAGES

DEFAULT_STAGES = ("embed", "finetune-full", "finetune-lora", "sample")


def parse_args(argv: list[str] | None) -> tuple[BenchConfig, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="'tiny', a local diffusers folder or a hub id")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machine)")
    parser.add_argument("--steps-embed", type=int, default=50)
    parser.add_argument("--steps-finetune", type=int, default=50)
    parser.add_argument("--sample-steps", type=int, default=50, help="DDIM steps")
    parser.add_argument("--alphas", type=int, default=8, help="number of alphas, evenly spaced over [0, 1.2]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="ours runs its UNets through torch.compile")
    parser.add_argument("--channels-last", action="store_true", help="ours uses a channels-last UNet")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of the ours-vs-naive comparison (best kept)")
    parser.add_argument("--stages", nargs="*", default=list(DEFAULT_STAGES), choices=STAGES,
                        help=f"stages of the per-stage table, each in its own process (default "
                             f"{' '.join(DEFAULT_STAGES)}; the naive ones are timed in the comparison anyway); "
                             "give none to skip the table")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "out")
    args = parser.parse_args(argv)
    config = BenchConfig(model=args.model, device=args.device, dtype=args.dtype, threads=args.threads,
                         steps_embed=args.steps_embed, steps_finetune=args.steps_finetune,
                         sample_steps=args.sample_steps, n_alphas=args.alphas, seed=args.seed,
                         compile=args.compile, channels_last=args.channels_last)
    return config, args


def run_stage_in_subprocess(stage: str, config: BenchConfig) -> dict:
    """Measurements of one stage from `python -m benchmarks.stage_worker` in a fresh process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(config.threads), "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run([sys.executable, "-m", "benchmarks.stage_worker", stage, json.dumps(asdict(config))],
                               capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    if completed.returncode != 0:
        raise RuntimeError(f"stage {stage} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def stage_table(rows: list[dict]) -> str:
    """The per-stage rows as a text table (memory in MiB, artefacts in bytes)."""
    shown = [{"stage": r["stage"], "steps": r["steps"], "wall s": r["wall_s"], "steps/s": r["steps_per_s"],
              "peak MiB": r["peak_bytes"] / MIB, "added MiB": r["stage_added_bytes"] / MIB,
              "artefact fp32 B": r.get("artefact_fp32_bytes"), "artefact fp16 B": r.get("artefact_fp16_bytes")}
             for r in rows]
    return tabulate(shown, headers="keys", floatfmt=".3g", intfmt=",", missingval="")


def write_csv(rows: list[dict], path: Path) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).convert_dtypes().to_csv(tmp, index=False)  # integer columns stay integers


def machine() -> dict:
    """Where the figures were measured."""
    import diffusers
    import imagic_steps

    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "diffusers": diffusers.__version__, "imagic_steps": imagic_steps.__version__,
            "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(argv: list[str] | None = None) -> None:
    config, args = parse_args(argv)
    set_threads(config.threads)
    out: Path = args.out
    print(f"config: {asdict(config)}", flush=True)

    stage_rows = []
    for stage in args.stages:
        print(f"stage {stage} (fresh process) ...", flush=True)
        stage_rows.append(run_stage_in_subprocess(stage, config))
    if stage_rows:
        write_csv(stage_rows, out / "results.csv")
        print("\nPer stage (one run each; steps of sampling = alphas x denoising steps; memory kind: "
              f"{stage_rows[0]['memory_kind']})")
        print(stage_table(stage_rows))

    print(f"\nours vs naive in one process, best of {args.repeats} ...", flush=True)
    components, image = load_model_and_image(config)
    timings, differences = compare(components, image, config, args.repeats, out / "previews")
    comparison = ratios(timings, config, components.device)
    write_csv(comparison, out / "comparison.csv")
    equivalence = [{"quantity": name, "max_abs_diff_ours_vs_naive": value} for name, value in differences.items()]
    write_csv(equivalence, out / "equivalence.csv")
    print(tabulate(comparison, headers="keys", floatfmt=".3g"))
    print("\nSame computation? max abs difference ours vs naive (same seeds):")
    print(tabulate(equivalence, headers="keys", floatfmt=".3g"))
    write_json(out / "run.json", {"config": asdict(config), "repeats": args.repeats, "machine": machine(),
                                  "timings_s": timings.seconds})
    print(f"\nwrote {out}/results.csv, comparison.csv, equivalence.csv, run.json")


if __name__ == "__main__":
    main()
