"""A fine-tune killed with SIGKILL resumes from its last checkpoint and ends bit-identical."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from imagic_steps.io import load_tensors

SCRIPT = textwrap.dedent("""
    import logging, sys, torch
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)
    from imagic_steps.embed import optimize_embedding
    from imagic_steps.finetune import finetune_unet, save_finetuned
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
