"""The warm worker (imagic_steps/execution/warm_worker.py): a job's script runs in a fork of one warm process, as
the job.

Each test runs a small script the way Snakemake runs a workflow script (`python SCRIPT`, its first call
`workflow_job(...)`, which hands the script over) against a worker started as the workflow's `onstart` starts it.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from imagic_steps.execution.warm_worker import SOCKET_ENV, start_worker, stop_worker

SCRIPT = textwrap.dedent("""\
    from imagic_steps.execution.workflow_job import workflow_job
    workflow_job("job.log", 1)
    import os, sys, time
    from pathlib import Path
    # torch imported without this script importing it: the script runs in the warm worker
    Path("report.txt").write_text(f"{'torch' in sys.modules} {os.getpid()} {os.environ.get('JOB_VALUE')} "
                                  f"{os.environ.get('{socket_env}')} {sys.argv[1:]}")
    print("to stdout")
    print("to stderr", file=sys.stderr)
    time.sleep(float(os.environ.get("JOB_SLEEP", "0")))
    sys.exit(int(os.environ.get("JOB_STATUS", "0")))
    """).replace("{socket_env}", SOCKET_ENV)


@pytest.fixture(scope="module")
def worker():
    process, folder = start_worker()
    yield process, os.environ[SOCKET_ENV]
    stop_worker(process, folder)
    assert process.poll() is not None and not folder.exists()


def run_script(tmp_path: Path, socket_path: str | None, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    environment = {key: value for key, value in os.environ.items() if key != SOCKET_ENV}
    if socket_path:
        environment[SOCKET_ENV] = socket_path
    return subprocess.run([sys.executable, str(script), "an-argument"], cwd=tmp_path, capture_output=True,
                          text=True, env={**environment, **env}, timeout=120)


def test_a_handed_over_script_runs_warm_as_the_job(tmp_path, worker):
    """The script runs in the worker (torch already imported), in the job's folder with its environment and
    arguments, without a worker address of its own; its output reaches the job's stdout/stderr and its exit
    status is the job's."""
    process, socket_path = worker
    done = run_script(tmp_path, socket_path, JOB_VALUE="42", JOB_STATUS="3")
    warm, pid, value, address, argv = (tmp_path / "report.txt").read_text().split(" ", 4)
    assert (warm, value, address, argv) == ("True", "42", "None", "['an-argument']")
    assert int(pid) != process.pid  # a fresh child of the worker, not the worker itself
    assert done.returncode == 3 and done.stdout == "to stdout\n" and done.stderr == "to stderr\n"
    assert run_script(tmp_path, socket_path).returncode == 0


FREED_RSS_SCRIPT = textwrap.dedent("""\
    import sys
    if sys.argv[1] in ("warm", "cold"):  # a workflow script's first statements
        from imagic_steps.execution.workflow_job import workflow_job
        workflow_job("job.log", 1)
    import ctypes
    import psutil
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    size = 256 << 20
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)  # touched: resident
    touched = psutil.Process().memory_info().rss
    libc.free(ctypes.c_void_p(block))
    print(touched - psutil.Process().memory_info().rss, "torch" in sys.modules)
    """)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_model_jobs_keep_freed_memory_for_their_next_step(tmp_path, worker):
    """A job in the worker and a job that starts cold each free a 256 MiB block and keep its pages
    (imagic_steps.execution.freed_memory: the next training step reuses them instead of faulting in fresh zeroed
    ones); a plain Python process, under glibc's defaults, hands them back to the kernel at once. A user's own malloc
    tunables are kept."""
    _, socket_path = worker
    script = tmp_path / "freed.py"
    script.write_text(FREED_RSS_SCRIPT)
    environment = {key: value for key, value in os.environ.items() if key not in (SOCKET_ENV, "GLIBC_TUNABLES")}
    returned = {}
    for label, mode, extra in (("warm", "warm", {SOCKET_ENV: socket_path}),
                               ("cold", "cold", {SOCKET_ENV: str(tmp_path / "no-socket")}),
                               ("plain", "plain", {}),
                               ("own", "cold", {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"})):
        done = subprocess.run([sys.executable, str(script), mode], cwd=tmp_path, capture_output=True, text=True,
                              env={**environment, **extra}, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        freed, warm = done.stdout.split()
        assert warm == str(mode == "warm")
        returned[label] = int(freed)
    kept = {label: freed < 16 << 20 for label, freed in returned.items()}
    assert kept == {"warm": True, "cold": True, "plain": False, "own": False}, returned


def test_without_a_worker_the_script_runs_in_its_own_process(tmp_path):
    done = run_script(tmp_path, str(tmp_path / "no-such-socket"), JOB_STATUS="2")
    assert (tmp_path / "report.txt").read_text().startswith("False ")  # cold: torch not imported
    assert done.returncode == 2 and done.stdout == "to stdout\n"
    done = run_script(tmp_path, str(tmp_path / "no-such-socket"), SLURM_JOB_ID="7")
    assert done.returncode == 0 and (tmp_path / "report.txt").read_text().startswith("False ")


LIGHT_SCRIPT = textwrap.dedent("""\
    import sys
    from imagic_steps.execution.workflow_job import workflow_job
    job = workflow_job("job.log", 2, type("Resources", (), {"gpu_mem_mb": 1234})())
    heavy = ("torch", "diffusers", "transformers", "numpy", "PIL", "matplotlib", "pandas", "yaml", "snakemake")
    print(job.threads, job.gpu_mem_mb, workflow_job("job.log", 1, object()).gpu_mem_mb,
          ",".join(m for m in heavy if m in sys.modules) or "-")
    """)


def test_a_job_hands_over_before_any_heavy_import(tmp_path):
    """Each workflow script's first call, `workflow_job`, and the import it needs bring in no heavy module (torch
    and diffusers take ~5 s a job to import: the warm worker exists so that jobs do not); here cold (no worker),
    where the call returns the job: its threads and `gpu_mem_mb` resource (None when the rule sets none)."""
    script = tmp_path / "light.py"
    script.write_text(LIGHT_SCRIPT)
    environment = {key: value for key, value in os.environ.items() if key != SOCKET_ENV}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                          env=environment, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["2", "1234", "None", "-"]


def test_a_killed_job_ends_its_run_in_the_worker(tmp_path, worker):
    """Snakemake kills a job (Ctrl-C, a timeout, its own death): the worker's child running it ends too, so it
    cannot write on into a rerun; the worker serves the next job."""
    _, socket_path = worker
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    environment = {**os.environ, SOCKET_ENV: socket_path, "JOB_SLEEP": "60"}
    job = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=environment,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    report = tmp_path / "report.txt"
    deadline = time.monotonic() + 60
    while not report.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    child = int(report.read_text().split(" ")[1])
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{child}").exists()
    assert run_script(tmp_path, socket_path, JOB_VALUE="next").returncode == 0


def test_a_jobs_peak_memory_is_its_own_not_its_starters():
    """peak_rss_bytes reads the address space's high-water mark: getrusage's ru_maxrss would carry this process's
    peak (512 MiB and more) over exec into the child it starts."""
    from imagic_steps.execution.workflow_job import peak_rss_bytes

    block = b"\x01" * (512 << 20)  # written, so resident
    assert peak_rss_bytes() >= len(block)
    del block
    child = subprocess.run([sys.executable, "-c",
                            "from imagic_steps.execution.workflow_job import peak_rss_mib; print(peak_rss_mib())"],
                           capture_output=True, text=True, check=True)
    assert 10 < float(child.stdout) < 256
