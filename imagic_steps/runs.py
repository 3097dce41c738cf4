"""After a killed Snakemake: its stale locks and its orphaned jobs.

`kill -9` of Snakemake leaves its lock files in `.snakemake/locks/` (so every plain rerun fails with
"Directory cannot be locked ... --unlock") and leaves its running jobs behind, still writing outputs and
checkpoints that the rerun's jobs write too. Two guards make the plain rerun the README promises work:

* every main Snakemake process records itself (host, pid, process start time) in `.snakemake/imagic_steps_owners/`
  while it parses the workflow, before it takes its locks; a new main process removes the locks when every
  recorded owner on this host is gone (a record from another host counts as alive: it cannot be checked here);
* every job watches the process that started it and ends at once when that process is gone (`exit_with_parent`).

Import-light (no torch): the workflow calls it while planning.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

OWNERS = Path(".snakemake") / "imagic_steps_owners"
LOCKS = Path(".snakemake") / "locks"
PARENT_POLL_SECONDS = 0.5

logger = logging.getLogger(__name__)


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux /proc), None if there is no such process.

    With the pid it names one process for good: a pid reused by a later process has another start time.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name before ')' may hold spaces


def _identity(pid: int) -> str:
    return f"{socket.gethostname()}_{pid}_{_start_time(pid)}"


def _alive(identity: str) -> bool:
    host, pid, start = identity.rsplit("_", 2)
    if host != socket.gethostname():
        return True
    return _start_time(int(pid)) == start


def claim_working_directory(workdir: str | os.PathLike = ".") -> list[Path]:
    """Called by a main Snakemake process while it parses the workflow: drop the records of owners that are gone;
    if none is left, remove the locks they left behind; then record this process. Returns the removed lock files."""
    workdir = Path(workdir)
    owners = workdir / OWNERS
    owners.mkdir(parents=True, exist_ok=True)
    live = []
    for record in owners.iterdir():
        if _alive(record.name):
            live.append(record)
        else:
            record.unlink(missing_ok=True)
    removed = []
    if not live:
        for lock in sorted((workdir / LOCKS).glob("*.lock")):
            lock.unlink(missing_ok=True)
            removed.append(lock)
    (owners / _identity(os.getpid())).touch()
    return removed


def exit_with_parent() -> None:
    """End this process as soon as the process that started it is gone (a daemon thread polls the parent pid).

    A job started by a Snakemake that was killed then ends within PARENT_POLL_SECONDS instead of running on into
    the rerun. Its outputs are written atomically and its resume checkpoints stay valid, as after a kill -9 of the
    job itself.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                logger.error("the Snakemake process that started this job (pid %d) is gone; ending the job", parent)
                logging.shutdown()
                os._exit(1)
            time.sleep(PARENT_POLL_SECONDS)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
