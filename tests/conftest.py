"""Test set-up: offline hub, a per-session preset cache, single-threaded torch for speed and determinism."""

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from imagic_steps.variants import SampleParams  # noqa: E402

torch.set_num_threads(1)

# pytest-xdist runs tests on every core (pyproject.toml: -n auto --dist loadgroup), a module's tests on one worker
# (pytest_collection_modifyitems below). Tests marked ONE_AT_A_TIME share one worker and run one after another:
# those that run an SD-sized model (two would not fit in 24 GiB beside each other) and those that run Snakemake in
# the repository itself (two live runs in one working directory race on the lock files of its .snakemake folder:
# FileNotFoundError .snakemake/locks/0.input.lock).
ONE_AT_A_TIME = pytest.mark.xdist_group("one_at_a_time")


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    """Every other test runs on its module's worker, so that a module-scoped fixture (a finished tiny run, loaded
    models) is built once rather than once on each worker."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(scope="session", autouse=True)
def preset_cache(tmp_path_factory):
    """Build presets once per session in a temporary cache, shared with subprocesses through the env and, under
    pytest-xdist, by every worker (ensure_preset builds atomically, so two workers may race for a preset)."""
    cache = os.environ.get("IMAGIC_STEPS_TEST_CACHE")
    if not cache:
        session_root = tmp_path_factory.getbasetemp()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            session_root = session_root.parent  # the run's folder, above each worker's own
        cache = str(session_root / "imagic_cache")
        os.makedirs(cache, exist_ok=True)
    os.environ["IMAGIC_STEPS_CACHE"] = cache
    return cache


@pytest.fixture(scope="session")
def tiny(preset_cache):
    from imagic_steps.model_loading import load_components

    return load_components("tiny")


@pytest.fixture(scope="module")
def load(preset_cache):
    """`load(name)`: a preset's components, loaded once per test module (a -k run loads only those it uses)."""
    from imagic_steps.model_loading import load_components

    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_components(name)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def cat_image_path(tmp_path_factory):
    from skimage import data

    path = tmp_path_factory.mktemp("images") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


@pytest.fixture(scope="session")
def astronaut_image_path(tmp_path_factory):
    from skimage import data

    path = tmp_path_factory.mktemp("images") / "astronaut.png"
    Image.fromarray(data.astronaut()).save(path)
    return path


@pytest.fixture(scope="session")
def cat_tensor(cat_image_path):
    from imagic_steps.images import load_image, pil_to_tensor

    return pil_to_tensor(load_image(cat_image_path, 64))


def random_image(seed: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def hub_snapshot(hub: Path, repo_id: str, commit: str, source: Path, move: bool = False) -> Path:
    """Lay `source`'s files into the hub cache `hub` as huggingface_hub writes a download of `repo_id` at `commit`:
    `models--org--name/blobs/<sha256>`, `snapshots/<commit>/<path>` a relative symlink to its blob, `refs/main`
    naming the commit. `move` moves the files instead of copying them. Returns the snapshot folder."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    for path in sorted(p for p in Path(source).rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
        blob = repo / "blobs" / digest.hexdigest()
        if not blob.exists():
            (os.replace if move else shutil.copyfile)(path, blob)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs" / "main").write_text(commit)
    return snapshot


# Shared by the stage tests (test_embed, test_finetune, test_finetune_artefact, test_sample, test_edit_pipeline):
# import the names with `from conftest import FAST_SAMPLE, PROMPT, state_equal`.
PROMPT = "a photo of a gray cat"
FAST_SAMPLE = SampleParams(steps=4, guidance_scale=3.0)


def planned_resources_of(output: str) -> dict[str, list[dict[str, str]]]:
    """A verbose Snakemake dry run's output -> {rule: [resources of each job]}."""
    jobs: dict[str, list[dict[str, str]]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", output):
        head = re.match(r"(?:local)?rule (\w+):", block)
        found = re.search(r"^\s+resources: (.+)$", block, re.M)
        if head and found:
            jobs.setdefault(head.group(1), []).append(dict(kv.split("=", 1) for kv in found.group(1).split(", ")))
    return jobs


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def embedded(tiny, cat_tensor):
    """Stage A on the cat image (40 steps), once per test module."""
    from imagic_steps.embed import optimize_embedding
    from imagic_steps.variants import EmbedParams

    return optimize_embedding(tiny, cat_tensor, PROMPT, EmbedParams(steps=40, lr=5e-2, seed=0), progress=False)


# The stage tests' measure of training: the loss on fixed draws (`from conftest import make_probe_set, probe_loss`).
@dataclass
class ProbeSet:
    """A fixed set of (noise, timestep) draws to measure the loss before and after training."""

    noise: torch.Tensor  # (N, C, h, w)
    timesteps: torch.Tensor  # (N,)


def make_probe_set(latents: torch.Tensor, scheduler, count: int = 32, seed: int = 1234) -> ProbeSet:
    from imagic_steps.diffusion import draw_noise_and_timesteps

    generator = torch.Generator().manual_seed(seed)
    noise, timesteps = draw_noise_and_timesteps(latents, scheduler, generator, count)
    return ProbeSet(noise, timesteps)


@torch.no_grad()
def probe_loss(unet, scheduler, latents: torch.Tensor, embeddings, probe: ProbeSet) -> float:
    """The denoising loss averaged over a fixed probe set: comparable across training steps.

    `embeddings`: a `Conditioning` (imagic_steps.families) or Stable Diffusion's token embeddings."""
    from imagic_steps.diffusion import denoising_loss

    return float(denoising_loss(unet, scheduler, latents, embeddings, probe.noise, probe.timesteps))


def stage_a_probe_losses(components, embedded) -> tuple[float, float]:
    """The denoising loss on a fixed probe set under e_tgt and under e_opt (stage A should lower it)."""
    probe = make_probe_set(embedded.image_latents, components.scheduler, count=32)
    return tuple(probe_loss(components.unet, components.scheduler, embedded.image_latents, conditioning, probe)
                 for conditioning in (embedded.target, embedded.optimized))
