"""The benchmark's faithful reference (benchmarks/reference.py) computes what ours computes, and pays the community
pipeline's costs: stages A and B agree with ours given the same random draws, stage C agrees on the same inputs,
every sample re-encodes the empty prompt and resets the scheduler, and the in-place fine-tune is undone."""

import copy
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from benchmarks import reference
from conftest import PROMPT, state_equal
from imagic_steps.embed import EmbedResult, optimize_embedding
from imagic_steps.finetune import finetune_unet
from imagic_steps.sample import make_scheduler, sample_alphas
from imagic_steps.variants import EmbedParams, FinetuneParams, SampleParams

STEPS = 4
SEED = 3
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def components(tiny):
    """The tiny model with a UNet of its own: the reference fine-tunes in place."""
    return replace(tiny, unet=copy.deepcopy(tiny.unet))


@pytest.fixture()
def scheduler(tiny):
    return make_scheduler("DDIMScheduler", tiny.scheduler.config)


def global_draws(latents: torch.Tensor, scheduler, seed: int) -> tuple[list, torch.Tensor]:
    """What the community loop draws from the global RNG seeded with `seed`, in its order (noise, then timestep),
    as ours' (noise, timesteps) pairs; and the RNG state after them."""
    torch.manual_seed(seed)
    draws = []
    for _ in range(STEPS):
        noise = torch.randn(latents.shape)
        draws.append((noise, torch.randint(scheduler.config.num_train_timesteps, (1,))))
    return draws, torch.get_rng_state()


def replay(monkeypatch, module: str, draws: list) -> None:
    """Make ours (imagic_steps.<module>) take `draws` instead of its seeded generator's."""
    pending = iter(draws)
    monkeypatch.setattr(f"imagic_steps.{module}.draw_noise_and_timesteps", lambda *args, **kwargs: next(pending))


def run_reference_embed(components, scheduler, image, lr):
    torch.manual_seed(SEED)
    return reference.optimize_embedding(components, scheduler, image, PROMPT, STEPS, lr,
                                        torch.Generator().manual_seed(SEED))


def test_reference_stage_a_is_ours_given_the_same_draws(components, scheduler, cat_tensor, monkeypatch):
    target, optimized, latents = run_reference_embed(components, scheduler, cat_tensor, lr=5e-2)
    draws, state_after = global_draws(latents, scheduler, SEED)
    torch.manual_seed(SEED)
    run_reference_embed(components, scheduler, cat_tensor, lr=5e-2)
    # it drew exactly those, and nothing else, from the global RNG
    assert torch.equal(torch.get_rng_state(), state_after)

    replay(monkeypatch, "embed", draws)
    ours = optimize_embedding(components, cat_tensor, PROMPT, EmbedParams(steps=STEPS, lr=5e-2, seed=SEED),
                              progress=False)
    assert torch.equal(ours.image_latents, latents)
    assert torch.equal(ours.target_embedding, target)
    assert (optimized - target).abs().max() > 1e-3  # it trained
    assert (ours.optimized_embedding - optimized).abs().max() < 1e-6


def test_reference_stage_b_is_ours_given_the_same_draws(tiny, components, scheduler, cat_tensor, monkeypatch):
    target, optimized, latents = run_reference_embed(components, scheduler, cat_tensor, lr=5e-2)
    base = copy.deepcopy(components.unet.state_dict())
    draws, state_after = global_draws(latents, scheduler, SEED)
    torch.manual_seed(SEED)
    unet = reference.finetune_in_place(components, scheduler, latents, optimized, STEPS, lr=1e-3)
    assert unet is components.unet  # in place, no copy
    assert torch.equal(torch.get_rng_state(), state_after)
    trained = copy.deepcopy(unet.state_dict())

    reference.restore_unet(components, base)
    assert state_equal(components.unet.state_dict(), tiny.unet.state_dict())
    assert not any(p.requires_grad for p in components.unet.parameters()) and not components.unet.training

    replay(monkeypatch, "finetune", draws)
    ours = finetune_unet(components, EmbedResult(target, optimized, latents),
                         FinetuneParams(steps=STEPS, lr=1e-3, seed=SEED), progress=False)
    moved = max((trained[name] - base[name]).abs().max() for name in trained)
    differs = max((weight - trained[name]).abs().max() for name, weight in ours.unet.named_parameters())
    assert moved > 1e-3  # Adam moves a weight by up to lr a step
    assert differs < 1e-5  # fused Adam (ours) vs the per-tensor loop: rounding only (1.2e-6 measured)


def test_reference_stage_c_is_ours_and_pays_per_sample(components, scheduler, embedded):
    alphas, seeds = [0.0, 1.2], [0, 5]
    calls = {"text_encoder": 0, "set_timesteps": 0}
    hook = components.text_encoder.register_forward_hook(lambda *args: calls.__setitem__(
        "text_encoder", calls["text_encoder"] + 1))
    set_timesteps = scheduler.set_timesteps

    def counted_set_timesteps(*args, **kwargs):
        calls["set_timesteps"] += 1
        return set_timesteps(*args, **kwargs)

    scheduler.set_timesteps = counted_set_timesteps
    try:
        images = reference.sample_alphas(components, scheduler, embedded.target_embedding,
                                         embedded.optimized_embedding, alphas, seeds, 5, 7.5, 0.0)
    finally:
        hook.remove()
    assert calls == {"text_encoder": 4, "set_timesteps": 4}  # once per sample, as one pipeline call each

    ours = sample_alphas(components, components.unet, embedded.target, embedded.optimized, alphas, seeds,
                         SampleParams(steps=5, batch_size=4), progress=False)
    ours = (ours / 2 + 0.5).clamp(0, 1).permute(0, 1, 3, 4, 2).numpy()
    assert images.shape == ours.shape == (2, 2, 64, 64, 3)
    assert abs(images[0, 0] - images[1, 0]).max() > 0.05  # seeds differ
    assert abs(images - ours).max() < 1e-4


def test_reference_stage_c_samples_at_a_given_resolution_as_ours_does(components, scheduler, embedded):
    """`benchmarks.run --resolution` (the SD-scale table at 256 px): the reference's pipeline call takes the side
    as the community pipeline's height/width do, and draws the same images as ours at that side."""
    images = reference.sample_alphas(components, scheduler, embedded.target_embedding, embedded.optimized_embedding,
                                     [1.0], [0], 3, 7.5, 0.0, resolution=32)
    ours = sample_alphas(components, components.unet, embedded.target, embedded.optimized, [1.0], [0],
                         SampleParams(steps=3), height=32, width=32, progress=False)
    ours = (ours / 2 + 0.5).clamp(0, 1).permute(0, 1, 3, 4, 2).numpy()
    assert images.shape == ours.shape == (1, 1, 32, 32, 3)
    assert abs(images - ours).max() < 1e-4


def test_compile_break_even_is_the_extra_one_off_cost_over_the_per_step_saving():
    from benchmarks.compile_cost import break_even_steps, steady_and_one_off

    # steps start at 0, 5, 6, 7, 8, 9 and the run ends at 10: the first step (5 s) is one-off, the rest 1 s each
    assert steady_and_one_off([0.0, 5.0, 6.0, 7.0, 8.0, 9.0], end=10.0, begin=0.0) == (1.0, 4.0)
    eager = {"steady_s": 0.010, "one_off_s": 0.1}
    assert break_even_steps(eager, {"steady_s": 0.006, "one_off_s": 20.1}) == pytest.approx(5000)
    assert break_even_steps(eager, {"steady_s": 0.010, "one_off_s": 0.1}) == float("inf")  # no faster
    assert break_even_steps(eager, {"steady_s": 0.012, "one_off_s": 0.0}) == float("inf")  # slower
    assert break_even_steps(eager, {"steady_s": 0.006, "one_off_s": 0.05}) == 0  # no extra cost


@pytest.mark.parametrize("module", ["embed", "finetune"])
def test_compile_cost_clock_times_every_step_and_restores_the_stage(components, cat_tensor, embedded, module):
    from benchmarks.compile_cost import StepClock
    from imagic_steps import embed as embed_module, finetune as finetune_module

    stage = {"embed": embed_module, "finetune": finetune_module}[module]
    original = stage.draw_noise_and_timesteps
    with StepClock(module) as clock:
        if module == "embed":
            optimize_embedding(components, cat_tensor, PROMPT, EmbedParams(steps=5), progress=False)
        else:
            finetune_unet(components, embedded, FinetuneParams(steps=5), progress=False)
    assert len(clock.starts) == 5 and clock.starts == sorted(clock.starts)
    assert stage.draw_noise_and_timesteps is original


def test_profile_step_splits_a_step_into_unet_and_the_rest(components, cat_tensor):
    from benchmarks.profile_step import label_unet_forward, profile_stage

    handles = label_unet_forward(components.unet)
    try:
        row = profile_stage(lambda: optimize_embedding(components, cat_tensor, PROMPT, EmbedParams(steps=3),
                                                       progress=False), steps=3)
    finally:
        for handle in handles:
            handle.remove()
    assert row["UNet forward"] > 0 and row["backward"] > 0
    outside = 100 * (1 - (row["UNet forward"] + row["backward"]) / row["profiled ms/step"])
    assert row["outside UNet fwd+bwd %"] == pytest.approx(outside)
    assert 0 < row["outside UNet fwd+bwd and optimizer %"] < row["outside UNet fwd+bwd %"] < 100


@pytest.mark.slow  # two stages in fresh processes: ~15 s
def test_run_with_no_repeats_writes_the_per_stage_table_with_memory_estimates(tmp_path, preset_cache):
    """`benchmarks.run --repeats 0` (the SD-scale per-stage table): no comparison; each of ours' stages has
    imagic_steps.memory's estimate of its peak beside the measured one and runs with the warm worker's malloc
    settings, the reference's with the C library's defaults."""
    import pandas as pd

    from benchmarks import run

    run.main(["--settings", "original", "--model", "tiny", "--steps-embed", "2", "--steps-finetune", "2",
              "--sample-steps", "2", "--repeats", "0", "--stages", "embed", "finetune-reference",
              "--out", str(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "run.json"]
    rows = pd.read_csv(tmp_path / "results.csv").set_index("stage")
    assert pd.isna(rows.loc["finetune-reference", "estimated_peak_bytes"])  # no estimate of the reference's
    assert rows["malloc"].to_dict() == {"embed": "retain freed", "finetune-reference": "default"}
    peak, estimate = rows.loc["embed", ["peak_bytes", "estimated_peak_bytes"]]
    assert 0.5 < peak / estimate < 1.5  # the tiny model's peak is mostly the libraries the estimate allows for


def test_stage_memory_estimate_counts_the_loaded_text_encoder_and_the_sampling_batch(preset_cache):
    from benchmarks.common import bench_settings
    from benchmarks.stage_worker import estimated_peak_bytes
    from imagic_steps.memory import DTYPE_BYTES, GIB, SD15, planning_model_size, stage_estimate

    config = replace(bench_settings()["original"], model="sd15-shaped", resolution=256)  # planned as SD-1.5, unbuilt
    full = estimated_peak_bytes("finetune-full", config, "cpu")
    lora = estimated_peak_bytes("finetune-lora", config, "cpu")
    assert full - lora > 12 * SD15.unet  # fp32 copy + gradients + Adam moments, less LoRA's few weights
    assert full - estimated_peak_bytes("finetune-full", config, "cuda") > 0.9 * GIB  # host: libraries + loading
    # on the device the sampling batch shows (on the host, mapping the UNet's file outweighs 8 samples at 256 px)
    # this process holds the text encoder on the device as well (a workflow's fine-tune job does not load it)
    size, _ = planning_model_size(config.model)
    device = stage_estimate("finetune", size, "fp32", 256, config.finetune_params("full")).device_total
    assert estimated_peak_bytes("finetune-full", config, "cuda") == round(
        (device + DTYPE_BYTES["fp32"] * size.text_encoder / GIB) * GIB)
    one = estimated_peak_bytes("sample", replace(config, alphas=(1.0,), seeds=(0,)), "cuda")
    assert estimated_peak_bytes("sample", config, "cuda") > one  # 8 samples' activations vs 1
    assert estimated_peak_bytes("sample-reference", config, "cpu") is None


# ---- benchmarks.gpu_check: the first GPU machine's check ----------------------------------------------------------

def requirement_closure(names: list[str]) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions `names` need: themselves and their requirements, recursively (no extras)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        try:
            found[name] = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # a requirement for another platform
        for text in found[name].requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def site_packages_view(folder: Path, distributions: list[importlib.metadata.Distribution]) -> Path:
    """A folder holding only `distributions` (links to their top-level packages and metadata): site-packages as a
    machine with only those installed has it."""
    folder.mkdir()
    for distribution in distributions:
        root = Path(distribution.locate_file(""))
        for top in {Path(str(file)).parts[0] for file in distribution.files or [] if not str(file).startswith("..")}:
            if (root / top).exists() and not (folder / top).exists():
                (folder / top).symlink_to(root / top)
    return folder


def readme_wheels() -> list[str]:
    """The packages benchmarks/README.md's `pip download` commands bring to the GPU machine (each pinned: NAME==V)."""
    text = (REPO / "benchmarks/README.md").read_text()
    section = text[text.index("## The first GPU machine"):text.index("## GPU plan")].replace("\\\n", " ")
    commands = re.findall(r"^pip download (.+)$", section, re.M)
    assert len(commands) == 2, commands
    return [token.split("==")[0] for command in commands for token in command.split() if "==" in token]


def test_gpu_check_needs_a_gpu_unless_a_dry_run(capsys):
    from benchmarks import gpu_check

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(SystemExit):
        gpu_check.main([])
    assert "no CUDA device: run on the GPU machine, or give --dry-run" in capsys.readouterr().err


@pytest.mark.slow  # the whole check on the tiny model in a fresh process: 15-30 s
def test_gpu_check_dry_run_prints_every_section_from_the_checkout_with_only_the_listed_packages(tmp_path,
                                                                                                 preset_cache):
    """`python -m benchmarks.gpu_check --dry-run` as the GPU machine runs it: from the checkout's root with no
    site-packages (`-S`: no `pip install -e .`), only torch, transformers and their requirements installed, plus
    what benchmarks/README.md's commands bring (files only: `--no-deps`). Every section is printed, in order."""
    from benchmarks.gpu_check import SECTIONS

    wheels = readme_wheels()
    assert {"diffusers", "peft", "accelerate", "open-clip-torch"} <= set(wheels)
    installed = list(requirement_closure(["torch", "transformers"]).values())
    installed += [importlib.metadata.distribution(name) for name in wheels]
    view = site_packages_view(tmp_path / "site-packages", installed)
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([sys.executable, "-S", "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(view), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("gpu_check: cpu") and "model tiny at 64 px" in lines[0]
    headers = [line.removeprefix("== ") for line in lines if line.startswith("== ")]
    assert headers == list(SECTIONS)
    assert lines[-1].startswith("gpu_check done in") and out.is_file()
    record = json.loads(out.read_text())
    assert record["versions"]["imagic_steps_from"] == str(REPO / "imagic_steps")
    stages = {row["stage"]: row for row in record["stages"]}
    assert set(stages) == {"ours A", "reference A", "ours B full", "reference B full", "ours B LoRA",
                           "ours C 8 alphas", "reference C 8 alphas", "ours C 1 alpha", "reference C 1 alpha",
                           "ours B full bf16 autocast"}
    assert all(row["s_per_step"] > 0 and row["peak_bytes"] > 0 for row in stages.values())
    assert all(stages[name]["estimated_peak_bytes"] for name in ("ours A", "ours B full", "ours B LoRA",
                                                                   "ours C 8 alphas"))
    assert record["projected_edit_s"]["reference"] > 0


def test_the_main_job_splits_idle_core_time_by_how_many_jobs_ran():
    """Two cores; job bodies [0, 10], [0, 4], [5, 10] and [12, 13]: one core idle from 4 to 5 while one job ran
    (1 core-second), both from 10 to 12 (4), one from 12 to 13 (1)."""
    from benchmarks.main_job import idle_core_seconds

    assert idle_core_seconds([(0, 10), (0, 4), (5, 10), (12, 13)], cores=2) == (2.0, 4.0)
    assert idle_core_seconds([(0, 3), (0, 3)], cores=2) == (0.0, 0.0)
