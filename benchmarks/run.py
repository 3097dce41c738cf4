"""Benchmark the Imagic stages against the faithful reference (the community pipeline's algorithm).

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python -m benchmarks.run             # both settings, CPU, 1 thread
    python -m benchmarks.run --settings original --model stable-diffusion-v1-5/stable-diffusion-v1-5 --device cuda

Two step settings (`benchmarks.common.bench_settings`): `digits`, the default run's (the digits model, embed
200 @ 1e-3, full fine-tune 150 @ 1e-4, DDIM 20, guidance 3), and `original`, the `original` preset's step
counts on the tiny model (500 / 1000 / 50, guidance 7.5); both sample the default config's 4 alphas x 2 seeds.
`--model`, `--device`, `--dtype` and the step options override the chosen settings. For each setting:

* results.csv: one row per stage, each run once in a fresh process (so CPU peak RSS is the stage's own; a stage
  named twice runs twice, e.g. `--stages finetune-full finetune-reference finetune-reference finetune-full` for
  an interleaved pair): steps, wall time (s), steps/s, peak memory (bytes; RSS on CPU, CUDA max allocated on GPU),
  `imagic_steps.memory`'s estimate of it, memory the stage added on top of the loaded model, for fine-tunes the
  artefact size (bytes) saved in fp32 and fp16, and the malloc settings (ours' stages keep the memory they free,
  as every workflow job does, `imagic_steps.execution.freed_memory`; the reference's run with the C library's
  defaults, as a notebook runs it);
* comparison.csv: ours / reference per stage and for the whole edit in one process, interleaved repeats: the
  median seconds, the median per-repeat ratio with its min-max and n, and the target (`compare.WHOLE_EDIT_TARGET`);
* equivalence.csv: max abs difference of stage C's images, ours vs the reference on the same inputs.

run.json records the configurations, the machine, the package versions and every repeat's timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch
from tabulate import tabulate

from imagic_steps.io import atomic_path, write_json

from .common import MIB, REPO_ROOT, BenchConfig, bench_settings, json_from_subprocess, load_model_and_image, \
    set_threads
from .compare import compare, ratios
from .stage_worker import STAGES

DEFAULT_STAGES = ("embed", "finetune-full", "finetune-lora", "sample")
OVERRIDES = ("model", "device", "dtype", "mixed_precision", "steps_embed", "steps_finetune", "sample_steps",
             "resolution")


def parse_args(argv: list[str] | None) -> tuple[list[BenchConfig], argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    settings = bench_settings()
    parser.add_argument("--settings", nargs="+", default=list(settings), choices=list(settings))
    parser.add_argument("--model", help="override: 'tiny', 'digits', a local diffusers folder or a hub id")
    parser.add_argument("--device", help="override (default cpu)")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], help="override (default fp32)")
    parser.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"],
                        help="override: ours' stage B autocast (default no; fp16 needs CUDA)")
    parser.add_argument("--steps-embed", type=int, help="override")
    parser.add_argument("--steps-finetune", type=int, help="override")
    parser.add_argument("--sample-steps", type=int, help="override: DDIM steps")
    parser.add_argument("--resolution", type=int,
                        help="override: image side in pixels for every stage (default: the model's native side)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machine)")
    parser.add_argument("--compile", action="store_true", help="ours runs its UNets through torch.compile")
    parser.add_argument("--channels-last", action="store_true", help="ours uses a channels-last UNet")
    parser.add_argument("--repeats", type=int, default=4,
                        help="interleaved repeats of ours vs the reference (even: each goes first equally often; "
                             "0: the per-stage table only)")
    parser.add_argument("--stages", nargs="*", default=list(DEFAULT_STAGES), choices=STAGES,
                        help=f"stages of the per-stage table, each in its own process (default "
                             f"{' '.join(DEFAULT_STAGES)}); give none to skip the table")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "out")
    args = parser.parse_args(argv)
    overrides = {name: getattr(args, name) for name in OVERRIDES if getattr(args, name) is not None}
    configs = [replace(settings[name], threads=args.threads, compile=args.compile, channels_last=args.channels_last,
                       **overrides) for name in args.settings]
    return configs, args


def run_stage_in_subprocess(stage: str, config: BenchConfig) -> dict:
    """Measurements of one stage from `python -m benchmarks.stage_worker` in a fresh process."""
    return json_from_subprocess([sys.executable, "-m", "benchmarks.stage_worker", stage, json.dumps(asdict(config))],
                                config.threads)


def stage_table(rows: list[dict]) -> str:
    """The per-stage rows as a text table (memory in MiB, artefacts in bytes)."""
    shown = [{"setting": r["setting"], "stage": r["stage"], "malloc": r["malloc"], "steps": r["steps"],
              "wall s": r["wall_s"],
              "steps/s": r["steps_per_s"],
              "peak MiB": r["peak_bytes"] / MIB, "added MiB": r["stage_added_bytes"] / MIB,
              "estimate MiB": None if r["estimated_peak_bytes"] is None else r["estimated_peak_bytes"] / MIB,
              "peak / estimate": None if r["estimated_peak_bytes"] is None else
              r["peak_bytes"] / r["estimated_peak_bytes"],
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
    configs, args = parse_args(argv)
    set_threads(args.threads)
    out: Path = args.out
    stage_rows, comparison, equivalence, timings = [], [], [], {}
    for config in configs:
        print(f"\nsetting {config.setting}: {asdict(config)}", flush=True)
        for stage in args.stages:
            print(f"stage {stage} (fresh process) ...", flush=True)
            stage_rows.append({"setting": config.setting, **run_stage_in_subprocess(stage, config)})
        if not args.repeats:
            continue
        print(f"ours vs reference in one process, {args.repeats} interleaved repeats ...", flush=True)
        components, image = load_model_and_image(config)
        measured, difference = compare(components, image, config, args.repeats)
        comparison += ratios(measured, config)
        equivalence.append({"setting": config.setting, "quantity": "stage C images in [0, 1], same inputs",
                            "max_abs_diff_ours_vs_reference": difference})
        timings[config.setting] = measured.seconds
    if stage_rows:
        write_csv(stage_rows, out / "results.csv")
        print("\nPer stage (one run each; steps of sampling = seeds x alphas x denoising steps; memory kind: "
              f"{stage_rows[0]['memory_kind']})")
        print(stage_table(stage_rows))
    written = ["results.csv"] if stage_rows else []
    if comparison:
        write_csv(comparison, out / "comparison.csv")
        write_csv(equivalence, out / "equivalence.csv")
        written += ["comparison.csv", "equivalence.csv"]
        print("\nOurs / faithful reference (median of per-repeat ratios, min-max over n interleaved repeats):")
        print(tabulate(comparison, headers="keys", floatfmt=".3g"))
        print("\nSame computation? (stage C on the reference's e_opt and fine-tuned UNet)")
        print(tabulate(equivalence, headers="keys", floatfmt=".3g"))
    write_json(out / "run.json", {"configs": [asdict(c) for c in configs], "repeats": args.repeats,
                                  "machine": machine(), "timings_s": timings})
    print(f"\nwrote {out}/{', '.join(written + ['run.json'])}")


if __name__ == "__main__":
    main()
