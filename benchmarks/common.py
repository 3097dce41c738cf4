"""Shared set-up of the benchmarks: configuration, inputs, stage parameters, timing and peak memory.

Units: times in seconds (wall clock, `time.perf_counter`), memory in bytes unless a name says MiB.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psutil
import torch

from imagic_steps.images import load_image, pil_to_tensor
from imagic_steps.models import SDComponents, load_components
from imagic_steps.variants import EmbedParams, FinetuneParams, SampleParams

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = REPO_ROOT / "config" / "images" / "chelsea.png"
DEFAULT_PROMPT = "a photo of a gray cat"
MIB = 2**20


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark: model, device, torch threads, step counts, number of alphas, seed and learning rates.

    The learning rates are the `original` preset's (embed 1e-3, fine-tune 2e-6).
    """

    model: str = "tiny"
    device: str = "cpu"
    dtype: str = "fp32"
    threads: int = 1
    steps_embed: int = 50
    steps_finetune: int = 50
    sample_steps: int = 50
    n_alphas: int = 8
    seed: int = 0
    embed_lr: float = 1e-3
    finetune_lr: float = 2e-6
    image: str = str(DEFAULT_IMAGE)
    prompt: str = DEFAULT_PROMPT
    compile: bool = False  # ours runs its UNets through torch.compile (the naive reference never does)
    channels_last: bool = False  # ours uses a channels-last copy of the UNet

    def alphas(self, count: int | None = None) -> list[float]:
        """`count` alphas evenly spaced over [0, 1.2] (the 8-alpha grid); a single alpha is 1.0 (the edit)."""
        count = self.n_alphas if count is None else count
        if count == 1:
            return [1.0]
        return [round(1.2 * i / (count - 1), 4) for i in range(count)]

    def embed_params(self) -> EmbedParams:
        return EmbedParams(steps=self.steps_embed, lr=self.embed_lr, seed=self.seed)

    def finetune_params(self, mode: str = "full", preview_every: int = 0) -> FinetuneParams:
        return FinetuneParams(steps=self.steps_finetune, lr=self.finetune_lr, mode=mode, seed=self.seed,
                              preview_every=preview_every)

    def sample_params(self, batch_size: int) -> SampleParams:
        """DDIM, guidance 7.5, eta 0 (the `original` preset) with `sample_steps` denoising steps."""
        return SampleParams(steps=self.sample_steps, batch_size=batch_size)


def set_threads(threads: int) -> None:
    """Pin torch's intra-op thread pool (the benchmarks default to 1 thread on a shared machine)."""
    torch.set_num_threads(threads)


def load_model_and_image(config: BenchConfig) -> tuple[SDComponents, torch.Tensor]:
    """The model's components and the input image (1, 3, R, R) in [-1, 1] at the model's native side R."""
    components = load_components(config.model, device=config.device, dtype=config.dtype)
    image = pil_to_tensor(load_image(config.image, components.resolution))
    return components, image


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """(fn(), seconds of wall time), with the device synchronised before and after."""
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return result, time.perf_counter() - start


def current_rss_bytes() -> int:
    """Resident set size of this process now."""
    return psutil.Process().memory_info().rss


def peak_rss_bytes() -> int:
    """Peak resident set size of this process since it started (monotone; `ru_maxrss` is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


class PeakMemory:
    """Peak memory of a block of code: CUDA allocations on a GPU, process RSS on the CPU.

    `peak` is the high-water mark during the block (bytes) and `delta` that mark minus the usage at entry,
    i.e. what the block added on top of the loaded model. On the CPU the RSS high-water mark is process-wide
    and never goes down, so it is attributable to the block only in a fresh process whose earlier peak
    (imports, loading) is below the block's; the stage workers run each stage in its own process for this.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.kind = "cuda_max_allocated" if device.type == "cuda" else "peak_rss"
        self.start = self.peak = self.delta = 0

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
        else:
            self.start = current_rss_bytes()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = peak_rss_bytes()
        self.delta = max(self.peak - self.start, 0)


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float().cpu() - b.float().cpu()).abs().max())


def max_abs_weight_diff(first: torch.nn.Module, second: torch.nn.Module) -> float:
    """Largest absolute difference between same-named weights of two modules with the same layout."""
    other = dict(second.state_dict())
    return max(max_abs_diff(tensor, other[name]) for name, tensor in first.state_dict().items())
