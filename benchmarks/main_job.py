"""The main job's wall time against its compute floor, with and without the warm worker, and where the rest goes.

    python -m benchmarks.main_job [--cores 2] [--modes warm cold] [--repeats 1] [--out benchmarks/out/main_job]
                                  [-- SNAKEMAKE ARGS...]

Runs the default experiment (or the one the extra Snakemake arguments name, e.g. `-- --configfile
config/analysis.yaml`) from scratch, in the repository, into OUT/warm and OUT/cold (`warm_worker` true, false), the
modes alternating over the repeats, and prints per run:

* wall: the `snakemake` command's wall time;
* job wall: the sum of the jobs' wall times (their `benchmark:` files), start-up included;
* work: the sum over jobs of each job log's span, from job_context's first line (the job's imports are done) to
  its last (`peak RSS`): model loading and the stage itself;
* loads: the sum of the `model ... loaded in` lines;
* floor: (work - loads) / cores, the stages' own compute spread over the cores, which is what one warm process
  that loads each model once would need at best (benchmarks/README.md, "The main job against its floor", holds the
  figures);

and where wall - floor goes, in seconds of wall time (they add up to it): `start` (the command's start to the first
job's body: Snakemake, the DAG, the warm worker's imports, the first hand-over), `end` (the last job's body to the
command's end), `loads / cores`, and `idle / cores`: the core-seconds between the first body's start and the last
one's end when fewer bodies than cores ran, split into `idle with one job` (the others waiting on a dependency: the
tail) and the rest; with it, the median per-job start (job wall - work: Python, Snakemake's preamble, the hand-over,
the fork). With several repeats, the median of each figure.

Then it compares the two result folders file by file (SHA-256; logs and benchmark files left out).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
LOADED = re.compile(r"model \S+ loaded in ([\d.]+) s")


def run_workflow(results: Path, warm: bool, cores: int, extra: list[str]) -> tuple[float, float, float]:
    """Run the workflow into `results`: (wall seconds, start and end as epoch seconds)."""
    shutil.rmtree(results, ignore_errors=True)
    results.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "snakemake", "--cores", str(cores), *extra, "--config", f"results={results}",
               f"warm_worker={str(warm).lower()}"]
    start, began = time.perf_counter(), time.time()
    with open(results.with_suffix(".log"), "w") as log:  # Snakemake's own output, next to the results
        done = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed; see {results.with_suffix('.log')}")
    return time.perf_counter() - start, began, time.time()


def log_span_and_loads(log: Path) -> tuple[float, float, float]:
    """A job log's first and last time stamps (epoch seconds; 0, 0 without any) and the model-loading seconds it
    reports."""
    lines = log.read_text(errors="replace").splitlines()
    stamps = [datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
              for line in lines if (m := STAMP.match(line))]
    loads = sum(float(m.group(1)) for line in lines if (m := LOADED.search(line)))
    return (stamps[0], stamps[-1], loads) if stamps else (0.0, 0.0, loads)


def idle_core_seconds(bodies: list[tuple[float, float]], cores: int) -> tuple[float, float]:
    """Core-seconds left idle between the first body's start and the last one's end: (while exactly one body ran,
    while none or 2..cores-1 ran)."""
    events = sorted([(start, 1) for start, _ in bodies] + [(end, -1) for _, end in bodies])
    one = other = 0.0
    running, last = 0, events[0][0]
    for moment, change in events:
        idle = max(cores - running, 0) * (moment - last)
        one, other = (one + idle, other) if running == 1 else (one, other + idle)
        running, last = running + change, moment
    return one, other


def measure(results: Path, wall: float, began: float, ended: float, cores: int) -> dict:
    job_wall = {path.relative_to(results / "benchmark").with_suffix(""):
                float(path.read_text().splitlines()[1].split("\t")[0])
                for path in (results / "benchmark").rglob("*.tsv")}
    logs = {path.relative_to(results / "logs").with_suffix(""): log_span_and_loads(path)
            for path in (results / "logs").rglob("*.log")}
    bodies = [(first, last) for first, last, _ in logs.values() if last]
    work = sum(last - first for first, last in bodies)
    loads = sum(load for _, _, load in logs.values())
    floor = (work - loads) / cores
    idle_one, idle_other = idle_core_seconds(bodies, cores)
    starts = sorted(job_wall[name] - (last - first) for name, (first, last, _) in logs.items() if name in job_wall)
    return {"jobs": len(job_wall), "wall_s": wall, "job_wall_s": sum(job_wall.values()), "work_s": work,
            "loads_s": loads, "floor_s": floor, "wall_over_floor": wall / floor,
            "start_s": min(first for first, _ in bodies) - began, "end_s": ended - max(last for _, last in bodies),
            "loads_per_core_s": loads / cores, "idle_one_job_per_core_s": idle_one / cores,
            "idle_other_per_core_s": idle_other / cores, "median_job_start_s": starts[len(starts) // 2]}


def compare(first: Path, second: Path) -> tuple[int, list[str]]:
    """Files under both folders with the same bytes, and those that differ (logs and benchmark files aside; the
    tables and records name their files by absolute path, so each folder's own path is replaced first)."""
    def files(root: Path) -> dict[Path, str]:
        prefix = str(root.resolve()).encode()
        return {path.relative_to(root): hashlib.sha256(path.read_bytes().replace(prefix, b"RESULTS")).hexdigest()
                for path in root.rglob("*")
                if path.is_file() and path.relative_to(root).parts[0] not in ("logs", "benchmark")}

    a, b = files(first), files(second)
    differ = sorted(str(rel) for rel in set(a) | set(b) if a.get(rel) != b.get(rel))
    return sum(1 for rel in a if b.get(rel) == a[rel]), differ


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.main_job", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--modes", nargs="+", choices=("warm", "cold"), default=["warm", "cold"])
    parser.add_argument("--repeats", type=int, default=1, help="runs per mode; the table gives each figure's median")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "out" / "main_job")
    parser.add_argument("snakemake_args", nargs="*", help="after --: extra Snakemake arguments")
    args = parser.parse_args(argv)
    runs: dict[str, list[dict]] = {mode: [] for mode in args.modes}
    for _ in range(args.repeats):
        for mode in args.modes:
            results = args.out.resolve() / mode
            runs[mode].append(measure(results, *run_workflow(results, mode == "warm", args.cores,
                                                              args.snakemake_args), args.cores))
            print(f"{mode}: wall {runs[mode][-1]['wall_s']:.1f} s, wall / floor "
                  f"{runs[mode][-1]['wall_over_floor']:.2f}", file=sys.stderr)
    rows = {mode: {key: statistics.median(run[key] for run in measured) for key in measured[0]}
            for mode, measured in runs.items()}
    columns = list(next(iter(rows.values())))
    print(f"| {' | '.join(['mode', *columns])} |")
    print(f"|{'---|' * (len(columns) + 1)}")
    for mode, row in rows.items():
        print(f"| {mode} | " + " | ".join(f"{value:.2f}" if isinstance(value, float) else str(value)
                                         for value in row.values()) + " |")
    if len(rows) == 2:
        same, differ = compare(args.out / "warm", args.out / "cold")
        print(f"outputs: {same} files identical in both modes, {len(differ)} differ: {differ[:12]}")


if __name__ == "__main__":
    main()
