"""A fine-tune killed with SIGKILL resumes from its last checkpoint and ends bit-identical."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from imagic_steps.io import load_tensors

SCRIPT = textwrap.dedent("""
    import logging, sys, torch
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)
    from imagic_steps.embed import optimize_embedding
    from imagic_steps.finetune import finetune_unet
    from imagic_steps.finetune_artefact import save_finetuned
    from imagic_steps.images import load_image, pil_to_tensor
    from imagic_steps.model_loading import load_components
    from imagic_steps.variants import EmbedParams, FinetuneParams

    out, checkpoints = sys.argv[1], sys.argv[2]
    components = load_components("tiny")
    image = pil_to_tensor(load_image("config/images/chelsea.png", 64))
    embed = optimize_embedding(components, image, "a cat", EmbedParams(steps=2), progress=False)
    params = FinetuneParams(steps=60, lr=1e-3, checkpoint_every=5)
    result = finetune_unet(components, embed, params, checkpoint_dir=checkpoints, progress=False)
    save_finetuned(out, result)
""")


def run(out, checkpoints, **kwargs):
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), str(checkpoints)], **kwargs)


@pytest.mark.slow
def test_sigkill_mid_finetune_then_resume_is_bit_identical(tmp_path):
    reference = run(tmp_path / "reference.safetensors", tmp_path / "ref_checkpoints")
    assert reference.wait(timeout=300) == 0

    victim = run(tmp_path / "resumed.safetensors", tmp_path / "checkpoints")
    marker = tmp_path / "checkpoints" / "latest.json"
    deadline = time.time() + 300
    while not marker.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, "training finished before it could be killed; raise the step count"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert not (tmp_path / "resumed.safetensors").exists()
    assert not list((tmp_path / "checkpoints").glob("*.tmp*"))

    resumed = run(tmp_path / "resumed.safetensors", tmp_path / "checkpoints", stderr=subprocess.PIPE, text=True)
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert "resumed fine-tuning from step" in stderr
    a = load_tensors(tmp_path / "reference.safetensors")
    b = load_tensors(tmp_path / "resumed.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


KILL_STEPS = {"embed": {"steps": 40}, "finetune": {"steps": 40, "checkpoint_every": 5}, "sample": {"steps": 10}}
COMPARED = ("embed/**/*.safetensors", "finetune/**/*.safetensors", "samples/**/*.png", "scores/**/*.csv")


def kill_workdir(folder):
    """A one-pair tiny experiment whose stages each take seconds, with fine-tune checkpoints."""
    import shutil

    import yaml

    repo = Path(__file__).resolve().parents[1]
    (folder / "images").mkdir(parents=True)
    shutil.copy(repo / "config/images/chelsea.png", folder / "images/cat.png")
    (folder / "pairs.tsv").write_text("pair_id\timage\tprompt\ncat\timages/cat.png\ta photo of a gray cat\n")
    config = {"pairs": "pairs.tsv", "model": {"id": "tiny"}, "seeds": [0, 1], "alphas": [0.0, 1.0],
              "variants": {"original": {"preset": "original", **KILL_STEPS}}, "scorer": {"tiny": True}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "--directory", str(folder),
            "--configfile", str(folder / "config.yaml"), "--cores", "2"]


def compared_files(results):
    return {str(p.relative_to(results)): p.read_bytes() for pattern in COMPARED for p in sorted(results.glob(pattern))}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    done = subprocess.run(kill_workdir(folder), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return compared_files(folder / "results")


@pytest.mark.slow
@pytest.mark.parametrize("moment, ready", [
    ("embed", lambda results: list(results.glob("logs/embed/*/*.log"))),
    ("finetune", lambda results: list(results.glob("resume/**/latest.json"))),
    ("sample", lambda results: list(results.glob("samples/*/*/*.png"))),
])
def test_sigkill_of_snakemake_then_a_plain_rerun_is_byte_identical(tmp_path, uninterrupted, moment, ready):
    import psutil

    command = kill_workdir(tmp_path)
    results = tmp_path / "results"
    victim = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not ready(results) and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert victim.poll() is None, f"the run finished before the {moment} stage could be interrupted"
    jobs = psutil.Process(victim.pid).children(recursive=True)
    assert jobs, f"no job was running during {moment}"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    _, running = psutil.wait_procs(jobs, timeout=10)
    assert not running, f"jobs outlived the killed Snakemake: {[p.cmdline() for p in running]}"
    assert list((tmp_path / ".snakemake/locks").glob("*.lock")), "the kill left no lock: nothing was tested"

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)  # the plain rerun, no --unlock
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "left by a Snakemake run that is no longer running" in rerun.stderr
    assert compared_files(results) == uninterrupted


@pytest.mark.slow
def test_a_live_snakemake_keeps_its_locks(tmp_path):
    """Lock cleaning must never break into a run that is still going: a second run meanwhile is refused."""
    command = kill_workdir(tmp_path)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list((tmp_path / ".snakemake/locks").glob("*.lock")) and time.time() < deadline:
            time.sleep(0.05)
        second = subprocess.run(command, capture_output=True, text=True, timeout=300)
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 1 and lines and lines[-1].startswith("error: working directory "), second.stderr
        assert f"pid {first.pid}, started " in lines[-1] and "do not use --unlock" in lines[-1], lines[-1]
        assert "LockException" not in second.stderr and "Traceback" not in second.stderr
        dry = subprocess.run(command + ["-n"], capture_output=True, text=True, timeout=300)  # takes no lock: runs
        assert dry.returncode == 0 and "error: " not in dry.stderr, dry.stderr[-3000:]
        assert first.poll() is None and list((tmp_path / ".snakemake/locks").glob("*.lock"))
    finally:
        first.kill()
        first.wait()


@contextlib.contextmanager
def small_disk(folder: Path, size: str):
    """`folder` as a tmpfs of `size` (e.g. "2m") for the block (root only: the test is skipped elsewhere)."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_is_one_clear_line_and_the_rerun_after_freeing_space_completes(tmp_path, uninterrupted):
    """results/ on a 2 MB tmpfs: the embed artefacts fit, the tiny model's 4.5 MB fine-tuned UNet does not."""
    command = kill_workdir(tmp_path)
    results = tmp_path / "results"
    with small_disk(results, "2m"):
        full = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert full.returncode != 0
        errors = [line for line in full.stderr.splitlines() if line.startswith("error: ")]
        assert errors and "(disk): no space left on the device" in errors[0], full.stderr[-3000:]
        assert not list(results.glob("finetune/*/*/finetune.safetensors"))  # nothing that looks complete
        assert not list(results.rglob("*.tmp*"))
        subprocess.run(["mount", "-o", "remount,size=200m", str(results)], check=True)
        rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert compared_files(results) == uninterrupted


def test_a_live_owner_stops_a_second_locking_run_with_one_line_and_lock_free_runs_pass(tmp_path):
    """claim_working_directory beside a live run (this test's parent process stands in for it: an owner record and
    a lock file): a run that would lock stops with one line naming it; a dry run, --unlock or --list passes and
    leaves the live run's locks and record alone; once its owner is gone, the next run removes the stale locks."""
    from imagic_steps.errors import PlanError
    from imagic_steps.execution.snakemake_runs import LOCKS, OWNERS, process_identity, claim_working_directory

    live = tmp_path / OWNERS / process_identity(os.getppid())
    live.parent.mkdir(parents=True)
    live.touch()
    lock = tmp_path / LOCKS / "0.output.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("results/plan.json\n")

    with pytest.raises(PlanError) as refused:
        claim_working_directory(tmp_path)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"working directory {tmp_path.resolve()} (.snakemake/locks): ")
    assert f"a Snakemake run holds the locks here: host {socket.gethostname()}, pid {os.getppid()}, started " in message
    assert re.search(r"started \d{4}-\d\d-\d\d \d\d:\d\d:\d\d; wait for it to finish or stop it \(kill \d+\), "
                     r"then rerun; do not use --unlock", message), message
    assert claim_working_directory(tmp_path, takes_lock=False) == []  # -n, --unlock, --list: no lock, no record
    assert lock.exists() and sorted(p.name for p in live.parent.iterdir()) == [live.name]

    live.rename(live.parent / f"{socket.gethostname()}_999999999_1")  # its owner is gone (no such pid)
    assert claim_working_directory(tmp_path) == [lock]
    assert not lock.exists() and [p.name for p in live.parent.iterdir()] == [process_identity(os.getpid())]
    assert claim_working_directory(tmp_path) == []  # this process parsing the workflow again is not "another run"


def test_a_live_owner_on_another_host_is_named_and_the_fix_is_to_delete_its_record_if_it_is_gone(tmp_path):
    from imagic_steps.errors import PlanError
    from imagic_steps.execution.snakemake_runs import OWNERS, claim_working_directory

    record = tmp_path / OWNERS / "gpu-node-7_4242_123456"
    record.parent.mkdir(parents=True)
    record.touch()
    with pytest.raises(PlanError, match=r"a Snakemake run is starting here: host gpu-node-7, pid 4242, started "
                                        r"\d{4}-.*; wait for it to finish or stop it on gpu-node-7, then rerun; if it "
                                        r"is no longer running there, delete .snakemake/imagic_steps_owners/"
                                        r"gpu-node-7_4242_123456 and rerun"):
        claim_working_directory(tmp_path)


def test_which_snakemake_commands_lock_is_read_from_its_command_line():
    """At parse time Snakemake 9 says nothing about -n / --unlock / --nolock on the workflow object (workflow.dryrun
    is False, execution_settings None); snakemake_takes_lock reads the `args` of snakemake.cli.args_to_api."""
    from snakemake.cli import parse_args

    from imagic_steps.execution.snakemake_runs import snakemake_takes_lock

    cli = {"__name__": "snakemake.cli", "snakemake_takes_lock": snakemake_takes_lock}  # a stand-in for its frame
    exec("def args_to_api(args, parser):\n    return snakemake_takes_lock(workflow=None)\n", cli)

    def takes_lock(*argv):
        return cli["args_to_api"](parse_args(list(argv))[1], None)

    assert takes_lock("--cores", "1") and takes_lock("--touch")
    assert takes_lock("--report", "r.html", "--report-after-run")
    for argv in (["-n"], ["--unlock"], ["--nolock"], ["--list"], ["--summary"], ["--dag"], ["--report", "r.html"],
                 ["--lint"], ["--cleanup-metadata", "x"]):
        assert not takes_lock(*argv), argv
    assert snakemake_takes_lock(workflow=None)  # no command line (the Python API): taken to lock


def checkpoint_parts():
    """A model, an optimiser with state, a scaler and a generator: what ResumeCheckpoints.save writes."""
    model = torch.nn.Linear(8, 8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 8)).sum().backward()
    optimizer.step()
    return model, optimizer, torch.amp.GradScaler("cpu", enabled=False), torch.Generator().manual_seed(0)


def test_a_disk_that_fills_while_writing_the_optimiser_checkpoint_is_one_line_and_keeps_the_previous_one(
        tmp_path, monkeypatch, capsys):
    """torch.save's own file writer reports a full disk as `RuntimeError: [enforce fail at inline_container.cc:672] .
    unexpected pos 576 vs 534` (torch 2.14.1 on a 1 MB tmpfs); writing through a Python file it raises that while
    handling the OSError ENOSPC, as the fake below does. The job ends with the one-line disk error."""
    import errno
    import logging

    import imagic_steps.finetune as finetune
    from imagic_steps.execution import workflow_job
    from imagic_steps.variants import FinetuneParams

    model, optimizer, scaler, generator = checkpoint_parts()
    checkpoints = finetune.ResumeCheckpoints(tmp_path / "resume", FinetuneParams(checkpoint_every=5))
    checkpoints.save(5, model, optimizer, scaler, generator, [0.5] * 5, "full")
    before = {p.name: p.read_bytes() for p in (tmp_path / "resume").iterdir()}

    def full_disk_save(obj, handle):
        handle.write(b"PK\x03\x04" + b"\0" * 100)  # half a zip
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")

    monkeypatch.setattr(torch, "save", full_disk_save)
    monkeypatch.setattr(workflow_job, "exit_with_parent", lambda: None)  # no watcher thread in the test process
    monkeypatch.setattr(logging, "basicConfig", lambda **kwargs: None)  # leave pytest's logging alone
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        with workflow_job.job_context(tmp_path / "finetune.log"):
            checkpoints.save(10, model, optimizer, scaler, generator, [0.5] * 10, "full")
    lines = capsys.readouterr().err.strip().splitlines()
    assert ended.value.code == 1 and len(lines) == 1, lines
    assert lines[0] == (f"error: {tmp_path / 'resume' / 'step_000010.optim.pt'} (disk): no space left on the device; "
                        "free space there and rerun the same command (finished work is kept, nothing half-written "
                        "looks complete)")
    assert {p.name: p.read_bytes() for p in (tmp_path / "resume").iterdir()} == before  # step 5 in force, no leftovers
    monkeypatch.undo()
    assert checkpoints.restore(*checkpoint_parts(), losses := []) == 5 and losses == [0.5] * 5


def test_save_torch_on_a_really_full_disk_raises_enospc_naming_the_file_and_keeps_the_old_file(tmp_path):
    """The real torch.save on a 1 MB tmpfs (root only; skipped elsewhere): the errno survives, nothing half-written."""
    import errno

    from imagic_steps.io import save_torch

    disk = tmp_path / "disk"
    with small_disk(disk, "1m"):
        save_torch({"small": torch.zeros(10)}, disk / "state.pt")
        before = (disk / "state.pt").read_bytes()
        with pytest.raises(OSError) as full:
            save_torch({"big": torch.zeros(1_000_000)}, disk / "state.pt")  # 4 MB
        assert full.value.errno == errno.ENOSPC and full.value.filename == str(disk / "state.pt")
        assert [p.name for p in disk.iterdir()] == ["state.pt"] and (disk / "state.pt").read_bytes() == before
        assert torch.equal(torch.load(disk / "state.pt", weights_only=True)["small"], torch.zeros(10))
