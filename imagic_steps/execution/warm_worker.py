"""A warm worker for local runs: jobs hand their script to one process that has imported torch and diffusers once.

Importing torch, diffusers, transformers and matplotlib takes ~5-6 s of one core on this project's 2-core machine,
while a stage of the digits model computes for 1-30 s: jobs that each import them spend much of their wall time
starting up (measured on a 70-job default run: about half of the jobs' time went to importing).

Snakemake schedules, caches and logs every job just as it does without the worker, and each job is one process
Snakemake starts: each workflow script's first call, `workflow_job(...)` (imagic_steps.execution.workflow_job),
calls `hand_over_to_worker()`. When the workflow runs locally, `start_worker` (Snakemake's `onstart`) has started
`python -m imagic_steps.execution.warm_worker SOCKET`, which imports the stages once and then forks one child per
job (a fork server, like multiprocessing's "forkserver"):

* the job process sends its script (the file Snakemake generated: preamble + script), working directory,
  environment and its stdin/stdout/stderr file descriptors over a Unix socket, then waits;
* the child takes those descriptors as its own, so the job's terminal output and log file are exactly what the
  job would have written; it runs the script and sends back the exit status, which the job exits with;
* each job runs in a fresh child of a process that ran no job: nothing one job loads or changes (a fine-tuned
  UNet, torch's thread count, the environment) reaches another.

Ending: a job whose Snakemake is killed ends (`exit_with_parent`), which closes the socket, and its child ends
at once when the socket closes; the worker ends with Snakemake (`stop_worker`, which `onstart` registers to run
at Snakemake's exit; or, after a kill -9, as soon as its parent is gone).
Without a worker (SLURM jobs, `warm_worker: false`, a worker that is not there) the script runs in its own
process, start to end. Import-light: a job process imports this module (through `workflow_job`) before it hands
its script over, so it imports only the standard library and `freed_memory` at the top.

Memory: every job, forked from the worker or started cold, keeps the memory it frees for its next step
(`hand_over_to_worker`, `imagic_steps.execution.freed_memory`).
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from . import freed_memory

SOCKET_ENV = "IMAGIC_STEPS_WORKER"  # the socket's path, set by start_worker for the jobs Snakemake starts
SERVED_BY_ENV = "IMAGIC_STEPS_SERVED_BY"  # in a job run by the worker: the worker's pid (the job log says so)
# What the stage scripts import (and `configuration`, which `WorkflowJob.model` imports after the hand-over); the
# worker imports it once, before its first fork.
PRELOAD = ("imagic_steps.execution.workflow_job", "imagic_steps.configuration", "imagic_steps.embed",
           "imagic_steps.finetune", "imagic_steps.sample", "imagic_steps.sdedit", "imagic_steps.ledits",
           "imagic_steps.ddim_inversion", "imagic_steps.score", "imagic_steps.evaluate", "imagic_steps.figures",
           "snakemake.iocontainers", "snakemake.logging", "snakemake.shell")
MAX_REQUEST_BYTES = 1 << 22
START_SECONDS = 10
READY_SECONDS = 300  # a job waits this long for the worker (its imports, a busy machine), then starts cold
STATUS = struct.Struct("!i")



def hand_over_to_worker() -> None:
    """Run this job's script in the warm worker and exit with its status; return when there is no worker.

    Called by each workflow script's first call (`workflow_job`, after Snakemake's preamble), so the fallback is
    the script itself, unchanged. Not inside a SLURM job: that job's resources are SLURM's allocation. The script
    runs this again in its fork of the worker (where there is no worker to hand to), so every job, warm or cold,
    keeps the memory it frees from here on.
    """
    _run_in_worker()
    freed_memory.retain_freed_memory()


def _run_in_worker() -> None:
    """Hand the script to the worker and exit with its status; return when there is none (or it cannot take it)."""
    path = os.environ.get(SOCKET_ENV)
    if not path or "SLURM_JOB_ID" in os.environ:
        return
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        connection.connect(path)
        connection.settimeout(READY_SECONDS)
        ready = connection.recv(1)  # a child was forked for this job; nothing has been sent to it yet
        connection.settimeout(None)
    except OSError:  # the worker is gone, on another host, or stuck: run here, as a cold job
        connection.close()
        return
    if ready != b"+":
        connection.close()
        return
    from .snakemake_runs import exit_with_parent

    exit_with_parent()  # a killed Snakemake ends this job, which closes the socket, which ends the child
    request = {"script": os.path.abspath(sys.argv[0]), "argv": sys.argv, "cwd": os.getcwd(),
               "env": dict(os.environ)}
    sys.stdout.flush()
    sys.stderr.flush()
    socket.send_fds(connection, [json.dumps(request).encode()], [_open_or_devnull(fd) for fd in (0, 1, 2)])
    reply = connection.recv(STATUS.size)
    if len(reply) != STATUS.size:
        print(f"error: this job's process in the warm worker ({path}) ended without an exit status (killed, e.g. "
              "out of memory); rerun the same command (finished work is kept), or set warm_worker: false",
              file=sys.stderr)
        os._exit(1)
    os._exit(STATUS.unpack(reply)[0])


def _open_or_devnull(fd: int) -> int:
    """`fd` if it is open, else /dev/null (a job started with a closed stdin)."""
    try:
        os.fstat(fd)
        return fd
    except OSError:
        return os.open(os.devnull, os.O_RDWR)


def serve(path: str) -> None:
    """Listen on `path`, import the stages, then fork one child per job until stopped (SIGTERM)."""
    from .snakemake_runs import exit_with_parent

    exit_with_parent()  # the Snakemake that started the worker is gone: so is the worker
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)  # bound before the imports: the first jobs wait in the backlog instead of importing too
    for module in PRELOAD:
        __import__(module)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel; each reports its own status
    try:
        while True:
            connection, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                _run_job(connection)  # never returns
            connection.close()
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group; the jobs report theirs
        pass


def _run_job(connection: socket.socket) -> None:
    """In a fresh child: become the job process (its descriptors, directory, environment), run its script, send
    the exit status back, and exit."""
    try:
        connection.send(b"+")
        data, fds, _, _ = socket.recv_fds(connection, MAX_REQUEST_BYTES, 3)
    except OSError:
        data = b""
    if not data:  # the job gave up waiting and ran cold
        os._exit(0)
    status = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the job's own subprocesses are waited for as usual
        request = json.loads(data)
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        del os.environ[SOCKET_ENV]  # the script runs here: it must not hand itself over again
        os.environ[SERVED_BY_ENV] = str(os.getppid())
        sys.argv = request["argv"]
        threading.Thread(target=_end_when_job_is_gone, args=(connection,), daemon=True).start()
        runpy.run_path(request["script"], run_name="__main__")
        status = 0
    except SystemExit as done:
        status = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, (int, type(None))):
            print(done.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            connection.send(STATUS.pack(status))
        except OSError:
            pass
        os._exit(status)


def _end_when_job_is_gone(connection: socket.socket) -> None:
    """The job process sends nothing after its request: the socket reads empty when it is gone (killed)."""
    try:
        connection.recv(1)
    except OSError:
        pass
    os._exit(1)


def start_worker() -> tuple[subprocess.Popen, Path]:
    """Start a worker for this Snakemake process and point its jobs at it (the environment they inherit).

    Returns the process and its private folder (mode 0700, holding the socket), for `stop_worker`.
    """
    folder = Path(tempfile.mkdtemp(prefix="imagic_steps_worker_"))
    path = folder / "socket"
    process = subprocess.Popen([sys.executable, "-m", "imagic_steps.execution.warm_worker", str(path)],
                               stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + START_SECONDS
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # bound in well under a second; a job that finds no socket just starts cold
    os.environ[SOCKET_ENV] = str(path)
    return process, folder


def stop_worker(process: subprocess.Popen, folder: Path) -> None:
    os.environ.pop(SOCKET_ENV, None)
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    from imagic_steps.execution.warm_worker import serve as serve_here  # this module's own name, not __main__'s copy

    serve_here(sys.argv[1])
