"""Shared set-up of the benchmarks: configuration, inputs, stage parameters, timing and peak memory.

Units: times in seconds (wall clock, `time.perf_counter`), memory in bytes unless a name says MiB.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import psutil
import torch
import yaml

from imagic_steps.components import SDComponents
from imagic_steps.execution.workflow_job import peak_rss_bytes
from imagic_steps.images import load_image, pil_to_tensor
from imagic_steps.model_loading import load_components
from imagic_steps.variants import EmbedParams, FinetuneParams, SampleParams, resolve_variant

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
MIB = 2**20


@dataclass(frozen=True)
class BenchConfig:
    """What to benchmark: model, device, torch threads, input, each stage's steps and learning rate, the sampler,
    and the seed x alpha grid of stage C (`seed` seeds stages A and B; `seeds` are the samples')."""

    setting: str
    model: str
    image: str
    prompt: str
    steps_embed: int
    embed_lr: float
    steps_finetune: int
    finetune_lr: float
    sample_steps: int
    guidance_scale: float
    alphas: tuple[float, ...]
    seeds: tuple[int, ...]
    scheduler: str = "DDIMScheduler"
    eta: float = 0.0
    seed: int = 0
    mixed_precision: str = "no"  # ours' stage B autocast ("fp16" on CUDA, "bf16"); the reference has none
    device: str = "cpu"
    dtype: str = "fp32"
    threads: int = 1
    compile: bool = False  # ours runs its UNets through torch.compile (the reference never does)
    channels_last: bool = False  # ours uses a channels-last copy of the UNet
    resolution: int | None = None  # image side in pixels for every stage, both sides; None: the model's native

    def embed_params(self) -> EmbedParams:
        return EmbedParams(steps=self.steps_embed, lr=self.embed_lr, seed=self.seed)

    def finetune_params(self, mode: str = "full") -> FinetuneParams:
        return FinetuneParams(steps=self.steps_finetune, lr=self.finetune_lr, mode=mode, seed=self.seed,
                              mixed_precision=self.mixed_precision)

    def sample_params(self) -> SampleParams:
        """The setting's sampler; all seed x alpha samples in one batch, as the default `batch_size` 8 does for
        the default config's 2 seeds x 4 alphas."""
        return SampleParams(scheduler=self.scheduler, steps=self.sample_steps, guidance_scale=self.guidance_scale,
                            eta=self.eta, batch_size=len(self.alphas) * len(self.seeds))


def bench_settings(config_path: Path = DEFAULT_CONFIG) -> dict[str, BenchConfig]:
    """The two step settings of the comparison with the reference (benchmarks/README.md), both with the default
    config's seeds x alphas grid:

    * `digits`: the default run, read from `config_path` (its `imagic` variant on its `digits` model, its first
      pair: embed 200 @ 1e-3, full fine-tune 150 @ 1e-4, DDIM 20, guidance 3; previews are off on both sides);
    * `original`: the `original` preset as the variants define it (embed 500, fine-tune 1000 @ 2e-6, DDIM 50,
      guidance 7.5) on the `tiny` model and config/images/chelsea.png.
    """
    config = yaml.safe_load(config_path.read_text())
    with open(REPO_ROOT / config["pairs"], newline="") as handle:
        pair = next(csv.DictReader(handle, delimiter="\t"))
    grid = {"alphas": tuple(float(a) for a in config["alphas"]), "seeds": tuple(int(s) for s in config["seeds"])}
    variants = {"digits": (resolve_variant("imagic", config["variants"]["imagic"]), config["model"]["id"],
                           str(REPO_ROOT / pair["image"]), pair["prompt"]),
                "original": (resolve_variant("original", {"preset": "original"}), "tiny",
                             str(REPO_ROOT / "config" / "images" / "chelsea.png"), "a photo of a gray cat")}
    return {name: BenchConfig(setting=name, model=model, image=image, prompt=prompt, steps_embed=v.embed.steps,
                              embed_lr=v.embed.lr, steps_finetune=v.finetune.steps, finetune_lr=v.finetune.lr,
                              sample_steps=v.sample.steps, guidance_scale=v.sample.guidance_scale,
                              scheduler=v.sample.scheduler, eta=v.sample.eta, **grid)
            for name, (v, model, image, prompt) in variants.items()}


def set_threads(threads: int) -> None:
    """Pin torch's intra-op thread pool (the benchmarks default to 1 thread on a shared machine)."""
    torch.set_num_threads(threads)


def json_from_subprocess(command: list[str], threads: int, env: dict[str, str] | None = None) -> Any:
    """Run `command` (a benchmarks module as its own process) with `threads` OpenMP threads and return the JSON on
    the last line it prints."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO_ROOT), **(env or {})}
    completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:4])} failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def load_model_and_image(config: BenchConfig) -> tuple[SDComponents, torch.Tensor]:
    """The model's components and the input image (1, 3, R, R) in [-1, 1] at side R = `config.resolution` or the
    model's native side."""
    components = load_components(config.model, device=config.device, dtype=config.dtype)
    image = pil_to_tensor(load_image(config.image, config.resolution or components.resolution))
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
