"""Several GPUs, simulated: `claim_device` on a machine whose torch says CUDA is there (monkeypatched device count and
availability, CUDA_VISIBLE_DEVICES, a temporary lock folder). Concurrent jobs get distinct devices, a job killed with
SIGKILL leaves its device free (the kernel drops its fcntl lock), and a job that finds every device held stops with
one line naming the fix. How many model jobs Snakemake runs at once is its own `--resources gpu=N` accounting over
the gpu=1 each model rule asks for (tests/test_workflow.py checks the plan asks it)."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from imagic_steps.execution import workflow_job
from imagic_steps.execution.workflow_job import claim_device, physical_gpu_ids

REPO = Path(__file__).resolve().parents[1]


def claim_now(preference: str = "cuda") -> str:
    """Claim a device and give it back at once: the device it got, or the error; fails if the claim waits."""
    outcome = []

    def claim():
        try:
            with claim_device(preference) as device:
                outcome.append(device)
        except RuntimeError as error:
            outcome.append(str(error))

    claimer = threading.Thread(target=claim, daemon=True)
    claimer.start()
    claimer.join(timeout=10)
    assert not claimer.is_alive(), "the claim is waiting for a device"
    return outcome[0]


@pytest.fixture
def gpus(monkeypatch, tmp_path):
    """Three visible CUDA devices, physical ids 3, 5 and 7, locked under a temporary folder."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,7")
    monkeypatch.setenv("IMAGIC_STEPS_GPU_LOCKS", str(tmp_path / "locks"))
    monkeypatch.setattr(workflow_job, "LOCK_DIR", tmp_path / "locks")
    # a claim turns TF32 on for the process: put it back after the test
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", torch.backends.cuda.matmul.allow_tf32)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", torch.backends.cudnn.allow_tf32)
    return tmp_path / "locks"


def test_physical_ids_come_from_cuda_visible_devices_or_the_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6, 2,4")  # more ids than devices torch sees: the first two
    assert physical_gpu_ids() == ["6", "2"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert physical_gpu_ids() == ["0", "1"]


def test_concurrent_jobs_get_distinct_devices_and_one_more_stops_with_one_line(gpus):
    """Three jobs (threads: flock locks conflict between open files, so threads contend as processes do) hold all three
    devices at once; a fourth finds none free and fails at once with one line (it does not wait: under Snakemake's
    `--resources gpu=N` with N at most the GPU count no fourth job starts); once the jobs end their devices are free."""
    held = threading.Barrier(4)
    release = threading.Event()
    claimed = {}

    def job(name):
        with claim_device("cuda") as device:
            claimed[name] = device
            held.wait(timeout=30)
            release.wait(timeout=30)

    threads = [threading.Thread(target=job, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    try:
        held.wait(timeout=30)
        assert sorted(claimed.values()) == ["cuda:0", "cuda:1", "cuda:2"]
        assert sorted(p.name for p in gpus.iterdir()) == ["gpu3.lock", "gpu5.lock", "gpu7.lock"]
        assert claim_now() == "all 3 visible GPUs are held by other jobs; cap the 'gpu' resource at the GPU count"
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=30)
    with claim_device("cuda") as device, claim_device("auto") as second:
        assert (device, second) == ("cuda:0", "cuda:1")


def test_cpu_and_auto_without_cuda_claim_nothing(gpus, monkeypatch):
    with claim_device("cpu") as device:
        assert device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with claim_device("auto") as device:
        assert device == "cpu"
    with pytest.raises(RuntimeError, match="device 'cuda' requested but no CUDA device is visible"):
        with claim_device("cuda"):
            pass
    assert not gpus.exists()


CLAIMER = textwrap.dedent("""
    import time, torch
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: 2
    from imagic_steps.execution.workflow_job import claim_device
    with claim_device("cuda") as device:
        print(device, flush=True)
        time.sleep(600)
""")


def test_a_job_killed_with_sigkill_leaves_its_device_free(gpus, monkeypatch):
    """A job process claims the first of two devices and is killed with SIGKILL (no `finally` runs): the kernel drops
    its fcntl lock with the process, so the device is free again at once; the lock file stays and is reused."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    victim = subprocess.Popen([sys.executable, "-c", CLAIMER], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert victim.stdout.readline().strip() == "cuda:0"
        assert claim_now() == "cuda:1"  # physical 3 is the other process's
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        victim.kill()
        victim.wait()
    assert (gpus / "gpu3.lock").exists()
    assert claim_now() == "cuda:0"
