"""What every result folder records: parameters, model, package versions and code version."""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
PACKAGES = ("imagic-steps", "torch", "diffusers", "transformers", "peft", "safetensors", "open-clip-torch", "lpips",
            "numpy", "pillow", "snakemake")

# The modules whose code defines each stage's result: editing one of them reruns that stage (and what
# depends on it) in the workflow, and nothing else.
STAGE_MODULES = {
    "embed": ("models", "images", "diffusion", "embed", "io"),
    "finetune": ("models", "diffusion", "embed", "finetune", "io"),
    "sample": ("models", "images", "diffusion", "sample", "finetune", "io"),
    "sdedit": ("models", "images", "sample", "sdedit", "io"),
    "score": ("images", "score", "io", "stats", "toy/classifier", "toy/digits"),
    "aggregate": ("figures", "images", "aggregate", "io"),
    "evaluate": ("figures", "images", "stats", "aggregate", "evaluate", "io", "toy/classifier"),
}


def code_version(stage: str) -> str:
    """A short hash of the source of the modules `stage` uses (12 hex digits)."""
    digest = hashlib.sha256()
    for module in sorted(STAGE_MODULES[stage]):
        source = PACKAGE_ROOT / f"{module}.py"
        digest.update(module.encode())
        digest.update(source.read_bytes() if source.exists() else b"")
    return digest.hexdigest()[:12]


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    """The checkout's commit (with `-dirty` when modified), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=PACKAGE_ROOT,
                             capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def provenance(stage: str, params: dict, model: dict | None = None, **extra) -> dict:
    """The record written beside a stage's output."""
    record = {
        "stage": stage,
        "params": params,
        "model": model,
        "code_version": code_version(stage),
        "git_commit": git_commit(),
        "packages": package_versions(),
    }
    record.update(extra)
    return record
