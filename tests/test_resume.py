"""A fine-tune killed with SIGKILL resumes from its last checkpoint and ends bit-identical."""

import os
import signal
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
    from imagic_steps.models import load_components
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
        assert second.returncode != 0 and "cannot be locked" in second.stdout + second.stderr
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_a_full_disk_is_one_clear_line_and_the_rerun_after_freeing_space_completes(tmp_path, uninterrupted):
    """results/ on a 2 MB tmpfs: the embed artefacts fit, the tiny model's 4.5 MB fine-tuned UNet does not."""
    command = kill_workdir(tmp_path)
    results = tmp_path / "results"
    results.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(results)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
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
    finally:
        subprocess.run(["umount", "-l", str(results)], capture_output=True)
