"""The main job's wall time against its compute floor, with and without the warm worker.

    python -m benchmarks.main_job [--cores 2] [--out benchmarks/out/main_job] [-- SNAKEMAKE ARGS...]

Runs the default experiment (or the one the extra Snakemake arguments name, e.g. `-- --configfile
config/analysis.yaml`) from scratch twice, in the repository, into OUT/warm and OUT/cold (`warm_worker` true,
false), one after the other, and prints per mode:

* wall: the `snakemake` command's wall time;
* job wall: the sum of the jobs' wall times (their `benchmark:` files), start-up included;
* work: the sum over jobs of each job log's span, from job_context's first line (the job's imports are done) to
  its last (`peak RSS`): model loading and the stage itself;
* loads: the sum of the `model ... loaded in` lines;
* floor: (work - loads) / cores, the stages' own compute spread over the cores, which is what one warm process
  that loads each model once would need at best; the target is wall / floor <= 2 (benchmarks/README.md, "The main
  job against its floor", holds the figures).

Then it compares the two result folders file by file (SHA-256; logs and benchmark files left out).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
LOADED = re.compile(r"model \S+ loaded in ([\d.]+) s")


def run_workflow(results: Path, warm: bool, cores: int, extra: list[str]) -> float:
    shutil.rmtree(results, ignore_errors=True)
    command = [sys.executable, "-m", "snakemake", "--cores", str(cores), *extra, "--config", f"results={results}",
               f"warm_worker={str(warm).lower()}"]
    start = time.perf_counter()
    with open(results.with_suffix(".log"), "w") as log:  # Snakemake's own output, next to the results
        done = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed; see {results.with_suffix('.log')}")
    return time.perf_counter() - start


def log_span_and_loads(log: Path) -> tuple[float, float]:
    """Seconds from the log's first time-stamped line to its last, and the model-loading seconds it reports."""
    lines = log.read_text(errors="replace").splitlines()
    stamps = [datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
              for line in lines if (m := STAMP.match(line))]
    loads = sum(float(m.group(1)) for line in lines if (m := LOADED.search(line)))
    return ((stamps[-1] - stamps[0]).total_seconds() if stamps else 0.0), loads


def measure(results: Path, wall: float, cores: int) -> dict:
    job_wall = [float(path.read_text().splitlines()[1].split("\t")[0])
                for path in (results / "benchmark").rglob("*.tsv")]
    spans = [log_span_and_loads(path) for path in (results / "logs").rglob("*.log")]
    work = sum(span for span, _ in spans)
    loads = sum(load for _, load in spans)
    floor = (work - loads) / cores
    return {"jobs": len(job_wall), "wall_s": wall, "job_wall_s": sum(job_wall), "work_s": work, "loads_s": loads,
            "floor_s": floor, "wall_over_floor": wall / floor}


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
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "out" / "main_job")
    parser.add_argument("snakemake_args", nargs="*", help="after --: extra Snakemake arguments")
    args = parser.parse_args(argv)
    rows = {}
    for mode in ("warm", "cold"):
        results = args.out.resolve() / mode
        wall = run_workflow(results, mode == "warm", args.cores, args.snakemake_args)
        rows[mode] = measure(results, wall, args.cores)
    print(f"| {' | '.join(['mode', *rows['warm']])} |")
    print(f"|{'---|' * (len(rows['warm']) + 1)}")
    for mode, row in rows.items():
        print(f"| {mode} | " + " | ".join(f"{value:.2f}" if isinstance(value, float) else str(value)
                                         for value in row.values()) + " |")
    same, differ = compare(args.out / "warm", args.out / "cold")
    print(f"outputs: {same} files identical in both modes, {len(differ)} differ: {differ[:12]}")


if __name__ == "__main__":
    main()
