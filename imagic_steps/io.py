"""Atomic file writes and small serialisation helpers.

Every file this package writes goes through `atomic_path`: the content is written to a temporary
file in the destination folder and renamed over the target, so a killed job never leaves a file
that looks complete.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator


def current_umask() -> int:
    """The process's umask (os.umask can only be read by setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The file ends with the mode a plain `open()` gives (0666 less the umask), whatever the writer did to the
    temporary (`tempfile.mkstemp` and safetensors make theirs 0600): results on a shared project folder must stay
    readable to colleagues and report servers.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A writer killed outright (SIGKILL, power loss) never reaches the `finally` below; its temporary would stay
    # beside the result for good, looking like a sample to a `*.png` glob. A target has one writer at a time
    # (Snakemake runs one job per output), so any temporary of this target left now is such a leftover.
    for stale in path.parent.glob(f".{glob.escape(path.name)}.{'[0-9a-f]' * 8}.tmp{glob.escape(path.suffix)}"):
        stale.unlink(missing_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:  # another writer drew the same name: draw again
            continue
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def staging_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """Create a new empty folder in `parent` to build a tree in before renaming it into place.

    Unlike `tempfile.mkdtemp` (mode 0700), the folder gets the umask's permissions like `mkdir`, so the tree
    stays readable once renamed into a shared cache or results folder.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        folder = parent / f"{prefix}{secrets.token_hex(4)}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_image(image, path: str | os.PathLike) -> None:
    """Save a PIL image atomically; the format follows the suffix of `path`."""
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format=_pil_format(path))


def _pil_format(path: Path) -> str:
    return {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}.get(path.suffix.lower(), "PNG")


def save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors (contiguous CPU copies), atomically; equal inputs give equal bytes."""
    from safetensors.torch import save_file

    cpu = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, str(tmp), metadata=metadata)
        if metadata and len(metadata) > 1:
            _sort_metadata_in_header(tmp)


def _sort_metadata_in_header(path: Path) -> None:
    """Rewrite a safetensors file's header with its `__metadata__` keys sorted, in place. safetensors 0.8 writes
    the metadata from a hash map, in an order that changes from call to call: two saves of the same LoRA weights
    differed in their bytes. Only the order changes, so the header keeps its length and the tensors their offsets."""
    with open(path, "r+b") as handle:
        length = int.from_bytes(handle.read(8), "little")
        raw = handle.read(length)
        header = json.loads(raw)
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > length:  # cannot happen for a reordering; keep the file as written rather than break it
            return
        handle.seek(8)
        handle.write(text.ljust(length, b" "))  # safetensors pads its header with spaces


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """torch.save `obj` atomically. torch writes through a Python file here, so a failed write is the OSError the
    system gave (a full disk: ENOSPC, which a job reports as one line,
    imagic_steps.execution.workflow_job.is_disk_full) rather than what torch's own file writer makes of it,
    `RuntimeError: [enforce fail at inline_container.cc] ... unexpected pos`; the OSError names `path`, not the
    temporary."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as handle:
                torch.save(obj, handle)
        except (RuntimeError, OSError) as error:
            cause = next((e for e in _chain(error) if isinstance(e, OSError) and e.errno is not None), None)
            if cause is None:
                raise
            raise OSError(cause.errno, cause.strerror, str(path)) from error


def _chain(error: BaseException | None):
    """`error` and the exceptions it was raised from or while handling, innermost last."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def load_tensors(path: str | os.PathLike, device="cpu") -> dict:
    """Load a safetensors file (never unpickles)."""
    from safetensors.torch import load_file

    return load_file(str(path), device=str(device))


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})
