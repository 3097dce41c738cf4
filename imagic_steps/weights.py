"""What a model's or a scorer's weights are: a short identity that goes into the cache keys.

A plan key names a model by id, revision and dtype, and the weights behind one name can change: a retrained
shipped preset, a local folder overwritten by a new fine-tune, a hub id without a pinned revision whose `main`
moves to a new snapshot. Without the weights in the key, every cached embed, fine-tune, sample and score would be
reused as if nothing happened. `model_weights` says what the weights are:

  built presets (tiny, sd15-shaped, ...)   their recipe version: seeded code builds them, and the version in
                                            imagic_steps.locations is bumped whenever a recipe changes
  shipped presets and local folders         a SHA-256 over their files (weights, configs, tokenizers)
  hub ids                                   the snapshot commit: the revision when it is one, else the commit the
                                            local hub cache resolves the revision to, else the hub's answer (else,
                                            offline and not downloaded, the revision name, with a note)

and `scorer_weights` does the same for the scorer of the score jobs. A file's SHA-256 is remembered by its path,
size and mtime (`file_digests.json` in the preset cache), so planning hashes a file again only when it changed;
touching a file (mtime only) costs one re-hash and changes no key.

Import-light (no torch): the workflow calls it while planning.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
from pathlib import Path
from typing import Any

from .io import write_json
from .locations import DIGITS_CLASSIFIER_FOLDER, MODEL_PRESETS, cache_dir, preset_folder
from .model_folder import local_model_folder

MEMO_FILE = "file_digests.json"
DIGEST_LENGTH = 16  # hex digits kept: 64 bits, far beyond any chance collision among one user's models
# figures and notes that live beside the weights (training loss plots, READMEs) change no result
NOT_WEIGHTS = {".png", ".jpg", ".jpeg", ".gif", ".md"}
COMMIT = re.compile(r"[0-9a-f]{40}")
CHUNK = 1 << 22


def weight_files(folder: Path) -> list[Path]:
    """Every file under `folder` that can change what the model computes, sorted: all but hidden ones (a hub
    download's `.cache/`) and figures or notes (NOT_WEIGHTS)."""
    files = []
    for path in folder.rglob("*"):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or path.suffix.lower() in NOT_WEIGHTS:
            continue
        if path.is_file():
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def _read_memo(path: Path) -> dict[str, list]:
    try:
        memo = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # missing or damaged: the digests are recomputed
    return memo if isinstance(memo, dict) else {}


def file_sha256(path: Path, memo: dict[str, list]) -> str:
    """The SHA-256 of a file's bytes, from `memo` when its (size, mtime) are the remembered ones."""
    stat = path.stat()
    key = str(path.resolve())
    remembered = memo.get(key)
    if isinstance(remembered, list) and remembered[:2] == [stat.st_size, stat.st_mtime_ns]:
        return remembered[2]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    memo[key] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]
    return memo[key][2]


def files_digest(paths: list[Path], root: Path) -> str:
    """One SHA-256 over the files' paths relative to `root` and their contents' SHA-256s (memoised)."""
    memo_path = cache_dir() / MEMO_FILE
    memo = _read_memo(memo_path)
    before = dict(memo)
    digest = hashlib.sha256()
    for path in paths:
        digest.update(f"{path.relative_to(root).as_posix()}\0{file_sha256(path, memo)}\n".encode())
    memo = {key: value for key, value in memo.items() if Path(key).exists()}  # forget deleted files
    if memo != before:
        try:
            write_json(memo_path, memo)
        except OSError:
            pass  # a read-only cache only costs re-hashing at the next planning
    return digest.hexdigest()[:DIGEST_LENGTH]


def folder_digest(folder: str | os.PathLike) -> str:
    """The SHA-256 (DIGEST_LENGTH hex digits) of a model folder's weight files (`weight_files`)."""
    folder = Path(folder)
    return files_digest(weight_files(folder), folder)


def model_weights(model: str, revision: str | None) -> tuple[dict[str, str], str | None]:
    """The identity of `model`'s weights (module docstring), and a note when it is provisional."""
    preset = MODEL_PRESETS.get(model)
    if preset is not None and not preset.shipped:
        return {"recipe": preset.folder}, None
    if preset is not None:
        return {"sha256": folder_digest(preset_folder(model))}, None
    if Path(model).is_dir():
        return {"sha256": folder_digest(model)}, None
    return hub_snapshot(model, revision)


def hub_snapshot(model: str, revision: str | None) -> tuple[dict[str, str], str | None]:
    """`{"hub_commit": ...}`, the snapshot commit a hub id and revision stand for: the revision itself when it is a
    commit, else what the local hub cache resolves it to, else (online) what the hub says. When none can tell
    (offline, not downloaded), `{"hub_revision": ...}` and a note: no job can load the model then either, so
    nothing is computed under that provisional key; the first plan after the download keys by the commit."""
    if revision and COMMIT.fullmatch(revision):
        return {"hub_commit": revision}, None
    from huggingface_hub import HfApi, constants

    cached = local_model_folder(model, revision)  # the hub cache's snapshots/<commit> folder, if downloaded
    if cached is not None:
        return {"hub_commit": cached.name}, None
    reason = "HF_HUB_OFFLINE is set"
    if not constants.HF_HUB_OFFLINE:
        try:
            return {"hub_commit": HfApi().model_info(model, revision=revision, timeout=20).sha}, None
        except Exception as error:  # any failure to ask the hub ends the same way: the provisional key, said
            reason = f"the hub could not be asked ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    return {"hub_revision": revision or "main"}, (
        f"model '{model}' is not in the local hub cache and {reason}, so its weights' snapshot is not known: its "
        f"caches are keyed by revision '{revision or 'main'}' until it is downloaded; download it once with "
        f"`hf download {model}{f' --revision {revision}' if revision else ''}` on a machine with access to the hub "
        "(into the HF_HOME the jobs read)")


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def scorer_weights(scorer: dict[str, Any]) -> dict[str, Any]:
    """The identity of a score job's scorer weights: the digits classifier's files (digits, coloured digits), or
    CLIP's checkpoint (a local file's SHA-256, or the open_clip tag with the open_clip version that maps the tag to
    one published file) with the lpips and torchvision versions that ship LPIPS's heads and backbone weights. The
    seeded random-weight scorers (`tiny`, `random_weights`) are built by code: the packages' versions say it all."""
    kind = scorer.get("kind", "clip")
    if kind in ("digits", "colour_digits"):
        return {"digits_classifier_sha256": folder_digest(DIGITS_CLASSIFIER_FOLDER)}
    identity: dict[str, Any] = {package: _version(package) for package in ("open-clip-torch", "lpips", "torchvision")}
    pretrained = scorer.get("clip_pretrained")
    if not (scorer.get("tiny") or scorer.get("random_weights")) and pretrained and Path(pretrained).is_file():
        identity["clip_sha256"] = files_digest([Path(pretrained)], Path(pretrained).parent)
    return identity
