"""What every result folder records: parameters, model, package versions and code version."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent
PACKAGE_NAME = PACKAGE_ROOT.name
PACKAGES = ("imagic-steps", "torch", "diffusers", "transformers", "peft", "safetensors", "open-clip-torch", "lpips",
            "numpy", "pillow", "snakemake")

# Each stage's entry module: the code that defines a stage's result is that module and every module of this package
# it imports, directly or not (`stage_modules`). Editing one of them reruns that stage (and what depends on it) in
# the workflow, and nothing else.
STAGE_ENTRY_MODULES = {
    "embed": "embed",
    "finetune": "finetune",
    "sample": "sample",
    "sdedit": "sdedit",
    "ledits": "ledits",
    "ddim_inversion": "ddim_inversion",
    "upscale": "upscale",
    "score": "score",
    "montage": "figures",
    "evaluate": "evaluate",
}


def module_file(name: str, root: Path = PACKAGE_ROOT) -> Path | None:
    """The source of in-package module `name` ("digits.classifier"; "" is the package itself), or None."""
    base = root.joinpath(*name.split(".")) if name else root
    for candidate in (base.with_suffix(".py") if name else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def imported_modules(name: str, root: Path = PACKAGE_ROOT) -> set[str]:
    """In-package modules that module `name`'s source imports anywhere (top level or inside functions)."""
    path = module_file(name, root)
    return set(_imports_in(name, root, path, path.stat().st_mtime_ns))


# Planning asks for ten rules' code versions, each walking ~15 modules: parsed once per file version instead.
@functools.lru_cache(maxsize=None)
def _imports_in(name: str, root: Path, path: Path, mtime_ns: int) -> frozenset[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                module = ".".join(parts + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module] + [f"{module}.{alias.name}" if module else alias.name for alias in node.names]
            if not node.level:
                targets = [t for t in targets if t.startswith(f"{PACKAGE_NAME}.") or t == PACKAGE_NAME]
            else:
                targets = [f"{PACKAGE_NAME}.{t}" if t else PACKAGE_NAME for t in targets]
        else:
            continue
        for target in targets:
            if target == PACKAGE_NAME or target.startswith(f"{PACKAGE_NAME}."):
                relative = target[len(PACKAGE_NAME) + 1:]
                if module_file(relative, root) is not None:
                    found.add(relative)
    return frozenset(found)


def stage_modules(stage: str, root: Path = PACKAGE_ROOT) -> list[str]:
    """Every in-package module the stage's entry module imports, transitively, with the packages they live in
    (whose `__init__` runs on import), sorted; "" is the package's own `__init__`."""
    seen: set[str] = set()
    todo = [STAGE_ENTRY_MODULES[stage]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parents = [".".join(name.split(".")[:i]) for i in range(len(name.split(".")))]
        todo.extend(parent for parent in parents if module_file(parent, root) is not None)
        todo.extend(imported_modules(name, root))
    return sorted(seen)


def code_version(stage: str, root: Path = PACKAGE_ROOT) -> str:
    """A short hash of the source of every module `stage` uses (`stage_modules`; 12 hex digits)."""
    digest = hashlib.sha256()
    for module in stage_modules(stage, root):
        digest.update(module.encode())
        digest.update(module_file(module, root).read_bytes())
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
