"""A throw-away one-node SLURM cluster on this machine (Debian `slurm-wlm` + `munge`), for tests/test_slurm.py.

munged, slurmctld and slurmd run as root in the foreground, each in its own process group, from a
temporary folder holding the munge key and socket, slurm.conf (from slurm.conf.template), gres.conf,
state, spool and logs. Nothing under /etc or /run is touched; clients find the cluster through SLURM_CONF.

By hand (as root):

    python tests/slurm/local_slurm.py start /tmp/imagic-slurm     # prints the environment to export
    python tests/slurm/local_slurm.py stop /tmp/imagic-slurm
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo", "srun")
PARTITION = "imagictest"


def missing_binaries() -> list[str]:
    """Daemons and client commands not on PATH (nor in /usr/sbin, where Debian puts the daemons)."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    return [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name, path=search) is None]


def _which(name: str) -> str:
    found = shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    if found is None:
        raise FileNotFoundError(name)
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_hardware() -> tuple[str, int, int]:
    """The node line `slurmd -C` reports for this machine (real CPUs, sockets, cores, RealMemory)."""
    line = subprocess.run([_which("slurmd"), "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    fields = dict(item.split("=", 1) for item in line.split())
    fields.pop("NodeName", None)
    hardware = " ".join(f"{key}={value}" for key, value in fields.items())
    return hardware, int(fields["CPUs"]), int(fields["RealMemory"])


class LocalSlurm:
    """Start with `start()`, always `stop()` (idempotent: kills what it started, by process group)."""

    def __init__(self, root: str | os.PathLike | None = None):
        if root is None:
            root = tempfile.mkdtemp(prefix="imagic-slurm-")
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.partition = PARTITION
        self.conf = self.root / "slurm.conf"
        self.jobcomp = self.root / "log" / "jobcomp.txt"
        self.munge_socket = self.root / "munge" / "munge.sock"
        self.bin = self.root / "bin"
        self.pids: dict[str, int] = {}
        self.cpus = self.real_memory = 0

    # ---- environment for clients and jobs ---------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        """Variables to add for `sbatch`/`squeue`/... and for the jobs (sbatch --export=ALL passes them on).

        The srun wrapper in bin/ exists because the jobstep executor of snakemake-executor-plugin-slurm drops
        every SLURM_* variable, SLURM_CONF included, before its inner `srun`; on a real cluster srun then
        reads /etc/slurm/slurm.conf (or the configless cache), which this throw-away cluster does not write.
        """
        return {"SLURM_CONF": str(self.conf), "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"}

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run([_which(args[0]), *args[1:]], capture_output=True, text=True, check=check,
                              timeout=timeout, env={**os.environ, **self.env})

    # ---- start / stop ----------------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> "LocalSlurm":
        # munged wants execute permission for all on every folder above its socket
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        for sub in ("munge", "state", "spool", "log", "bin"):
            (self.root / sub).mkdir(exist_ok=True)
        os.chmod(self.root / "munge", 0o755)
        key = self.root / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)

        hardware, self.cpus, self.real_memory = _node_hardware()
        template = string.Template((HERE / "slurm.conf.template").read_text())
        self.conf.write_text(template.substitute(
            host=self.host, root=self.root, ctld_port=_free_port(), slurmd_port=_free_port(),
            munge_socket=self.munge_socket, jobcomp=self.jobcomp, node_hardware=hardware, partition=self.partition))
        (self.root / "gres.conf").write_text("Name=gpu File=/dev/null\nName=gpu File=/dev/zero\n")
        srun = self.bin / "srun"
        srun.write_text(f'#!/bin/sh\nSLURM_CONF="{self.conf}" exec {_which("srun")} "$@"\n')
        srun.chmod(0o755)

        try:
            self._spawn("munged", _which("munged"), "-F", f"--key-file={key}", f"--socket={self.munge_socket}",
                        f"--pid-file={self.root / 'munge' / 'munged.pid'}", f"--seed-file={self.root / 'munge' / 'seed'}",
                        f"--log-file={self.root / 'log' / 'munged.log'}")
            self._wait(lambda: self.munge_socket.exists(), timeout, "munged socket")
            self._spawn("slurmctld", _which("slurmctld"), "-D", "-i", "-f", str(self.conf))
            self._spawn("slurmd", _which("slurmd"), "-D", "-f", str(self.conf))
            self._wait(self._node_idle, timeout, f"node {self.host} idle in partition {self.partition}")
        except Exception:
            self.stop()
            raise
        (self.root / "cluster.json").write_text(json.dumps({"pids": self.pids, "conf": str(self.conf)}))
        return self

    def _spawn(self, name: str, *command: str) -> None:
        out = open(self.root / "log" / f"{name}.out", "w")
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **self.env})
        self.pids[name] = process.pid
        time.sleep(0.2)
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited at once:\n{self.logs()}")

    def _node_idle(self) -> bool:
        done = self.run("sinfo", "-h", "-p", self.partition, "-o", "%t", check=False, timeout=10)
        state = done.stdout.strip()
        if state.startswith(("drain", "inval", "down")) and "slurmd" in self.pids:
            raise RuntimeError(f"node is {state}:\n{self.logs()}")
        return state in ("idle", "mix", "alloc")

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name, pid in self.pids.items():
                if not _alive(pid):
                    raise RuntimeError(f"{name} died while waiting for {what}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {what} after {timeout} s:\n{self.logs()}")
            time.sleep(0.5)

    def stop(self) -> None:
        """Cancel every job, then end slurmd, slurmctld and munged (SIGTERM, then SIGKILL) by process group."""
        if "slurmctld" in self.pids and _alive(self.pids["slurmctld"]):
            self.run("scancel", "--quiet", "--partition", self.partition, check=False, timeout=15)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                left = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10).stdout.strip()
                if not left:
                    break
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self.pids.pop(name, None)
            if pid is not None:
                _kill_group(pid)

    def logs(self, tail: int = 30) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            if path.is_file():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {path.name}\n" + "\n".join(lines))
        return "\n".join(parts)

    # ---- what the cluster saw ------------------------------------------------------------------------------
    def jobcomp_records(self) -> list[dict[str, str]]:
        """One dict per finished job from jobcomp/filetxt (JobId, Name, JobState, Partition, Tres, ...)."""
        if not self.jobcomp.exists():
            return []
        records = []
        for line in self.jobcomp.read_text().splitlines():
            record = {}
            for item in line.split():
                if "=" in item:
                    key, value = item.split("=", 1)
                    record[key] = value
            records.append(record)
        return records

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows (finished ones for MinJobAge): id, state, name, comment, partition."""
        out = self.run("squeue", "-h", "--states=all", "-o", "%i|%T|%j|%k|%P").stdout
        keys = ("id", "state", "name", "comment", "partition")
        return [dict(zip(keys, line.split("|"))) for line in out.splitlines() if line.strip()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child counts as gone
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _kill_group(pid: int, grace: float = 10) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.2)


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[1] not in ("start", "stop"):
        print(__doc__, file=sys.stderr)
        return 2
    cluster = LocalSlurm(argv[2])
    if argv[1] == "start":
        missing = missing_binaries()
        if missing:
            print(f"missing: {' '.join(missing)} (apt-get install -y slurm-wlm munge)", file=sys.stderr)
            return 1
        cluster.start()
        for key, value in cluster.env.items():
            print(f"export {key}={value}")
        print(f"# partition: {cluster.partition}; logs: {cluster.root / 'log'}", file=sys.stderr)
        return 0
    state = json.loads((cluster.root / "cluster.json").read_text())
    cluster.pids = state["pids"]
    cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
