"""Running one workflow job: its log file, thread count, device, the model, and a one-line error on bad input.

Each workflow script's first call is `workflow_job(snakemake.log[0], snakemake.threads, snakemake.resources)`: on a
local run it hands the script to the warm worker (`warm_worker.hand_over_to_worker`), and it returns a
`WorkflowJob`, whose `model(...)` or `context()` runs the script's body.

Snakemake does not assign GPUs to concurrent local jobs, so a job that wants CUDA takes an exclusive
lock on one visible device (a lock file per physical device id) and holds it for its lifetime.

Import-light (the standard library and this package's light modules): a local job process imports this module only
to hand its script over; torch and the model code are imported inside the functions that run after the hand-over.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..errors import USER_ERRORS
from .snakemake_runs import exit_with_parent
from .warm_worker import SERVED_BY_ENV, hand_over_to_worker

LOCK_DIR = Path(os.environ.get("IMAGIC_STEPS_GPU_LOCKS", Path(tempfile.gettempdir()) / "imagic_steps_gpu_locks"))


def is_disk_full(error: BaseException) -> bool:
    """A full disk, however the writer reports it: OSError ENOSPC/EDQUOT (Python, PIL), or the text of Rust's
    io error that safetensors and torch.save pass on ("No space left on device (os error 28)")."""
    import errno

    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(error) or "os error 28" in str(error)


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far, in bytes: the kernel's high-water mark of its address space
    (VmHWM in /proc/self/status). Exact, unlike Snakemake's benchmark `max_rss`, which samples every 0.5 s (every
    30 s after the first 30) and so misses short peaks such as model loading. Not getrusage's `ru_maxrss` where
    /proc has VmHWM: Linux carries that over exec from the process that started this one, so a process started by
    one that once held 4 GiB reports at least 4 GiB (measured: a tiny-model stage started by a pytest worker that had
    built an SD-sized preset)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def peak_rss_mib() -> float:
    """peak_rss_bytes in MiB."""
    return peak_rss_bytes() / 2**20


def physical_gpu_ids() -> list[str]:
    """Ids of the visible CUDA devices as the machine knows them (CUDA_VISIBLE_DEVICES, else 0..n-1)."""
    import torch

    count = torch.cuda.device_count()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible:
        return [v.strip() for v in visible.split(",")][:count]
    return [str(i) for i in range(count)]


@contextlib.contextmanager
def claim_device(preference: str) -> Iterator[str]:
    """Yield the torch device string for this job: 'cpu', or 'cuda:i' for a GPU no other local job holds.

    `preference` is 'cpu', 'cuda' (fail without a GPU) or 'auto' (CUDA when available).
    """
    if preference == "cpu":
        yield "cpu"
        return
    import torch

    if preference == "auto" and not torch.cuda.is_available():
        yield "cpu"
        return
    if not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is visible; set model.device to cpu or auto")
    LOCK_DIR.mkdir(parents=True, exist_ok=True)
    ids = physical_gpu_ids()
    for index, physical in enumerate(ids):
        handle = open(LOCK_DIR / f"gpu{physical}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        # TF32 matmuls on Ampere and newer: ~fp32 accuracy for training, several times the throughput
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        try:
            yield f"cuda:{index}"
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return
    raise RuntimeError(f"all {len(ids)} visible GPUs are held by other jobs; cap the 'gpu' resource at the GPU count")


def device_memory_warning(estimated_mb: int | None, device_total_bytes: int, device: str) -> str | None:
    """A warning when a job's estimated device memory (`gpu_mem_mb`, imagic_steps.memory) exceeds the device's."""
    if not estimated_mb or estimated_mb * 10**6 <= device_total_bytes:
        return None
    return (f"this job is estimated to need {estimated_mb * 10**6 / 2**30:.1f} GiB on {device}, which has "
            f"{device_total_bytes / 2**30:.1f} GiB; it may run out of memory: consider finetune.mode lora, "
            "finetune.gradient_checkpointing, fp16 weights (model.dtype) or fewer seeds per sample job")


@contextlib.contextmanager
def job_context(log_path: str | os.PathLike, threads: int = 1, device: str = "cpu",
                gpu_mem_mb: int | None = None) -> Iterator[str]:
    """Run a job body with stdout/stderr (tqdm, logging) in `log_path`, `threads` torch threads and a device.

    `gpu_mem_mb`: the job's estimated device memory (the rule's resource), checked against the claimed GPU.
    Known user errors are written as one line (to the log and to the terminal) and end the job with exit
    code 1 instead of a traceback.
    """
    terminal = sys.stderr
    exit_with_parent()  # a job must not outlive a killed Snakemake and run on into the rerun
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1, encoding="utf-8") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        logging.basicConfig(stream=log, level=logging.INFO, force=True,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        # Torch's intra-op threads must match Snakemake's `threads`: oversubscribed cores slow CPU jobs ~10x.
        os.environ["OMP_NUM_THREADS"] = str(max(1, int(threads)))
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(max(1, int(threads)))
        try:
            with claim_device(device) as chosen:
                logger = logging.getLogger(__name__)
                served = os.environ.get(SERVED_BY_ENV)
                logger.info("device %s, %s thread(s)%s", chosen, os.environ["OMP_NUM_THREADS"],
                            f", run by the warm worker (pid {served})" if served else "")
                if chosen.startswith("cuda"):
                    import torch

                    total = torch.cuda.get_device_properties(chosen).total_memory
                    warning = device_memory_warning(gpu_mem_mb, total, chosen)
                    if warning:
                        logger.warning(warning)
                yield chosen
                logger.info("peak RSS %.0f MiB (the kernel's high-water mark of this job process)", peak_rss_mib())
        except USER_ERRORS as error:
            line = f"error: {error}"
            print(line, file=log)
            print(line, file=terminal)
            raise SystemExit(1) from None
        except Exception as error:
            if not is_disk_full(error):
                raise
            line = (f"error: {getattr(error, 'filename', None) or Path(log_path).parent} (disk): no space left on "
                    "the device; free space there and rerun the same command (finished work is kept, nothing "
                    "half-written looks complete)")
            print(line, file=terminal)
            raise SystemExit(1) from None


@dataclasses.dataclass(frozen=True)
class WorkflowJob:
    """One workflow job as its script runs it: the job's log file, Snakemake's `threads` for it and its estimated
    device memory (the rule's `gpu_mem_mb` resource, None where the rule sets none)."""

    log_path: str | os.PathLike
    threads: int = 1
    gpu_mem_mb: int | None = None

    def context(self, device: str = "cpu") -> contextlib.AbstractContextManager[str]:
        """`job_context` for this job: the body of a job without a model (plan, tables, montages, evaluate) or one
        that picks its own device (score); yields the device string."""
        return job_context(self.log_path, self.threads, device, self.gpu_mem_mb)

    @contextlib.contextmanager
    def model(self, model: dict, text_encoders: bool = True) -> Iterator[Any]:
        """A workflow job that runs the model: `job_context` (log file, threads, a device of its own, the memory
        check, one-line user errors) with the workflow's `model:` block (`ModelSpec.to_config`) loaded on that
        device; yields its `SDComponents`. `text_encoders=False`: a job that encodes no prompt (fine-tune, sample)."""
        from ..configuration import ModelSpec  # after the hand-over: the job process that hands over never needs it

        spec = ModelSpec.from_config(model)
        with self.context(spec.device) as device:
            start = time.perf_counter()
            components = dataclasses.replace(spec, device=device).load(text_encoders=text_encoders)
            # benchmarks/main_job.py reads this line: a warm process running every stage would load the model once
            logging.getLogger(__name__).info("model %s loaded in %.2f s", spec.id, time.perf_counter() - start)
            yield components


    def adopted(self, stop_folder: str, outputs: Sequence[str | os.PathLike]) -> bool:
        """For a stop of a shared trajectory (`stop_folder`, '' for any other job): move the files the longer run
        wrote for this job into `outputs` and log it (`trajectory.adopt`). False if there is nothing to adopt (the
        job then computes its outputs itself)."""
        if not stop_folder:
            return False
        from .. import trajectory

        with self.context():
            return trajectory.adopt(stop_folder, [Path(path) for path in outputs])


def workflow_job(log_path: str | os.PathLike, threads: int, resources: Any = None) -> WorkflowJob:
    """The first call of each workflow script (after Snakemake's preamble, before any heavy import): on a local
    run, hand the rest of the script to the warm worker and exit with its status (`hand_over_to_worker`); return
    where the script is to run here, in the worker's fork of it or cold without a worker, with the memory it frees
    kept for its next step either way. Returns the job: `log_path` (`snakemake.log[0]`), `threads`
    (`snakemake.threads`) and the `gpu_mem_mb` attribute of `resources` (`snakemake.resources`; None without one).
    """
    hand_over_to_worker()
    return WorkflowJob(log_path, threads, getattr(resources, "gpu_mem_mb", None))
