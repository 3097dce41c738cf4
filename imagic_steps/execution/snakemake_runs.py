"""After a killed Snakemake: its stale locks and its orphaned jobs.

`kill -9` of Snakemake leaves its lock files in `.snakemake/locks/` (so every plain rerun fails with
"Directory cannot be locked ... --unlock") and leaves its running jobs behind, still writing outputs and
checkpoints that the rerun's jobs write too. Two guards make the plain rerun the README promises work:

* every main Snakemake process that will lock the working directory records itself (host, pid, process start
  time) in `.snakemake/imagic_steps_owners/` while it parses the workflow, before it takes its locks; a new main
  process removes the locks when every recorded owner on this host is gone (a record from another host counts as
  alive: it cannot be checked here), and a new run that would lock beside a live owner stops with one line naming
  that run, before Snakemake's own lock error (which advises `--unlock`: that would let two runs write the same
  files). Runs that take no lock (`-n`, `--unlock`, `--list`, `--summary`, `--dag`, `--report`, `--nolock`, ...) are
  neither recorded nor refused;
* every job watches the process that started it and ends at once when that process is gone (`exit_with_parent`).

Import-light (no torch): the workflow calls it while planning.
"""

from __future__ import annotations

import inspect
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import PlanError

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


def process_identity(pid: int) -> str:
    return f"{socket.gethostname()}_{pid}_{_start_time(pid)}"


def _alive(identity: str) -> bool:
    host, pid, start = identity.rsplit("_", 2)
    if host != socket.gethostname():
        return True
    return _start_time(int(pid)) == start


def _started(record: Path) -> str:
    """When the owner of `record` started, as local clock time: from its process start time (clock ticks since
    boot) on this host, else (another host) from when it wrote the record."""
    host, _, ticks = record.name.rsplit("_", 2)
    try:
        if host == socket.gethostname() and ticks.isdigit():
            boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                        if line.startswith("btime "))
            when = boot + int(ticks) / os.sysconf("SC_CLK_TCK")
        else:
            when = record.stat().st_mtime
    except (OSError, StopIteration, ValueError):
        return "at an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when))


def _live_run_error(workdir: Path, records: list[Path]) -> PlanError:
    """One line naming the live run(s) this one would collide with, and what to do instead of `--unlock`."""
    record = min(records, key=lambda r: r.name)
    host, pid, _ = record.name.rsplit("_", 2)
    locks = "holds the locks" if list((workdir / LOCKS).glob("*.lock")) else "is starting"
    others = f" (and {len(records) - 1} more)" if len(records) > 1 else ""
    if host == socket.gethostname():
        fix = (f"wait for it to finish or stop it (kill {pid}), then rerun; do not use --unlock, which would let "
               "both runs write the same files")
    else:
        fix = (f"wait for it to finish or stop it on {host}, then rerun; if it is no longer running there, delete "
               f"{OWNERS / record.name} and rerun (not --unlock: it cannot tell a live run from a dead one)")
    return PlanError(f"working directory {workdir.resolve()} ({LOCKS}): a Snakemake run {locks} here: host {host}, "
                     f"pid {pid}, started {_started(record)}{others}; {fix}")


def claim_working_directory(workdir: str | os.PathLike = ".", takes_lock: bool = True) -> list[Path]:
    """Called by a main Snakemake process while it parses the workflow: drop the records of owners that are gone;
    if none is left, remove the locks they left behind. A run that will lock the directory (`takes_lock`,
    `snakemake_takes_lock`) then stops with a PlanError naming a live owner if there is one (Snakemake would refuse
    it with a multi-line LockException advising --unlock), else records itself. Returns the removed lock files."""
    workdir = Path(workdir)
    owners = workdir / OWNERS
    owners.mkdir(parents=True, exist_ok=True)
    me = process_identity(os.getpid())
    live = []
    for record in owners.iterdir():
        if record.name == me:  # this process, parsing the workflow a second time
            continue
        if _alive(record.name):
            live.append(record)
        else:
            record.unlink(missing_ok=True)
    removed = []
    if not live:
        for lock in sorted((workdir / LOCKS).glob("*.lock")):
            lock.unlink(missing_ok=True)
            removed.append(lock)
    if takes_lock:
        if live:
            raise _live_run_error(workdir, live)
        (owners / me).touch()
    return removed


# Snakemake modes that never call `persistence.lock()` (snakemake/cli.py `args_to_api` dispatches them instead of
# executing; only execution, --containerize and --cleanup-shadow lock), as their `args` names. --report locks only
# after a run (--report-after-run).
NO_LOCK_MODES = ("dryrun", "nolock", "unlock", "lint", "list_rules", "list_target_rules", "list_resources",
                 "print_compilation", "dag", "rulegraph", "filegraph", "d3dag", "summary", "detailed_summary",
                 "list_changes", "list_input_changes", "list_params_changes", "list_untracked", "list_conda_envs",
                 "conda_cleanup_envs", "conda_create_envs_only", "cleanup_metadata", "archive", "delete_all_output",
                 "delete_temp_output", "generate_unit_tests", "container_cleanup_images", "export_cwl")


def snakemake_takes_lock(workflow: Any) -> bool:
    """Whether the Snakemake parsing this workflow will lock the working directory.

    Snakemake 9 parses the Snakefile before it is told what to run: at that point `workflow.dryrun` is False even
    under -n (no executor yet) and `workflow.execution_settings` (its `lock`) is None; only
    `workflow.output_settings.dryrun` is set. So the answer comes from the command line Snakemake parsed: the `args`
    of `snakemake.cli.args_to_api`, a caller of this parse (profile values included). Without one (the Python
    API): a dry run takes no lock, anything else is taken to lock."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            if frame.f_code.co_name == "args_to_api" and frame.f_globals.get("__name__") == "snakemake.cli":
                args = frame.f_locals.get("args")
                if args is not None:
                    report_only = (getattr(args, "report", None) or getattr(args, "reporter", None)) \
                        and not getattr(args, "report_after_run", False)
                    return not (report_only or any(getattr(args, name, None) for name in NO_LOCK_MODES))
            frame = frame.f_back
    finally:
        del frame
    output = getattr(workflow, "output_settings", None)
    return not getattr(output, "dryrun", False)


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
