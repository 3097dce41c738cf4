"""Named hyper-parameter presets for the three Imagic stages, and user overrides of them.

A variant is a base preset plus a nested dict of overrides, e.g.::

    {"preset": "original", "embed": {"steps": 20}, "sample": {"scheduler": "EulerDiscreteScheduler"}}

Unknown sections or fields are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .errors import VariantError

LATENT_MODES = ("sample", "mean")
MAX_STEPS = 100_000  # per stage; the papers' longest schedules are 1,500 steps
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64-bit seeds; the JSON/YAML round trip keeps 63 bits
ALPHA_RANGE = (-1.0, 3.0)  # interpolation weights: 0 reconstructs, 1 edits; beyond 3 is noise, not extrapolation
FINETUNE_MODES = ("full", "lora")
MIXED_PRECISION = ("no", "fp16", "bf16")
SAVE_DTYPES = ("fp32", "fp16")
LORA_TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections LoRA adapts
SCHEDULERS = (
    "DDIMScheduler",
    "DDPMScheduler",
    "PNDMScheduler",
    "LMSDiscreteScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "HeunDiscreteScheduler",
    "UniPCMultistepScheduler",
)


@dataclass(frozen=True)
class EmbedParams:
    """Stage A: optimise e_tgt into e_opt. `steps=0` gives e_opt = e_tgt (the fine-tune-only ablation)."""

    steps: int = 500
    lr: float = 1e-3
    seed: int = 0
    latents: str = "sample"  # VAE posterior "sample" (community pipeline) or its "mean"


@dataclass(frozen=True)
class FinetuneParams:
    """Stage B: fine-tune the UNet with e_opt fixed. `steps=0` keeps the base UNet (the embed-only ablation)."""

    steps: int = 1000
    lr: float = 2e-6
    mode: str = "full"  # "full": every UNet weight; "lora": peft LoRA on the attention projections
    lora_rank: int = 4
    lora_alpha: float = 4.0
    seed: int = 0
    mixed_precision: str = "no"  # "fp16" / "bf16" autocast with fp32 master weights; CUDA only for fp16
    gradient_checkpointing: bool = False
    save_dtype: str = "fp32"  # dtype of the saved artefact (full UNet or LoRA weights)
    preview_every: int = 0  # write a preview grid every N steps (0 = off)
    preview_steps: int = 10  # denoising steps of a preview sample
    checkpoint_every: int = 0  # resume checkpoint every N steps (0 = off)


@dataclass(frozen=True)
class SampleParams:
    """Stage C: sample along e(a) = a * e_tgt + (1 - a) * e_opt with classifier-free guidance."""

    scheduler: str = "DDIMScheduler"
    steps: int = 50
    guidance_scale: float = 7.5
    eta: float = 0.0
    init_timestep_rate: float = 0.0  # 0: start from pure noise; r > 0: skip the first r of the schedule from noised input latents
    batch_size: int = 8  # samples (seed x alpha) denoised together


def _checker(owner: str) -> Callable[[bool, str, Any, str], None]:
    """check(ok, field, value, fix): raise VariantError `<owner> (<field>): <value> is invalid; <fix>` unless ok."""
    def check(ok: bool, where: str, value: Any, rule: str) -> None:
        if not ok:
            raise VariantError(f"{owner} ({where}): {value!r} is invalid; {rule}")
    return check


def _check_numbers(check: Callable[[bool, str, Any, str], None], section: str, params: Any) -> None:
    """The limits every parameter block shares, so no job runs for ever or draws from an invalid seed: finite
    numbers (a NaN learning rate or an infinite guidance scale "runs" and writes garbage), step counts up to
    MAX_STEPS, seeds that a torch.Generator takes."""
    for item in dataclasses.fields(params):
        value = getattr(params, item.name)
        where = f"{section}.{item.name}"
        if isinstance(value, float):
            check(math.isfinite(value), where, value, "use a finite number")
        if item.name.endswith("steps") and isinstance(value, int):
            check(value <= MAX_STEPS, where, value, f"use at most {MAX_STEPS} steps")
        if item.name == "seed":
            check(0 <= value <= MAX_SEED, where, value, f"use a seed in 0..{MAX_SEED}")


def _check_sampling(check: Callable[[bool, str, Any, str], None], section: str, scheduler: str | None, steps: int,
                    guidance_scale: float | None) -> None:
    """A sampler's scheduler (None: the method has its own), step count and guidance scale (None: none)."""
    if scheduler is not None:
        check(scheduler in SCHEDULERS, f"{section}.scheduler", scheduler, f"choose one of {list(SCHEDULERS)}")
    check(steps > 0, f"{section}.steps", steps, "use a positive number")
    if guidance_scale is not None:
        check(guidance_scale >= 0, f"{section}.guidance_scale", guidance_scale, "use a value >= 0 (1 = no guidance)")


class BaselineParams:
    """A baseline's parameters (its config block less the grid), checked when built (planning builds them from the
    config): VariantError `config (<block>.<field>): <value> is invalid; <fix>`."""

    def check_grid(self, grid: Sequence[float]) -> None:
        """Checks of the block's grid against these parameters (the schema checks each value's range)."""


@dataclass(frozen=True)
class SdeditParams(BaselineParams):
    """The SDEdit baseline (the config's `sdedit:` block, less its strengths): diffusers img2img settings."""

    scheduler: str = "DDIMScheduler"
    steps: int = 50
    guidance_scale: float = 7.5

    def __post_init__(self) -> None:
        check = _checker("config")
        _check_numbers(check, "sdedit", self)
        _check_sampling(check, "sdedit", self.scheduler, self.steps, self.guidance_scale)

    def check_grid(self, grid: Sequence[float]) -> None:
        """img2img denoises int(steps * strength) steps: a strength that gives none fails inside diffusers."""
        weakest = min(grid)
        _checker("config")(int(self.steps * weakest) >= 1, "sdedit.strengths", weakest,
                           f"with steps {self.steps} it denoises int({self.steps} * {weakest}) = 0 steps; use "
                           f"strengths of at least 1/steps ({1 / self.steps:.3g}) or more steps")


# the inversion steps of diffusers' LEditsPPPipelineStableDiffusion / ...XL `invert` when not given, by family
# (tests/test_baselines.py reads them back from the pipelines' signatures)
LEDITS_PIPELINE_INVERSION_STEPS = {"sd": 30, "sdxl": 50}


@dataclass(frozen=True)
class LeditsParams(BaselineParams):
    """The LEDITS++ baseline (Brack et al., CVPR 2024; the config's `ledits:` block, less its grid of edit guidance
    scales): diffusers' LEditsPPPipelineStableDiffusion(XL) defaults. Stochastic (its inversion draws noise).

    The inversion runs under the empty prompt, as the pipelines do by default, unless `use_source_prompt`: with the
    pair's source prompt the inversion's noise maps are fitted to source-guided predictions that the edit never
    makes, so edit guidance 0 no longer returns the input (the grid loses its reconstruction end)."""

    inversion_steps: int | None = None  # None: the family's pipeline default (LEDITS_PIPELINE_INVERSION_STEPS)
    skip: float = 0.15  # fraction of the inversion's first (noisiest) steps not inverted
    source_guidance_scale: float = 3.5  # guidance of the source prompt while inverting (none with the empty prompt)
    edit_threshold: float = 0.9  # implicit mask: the quantile of the edit guidance kept
    edit_warmup_steps: int = 0
    use_source_prompt: bool = False  # invert under the pair's source prompt instead of the empty one

    def __post_init__(self) -> None:
        check = _checker("config")
        _check_numbers(check, "ledits", self)
        steps = self.inversion_steps
        check(steps is None or steps > 0, "ledits.inversion_steps", steps, "use a positive number")
        check(0.0 <= self.skip < 1.0, "ledits.skip", self.skip, "use a value in [0, 1)")
        check(self.source_guidance_scale >= 0, "ledits.source_guidance_scale", self.source_guidance_scale,
              "use a value >= 0 (1 = no guidance)")
        check(0.0 <= self.edit_threshold <= 1.0, "ledits.edit_threshold", self.edit_threshold, "use a value in [0, 1]")
        # the edit guidance starts after the warm-up steps: as many as the inversion's steps and nothing is edited
        steps = steps or min(LEDITS_PIPELINE_INVERSION_STEPS.values())
        check(0 <= self.edit_warmup_steps < steps, "ledits.edit_warmup_steps", self.edit_warmup_steps,
              f"use 0 or a number below inversion_steps ({steps}), after which the edit starts")

    def steps_for(self, family: str) -> int:
        """The inversion's steps on a model of `family` (sd, sdxl)."""
        return self.inversion_steps or LEDITS_PIPELINE_INVERSION_STEPS[family]


@dataclass(frozen=True)
class DdimInversionParams(BaselineParams):
    """The DDIM inversion baseline (the config's `ddim_inversion:` block, less its grid of guidance scales): invert
    the input with the source prompt (empty if the pair has none), without guidance, then regenerate from the
    inverted noise guided from the source prompt toward the target (0: the input, 1: the target prompt alone;
    imagic_steps.ddim_inversion). Deterministic: one sample per setting, whatever the seeds."""

    steps: int = 50

    def __post_init__(self) -> None:
        check = _checker("config")
        _check_numbers(check, "ddim_inversion", self)
        _check_sampling(check, "ddim_inversion", None, self.steps, None)  # DDIM both ways, guidance is the grid


@dataclass(frozen=True)
class Variant:
    name: str
    embed: EmbedParams = field(default_factory=EmbedParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)
    sample: SampleParams = field(default_factory=SampleParams)
    alphas: tuple[float, ...] = (1.0,)
    resolution: int | None = None  # image side in pixels; None = the model's native resolution

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"embed": EmbedParams, "finetune": FinetuneParams, "sample": SampleParams}
TOP_LEVEL = {"alphas", "resolution"}

# Where each preset's numbers come from. "project choice" marks values that are ours, not the source's. Fields a
# preset leaves out take the dataclass defaults above (e.g. embed.latents "sample", eta 0.0, batch_size 8).
PRESETS: dict[str, dict[str, Any]] = {
    # Source: huggingface/diffusers, examples/community/imagic_stable_diffusion.py (ImagicStableDiffusionPipeline).
    #   train() defaults: text_embedding_optimization_steps=500, embedding_learning_rate=1e-3,
    #     model_fine_tuning_optimization_steps=1000, diffusion_model_learning_rate=2e-6; Adam on the embedding,
    #     then Adam on every UNet parameter (full fine-tune); latents = a sample of the VAE posterior.
    #   __call__() defaults: alpha=1.2, num_inference_steps=50, guidance_scale=7.5, eta=0.0; the embedding is
    #     alpha * e_tgt + (1 - alpha) * e_opt as in families.interpolate_conditioning.
    #   Scheduler: the pipeline takes any; DDIM is the one in the Imagic example of huggingface/diffusers
    #     examples/community/README.md (there with explicit SD betas; here built from the model's scheduler config).
    "original": {
        "embed": {"steps": 500, "lr": 1e-3},
        "finetune": {"steps": 1000, "lr": 2e-6, "mode": "full"},
        "sample": {"scheduler": "DDIMScheduler", "steps": 50, "guidance_scale": 7.5, "eta": 0.0},
        "alphas": [1.2],
    },
    # Source: disin7c9/Modified-Imagic-Stable-Diffusion-Pipeline, modules/modified_imagic_stable_diffusion.py.
    #   train() defaults: text_embedding_optimization_steps=1000, embedding_learning_rate=5e-4,
    #     model_fine_tuning_optimization_steps=1000, diffusion_model_learning_rate=1e-7 (full UNet, Adam),
    #     num_inference_steps=20 (its progress previews).
    #   __call__() defaults: alpha=1, num_inference_steps=20, guidance_scale=7.5, eta=0.0, init_timestep_rate=-1
    #     (-1 = off: start from pure noise; a rate r in [0, 1) skips the first int(steps * r) steps and starts
    #     from the input latents noised to that level).
    #   scheduler "EulerDiscreteScheduler": project choice. The pipeline's type hint allows EulerDiscreteScheduler
    #     or EulerAncestralDiscreteScheduler; the repository's notebook (imagic_pipeline.ipynb) loads
    #     EulerAncestralDiscreteScheduler (stochastic) and uses guidance_scale 13.
    #   init_timestep_rate 0.3: project choice (the source's default is off; its notebook tries 0, 0.1, ..., 0.4).
    "modified": {
        "embed": {"steps": 1000, "lr": 5e-4},
        "finetune": {"steps": 1000, "lr": 1e-7, "mode": "full"},
        "sample": {"scheduler": "EulerDiscreteScheduler", "steps": 20, "guidance_scale": 7.5,
                   "init_timestep_rate": 0.3},
        "alphas": [1.0],
    },
    # Source: Kawar et al., "Imagic: Text-Based Real Image Editing with Diffusion Models", CVPR 2023
    # (arXiv:2210.09276), appendix on the Stable Diffusion implementation (a paper, not a repository; not
    # re-checked against the PDF in this pass): embedding 1000 steps at 2e-3, UNet fine-tune 1500 steps at 5e-7,
    # Adam, DDIM sampling; alphas around 0.6-0.8. steps 50, guidance 7.5 and eta 0 are not among the values
    # recorded from the paper: project choice (the diffusers Stable Diffusion defaults).
    "paper": {
        "embed": {"steps": 1000, "lr": 2e-3},
        "finetune": {"steps": 1500, "lr": 5e-7, "mode": "full"},
        "sample": {"scheduler": "DDIMScheduler", "steps": 50, "guidance_scale": 7.5, "eta": 0.0},
        "alphas": [0.6, 0.7, 0.8],
    },
    # Source: justinpinkney/stable-diffusion, notebooks/imagic.ipynb (the notebook the diffusers community
    # pipeline names as its model): generation parameters scale=3, ddim_steps=45, ddim_eta=0.0 (checked in a
    # fork's copy of the notebook); embedding 500 steps at 1e-3, UNet 1000 steps at 1e-6 and alphas 0.8-1.1 are
    # not checked against the notebook.
    "pinkney": {
        "embed": {"steps": 500, "lr": 1e-3},
        "finetune": {"steps": 1000, "lr": 1e-6, "mode": "full"},
        "sample": {"scheduler": "DDIMScheduler", "steps": 45, "guidance_scale": 3.0, "eta": 0.0},
        "alphas": [0.8, 0.9, 1.0, 1.1],
    },
}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Return `base` with `override` merged in, recursively for nested dicts."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_variant(name: str, spec: dict[str, Any] | None = None) -> Variant:
    """Build the variant `name` from `spec` = {"preset": base, <section>: {field: value}, ...}.

    With no spec, `name` itself must be a preset. Raises VariantError on unknown presets, sections or
    fields and on values out of range.
    """
    spec = dict(spec or {})
    preset = spec.pop("preset", name)
    if preset not in PRESETS:
        raise VariantError(f"variant '{name}' (preset): unknown preset '{preset}'; choose one of {sorted(PRESETS)}")
    unknown = set(spec) - set(SECTIONS) - TOP_LEVEL
    if unknown:
        raise VariantError(
            f"variant '{name}' (fields): unknown field(s) {sorted(unknown)}; allowed: preset, {', '.join(sorted(set(SECTIONS) | TOP_LEVEL))}"
        )
    resolved = deep_merge(PRESETS[preset], spec)
    sections = {}
    for section, cls in SECTIONS.items():
        values = resolved.get(section, {})
        if not isinstance(values, dict):
            raise VariantError(f"variant '{name}' ({section}): must be a mapping of fields, got {values!r}; write e.g. {section}: {{steps: 100}}")
        known = {f.name: f.type for f in dataclasses.fields(cls)}
        bad = set(values) - set(known)
        if bad:
            raise VariantError(f"variant '{name}' ({section}): unknown field(s) {sorted(bad)}; allowed: {sorted(known)}")
        sections[section] = cls(**{key: _coerce(name, section, key, value, cls) for key, value in values.items()})
    alphas = resolved.get("alphas", (1.0,))
    try:
        alphas = tuple(float(a) for a in alphas)
    except (TypeError, ValueError):
        raise VariantError(f"variant '{name}' (alphas): {alphas!r} is not a list of numbers; write e.g. [0, 0.5, 1]") from None
    variant = Variant(name=name, alphas=alphas, resolution=resolved.get("resolution"), **sections)
    validate_variant(variant)
    return variant


def _coerce(name: str, section: str, key: str, value: Any, cls: type) -> Any:
    """YAML gives `1e-3` as a string under some loaders and ints where floats are meant; normalise."""
    default = getattr(cls(), key)
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, float):
            return float(value)
        if isinstance(default, int):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise TypeError
            return int(float(value))
        return str(value)
    except (TypeError, ValueError):
        raise VariantError(
            f"variant '{name}' ({section}.{key}): {value!r} is not a {type(default).__name__}; give a {type(default).__name__}"
        ) from None


def validate_variant(variant: Variant) -> None:
    """Range checks that a schema cannot express; raises VariantError naming the field."""
    e, f, s = variant.embed, variant.finetune, variant.sample
    check = _checker(f"variant '{variant.name}'")
    for section, params in (("embed", e), ("finetune", f), ("sample", s)):
        _check_numbers(check, section, params)
    low, high = ALPHA_RANGE
    for alpha in variant.alphas:
        check(math.isfinite(alpha) and low <= alpha <= high, "alphas", alpha, f"use alphas in [{low}, {high}]")
    check(e.steps >= 0, "embed.steps", e.steps, "use 0 (skip) or a positive number")
    check(e.lr > 0, "embed.lr", e.lr, "use a positive learning rate")
    check(e.latents in LATENT_MODES, "embed.latents", e.latents, f"choose one of {LATENT_MODES}")
    check(f.steps >= 0, "finetune.steps", f.steps, "use 0 (skip) or a positive number")
    check(f.lr > 0, "finetune.lr", f.lr, "use a positive learning rate")
    check(f.mode in FINETUNE_MODES, "finetune.mode", f.mode, f"choose one of {FINETUNE_MODES}")
    check(f.lora_rank > 0, "finetune.lora_rank", f.lora_rank, "use a positive rank")
    check(f.lora_alpha > 0, "finetune.lora_alpha", f.lora_alpha, "use a positive scale (often equal to the rank)")
    check(f.mixed_precision in MIXED_PRECISION, "finetune.mixed_precision", f.mixed_precision, f"choose one of {MIXED_PRECISION}")
    check(f.save_dtype in SAVE_DTYPES, "finetune.save_dtype", f.save_dtype, f"choose one of {SAVE_DTYPES}")
    check(f.preview_every >= 0, "finetune.preview_every", f.preview_every, "use 0 (off) or a positive number")
    check(f.preview_steps > 0, "finetune.preview_steps", f.preview_steps, "use a positive number")
    check(f.checkpoint_every >= 0, "finetune.checkpoint_every", f.checkpoint_every, "use 0 (off) or a positive number")
    _check_sampling(check, "sample", s.scheduler, s.steps, s.guidance_scale)
    check(s.eta >= 0, "sample.eta", s.eta, "use a value >= 0")
    check(0.0 <= s.init_timestep_rate < 1.0, "sample.init_timestep_rate", s.init_timestep_rate, "use a value in [0, 1)")
    check(s.batch_size > 0, "sample.batch_size", s.batch_size, "use a positive number")
    check(len(variant.alphas) > 0, "alphas", list(variant.alphas), "give at least one alpha")
    check(variant.resolution is None or (variant.resolution > 0 and variant.resolution % 8 == 0),
          "resolution", variant.resolution, "use a positive multiple of 8")
