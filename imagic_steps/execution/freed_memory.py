"""Keep the memory a process frees for its next training step instead of handing it back to the kernel.

glibc's malloc serves every block above its mmap threshold (128 KiB, adapting up to 32 MiB) with a fresh `mmap`
and returns it to the kernel on `free`, and trims the heap's free top likewise. At Stable Diffusion's size on the
CPU every training step then faults in and zeroes gigabytes again: a full fine-tune's gradients (3.4 GB, freed by
`zero_grad(set_to_none=True)`), its activations, the weight tensors' temporaries (SD-1.5's largest are 59 MB);
40 % of such a step's CPU time was the kernel's (benchmarks/README.md, "Freed memory"). With no mmap'd blocks and
no trimming the freed pages stay in the process and the next step reuses them: same results, same peak.

Every workflow model job, which runs one stage, calls `retain_freed_memory()` first, whether it runs in a fork of
the warm worker or starts cold (`warm_worker.hand_over_to_worker`, called by `workflow_job`, each script's first
call). It is set with `mallopt` at run time rather than `GLIBC_TUNABLES` so a process that has already started can
set it for itself.
`python -m imagic_steps edit` keeps glibc's defaults: it runs all three stages in one process, where what one
step keeps fits later tensors badly; on SD-2.1's shape its peak RSS went from 7.47 to 8.66 GiB for 9 % less wall
time (8.22 GiB when the kept memory was handed back between stages; tests/test_shaped_presets.py).
Import-light (standard library only). Inert on GPUs' device memory (PyTorch's CUDA allocator already caches).
"""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def retain_freed_memory() -> bool:
    """Turn off glibc's mmap'd blocks and heap trimming for the rest of this process (and its forks).

    Returns whether the C library took the setting: False on other C libraries (musl's `mallopt` does nothing,
    macOS has none) and when the user's own `GLIBC_TUNABLES` sets malloc's parameters (theirs are kept).
    """
    if not sys.platform.startswith("linux") or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    # -1 is the largest threshold (glibc stores it unsigned): never trim; mallopt returns 1 on success.
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, -1) == 1
