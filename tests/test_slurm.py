"""The workflow on a real (one-node, throw-away) SLURM cluster through profiles/slurm.

Needs Debian's `slurm-wlm` and `munge` (`apt-get install -y slurm-wlm munge`, done by .ci/run) and root
(the daemons run as root). Skips only when the SLURM or munge binaries are missing.

The cluster has no slurmdbd, so `sacct` is disabled ("Slurm accounting storage is disabled"): the plugin is
told to poll `squeue` instead (`--slurm-status-command squeue`, with MinJobAge=600 in slurm.conf so finished
jobs stay visible). Its one node has this machine's real CPUs and memory, plus two fake GPUs (gres.conf on
/dev/null and /dev/zero) so that the GPU rules' `--gpus=1` requests are scheduled.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from test_workflow import REPO, SNAKEMAKE, write_config

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location("local_slurm", Path(__file__).parent / "slurm" / "local_slurm.py")
local_slurm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_slurm)

PROFILE = REPO / "profiles" / "slurm"
GPU_RULES = {"embed", "finetune", "sample", "sdedit", "score"}
# the tiny config of tests/test_workflow.py: 2 pairs x 2 variants sharing their embed, 2 alphas, 1 seed
EXPECTED_JOBS = {"embed": 2, "finetune": 4, "sample": 8, "score": 4, "pair_montage": 2, "pair_tradeoff": 2,
                 "overview_montage": 1, "sample_table": 1, "evaluate": 1}
RUN_TIMEOUT = 540


@pytest.fixture(scope="module")
def slurm_cluster():
    missing = local_slurm.missing_binaries()
    if missing:
        pytest.skip(f"SLURM/munge binaries not installed: {', '.join(missing)} (apt-get install -y slurm-wlm munge)")
    assert os.geteuid() == 0, "the throw-away SLURM cluster runs munged/slurmctld/slurmd as root: run as root"
    cluster = local_slurm.LocalSlurm()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


def profile_resources_for(cluster) -> list[str]:
    """`--set-resources` from the profile's own entries, fitted to the test node.

    Only the partition (the test partition), mem_mb (at most the node's memory) and the CPU counts (at most
    the node's CPUs) change; gpu, gpu_model and runtime are the profile's. A command-line --set-resources
    replaces the profile's whole set-resources, so every entry is passed on.
    """
    profile = yaml.safe_load((PROFILE / "profile.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["retries"] >= 1
    overrides = []
    for rule, resources in profile["set-resources"].items():
        resources = {**resources, "slurm_partition": cluster.partition}
        resources["mem_mb"] = min(resources.get("mem_mb", 1000), cluster.real_memory // 4)
        for key in ("cpus_per_gpu", "cpus_per_task"):
            if key in resources:
                resources[key] = min(resources[key], 1)
        overrides += [f"{rule}:{key}={value}" for key, value in resources.items()]
    return overrides


def rule_of(comment: str) -> str:
    """The plugin's job comment is rule_<rule>[_wildcards_<values>]."""
    match = re.fullmatch(r"rule_(\w+?)(?:_wildcards_.*)?", comment)
    assert match, comment
    return match.group(1)


def cancel_first_running(cluster, rule: str, process: subprocess.Popen, found: dict) -> None:
    """scancel the first job of `rule` seen RUNNING (the workflow must retry it); runs in a thread."""
    while process.poll() is None:
        try:
            jobs = cluster.jobs()
        except subprocess.SubprocessError:
            jobs = []
        for job in jobs:
            if job["state"] == "RUNNING" and job["comment"].startswith(f"rule_{rule}_"):
                cluster.run("scancel", job["id"])
                found.update(job)
                return
        time.sleep(0.3)


def end(process: subprocess.Popen) -> None:
    """Stop a run that overran: SIGTERM to its process group (snakemake then scancels its jobs), then SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=grace)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def test_workflow_on_slurm_matches_local_run_and_survives_scancel(slurm_cluster, tiny, tmp_path):
    cluster = slurm_cluster
    started = time.monotonic()
    env = {**os.environ, **cluster.env, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    on_slurm, local = tmp_path / "slurm", tmp_path / "local"
    for workdir in (on_slurm, local):
        workdir.mkdir()
        write_config(workdir)

    slurm_command = [
        *SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(on_slurm),
        "--configfile", str(on_slurm / "config.yaml"),
        "--workflow-profile", str(PROFILE),
        # the user's overrides for this cluster: partition (and sizes that fit its one small node) ...
        "--default-resources", f"slurm_partition={cluster.partition}",
        "--set-resources", *profile_resources_for(cluster),
        # ... no slurmdbd here, so no sacct: poll squeue; poll early, the tiny jobs take seconds
        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
        "--latency-wait", "5",  # a local filesystem, not the profile's slow shared one
    ]
    # the local reference: same config, same seeds, CPU; its samples only (runs while SLURM jobs queue)
    local_command = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(local),
                     "--configfile", str(local / "config.yaml"), "--cores", "1", "--until", "sample"]

    slurm_log, local_log = tmp_path / "slurm_run.log", tmp_path / "local_run.log"
    with open(slurm_log, "w") as slurm_out, open(local_log, "w") as local_out:
        slurm_run = subprocess.Popen(slurm_command, stdout=slurm_out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        local_run = subprocess.Popen(local_command, stdout=local_out, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        cancelled: dict[str, str] = {}
        canceller = threading.Thread(target=cancel_first_running, args=(cluster, "finetune", slurm_run, cancelled))
        canceller.start()
        try:
            slurm_run.wait(timeout=RUN_TIMEOUT)
            local_run.wait(timeout=max(1.0, RUN_TIMEOUT - (time.monotonic() - started)))
        finally:
            for process in (slurm_run, local_run):
                end(process)
            canceller.join(timeout=30)
    output = slurm_log.read_text()
    assert slurm_run.returncode == 0, f"snakemake on SLURM failed:\n{output[-6000:]}\n{cluster.logs()}"
    assert local_run.returncode == 0, f"local reference run failed:\n{local_log.read_text()[-4000:]}"

    # ---- every job went through sbatch, except the two local rules: the target and the plan record ----------
    run_id = re.search(r"SLURM run ID: (\S+)", output).group(1)
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output)
    local_rules = set(re.findall(r"^localrule (\w+):", output, re.M))
    assert local_rules <= {"all", "experiment_plan"}, f"jobs run outside SLURM: {local_rules}"
    slurm_ids = [slurm_id for _, slurm_id in submitted]
    assert len(set(slurm_ids)) == len(slurm_ids)
    jobs = {job["id"]: job for job in cluster.jobs() if job["name"] == run_id}
    assert set(jobs) == set(slurm_ids), "sbatch submissions and the jobs slurmctld knows differ"
    finished = {record["JobId"]: record for record in cluster.jobcomp_records()}
    assert set(slurm_ids) <= set(finished), "a submitted job is missing from the job completion log"

    # one cancelled finetune job, resubmitted (profile `retries`) under a new SLURM id; all others completed
    assert cancelled, "no finetune job was seen running to cancel"
    assert jobs[cancelled["id"]]["state"] == "CANCELLED"
    assert finished[cancelled["id"]]["JobState"] == "CANCELLED"
    assert finished[cancelled["id"]]["StartTime"] != "Unknown", "the cancelled job never started"
    assert f"SLURM-job '{cancelled['id']}' failed, SLURM status is: 'CANCELLED'" in output
    completed = [job for job in jobs.values() if job["state"] == "COMPLETED"]
    assert len(completed) == len(jobs) - 1
    assert any(job["comment"] == cancelled["comment"] for job in completed), "the cancelled job was not rerun"
    assert len({job["comment"] for job in completed}) == len(completed)
    counts: dict[str, int] = {}
    for job in completed:
        counts[rule_of(job["comment"])] = counts.get(rule_of(job["comment"]), 0) + 1
    assert counts == EXPECTED_JOBS
    assert len({snakemake_id for snakemake_id, _ in submitted}) == sum(EXPECTED_JOBS.values())

    # the profile's requests reached SLURM: a GPU for the GPU rules, none for the others, the test partition
    for job in jobs.values():
        details = cluster.run("scontrol", "show", "job", "-o", job["id"]).stdout
        assert f"Partition={cluster.partition}" in details
        if rule_of(job["comment"]) in GPU_RULES:
            assert "TresPerJob=gres:gpu:1" in details, details
        else:
            assert not re.search(r"Tres\w*=\S*gpu", details), details

    # ---- same results as the local run ---------------------------------------------------------------------
    samples = sorted(p.relative_to(on_slurm) for p in on_slurm.glob("results/samples/*/*/*.png"))
    assert len(samples) == EXPECTED_JOBS["sample"]
    assert samples == sorted(p.relative_to(local) for p in local.glob("results/samples/*/*/*.png"))
    for sample in samples:
        assert (on_slurm / sample).read_bytes() == (local / sample).read_bytes(), f"{sample} differs"
    for final in ("montages/overview.png", "tables/samples.csv", "tables/summary.md", "montages/best_edits.png"):
        assert (on_slurm / "results" / final).stat().st_size > 0

    print(f"SLURM test: {len(slurm_ids)} sbatch jobs, cancelled {cancelled['id']} "
          f"({cancelled['comment']}), {time.monotonic() - started:.0f} s")
