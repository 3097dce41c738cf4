"""Stage B on the tiny preset: training lowers the loss, never touches the base UNet, trains in fp32, stops on a
non-finite loss, writes previews without changing the result, resumes bit for bit, shares LoRA's frozen weights, and
writes a shared trajectory's shorter runs byte for byte as they would be written alone."""

import contextlib
import copy
import dataclasses
import json

import pytest
import torch
from conftest import FAST_SAMPLE, PROMPT, make_probe_set, probe_loss, state_equal

from imagic_steps import finetune as finetune_module
from imagic_steps import trajectory
from imagic_steps.diffusion import LossHistory, NonFiniteLossError
from imagic_steps.embed import optimize_embedding
from imagic_steps.finetune import FinetuneOutputs, PreviewSpec, finetune_unet, run_finetune
from imagic_steps.finetune_artefact import load_finetuned_unet, save_finetuned, trainable_state
from imagic_steps.variants import EmbedParams, FinetuneParams


@pytest.mark.parametrize("mode,lr", [("full", 1e-3), ("lora", 1e-2)])
def test_finetune_lowers_loss_on_fixed_probe_set(tiny, embedded, mode, lr):
    probe = make_probe_set(embedded.image_latents, tiny.scheduler, count=32)
    before = probe_loss(tiny.unet, tiny.scheduler, embedded.image_latents, embedded.optimized_embedding, probe)
    result = finetune_unet(tiny, embedded, FinetuneParams(steps=30, lr=lr, mode=mode), progress=False)
    after = probe_loss(result.unet, tiny.scheduler, embedded.image_latents, embedded.optimized_embedding, probe)
    print(f"stage B ({mode}) probe loss: {before:.4f} -> {after:.4f}")
    assert after < before


def test_finetune_never_modifies_the_base_unet(tiny, embedded, astronaut_image_path):
    from imagic_steps.images import load_image, pil_to_tensor

    base = copy.deepcopy(tiny.unet.state_dict())
    other = optimize_embedding(tiny, pil_to_tensor(load_image(astronaut_image_path, 64)), "an astronaut",
                               EmbedParams(steps=3), progress=False)
    ft = FinetuneParams(steps=5, lr=1e-3)
    alone = trainable_state(finetune_unet(tiny, other, ft, progress=False).unet, "full")
    for mode in ("full", "lora"):
        finetune_unet(tiny, embedded, dataclasses.replace(ft, mode=mode), progress=False)
        assert state_equal(tiny.unet.state_dict(), base), f"{mode} fine-tune changed the base UNet"
    second = trainable_state(finetune_unet(tiny, other, ft, progress=False).unet, "full")
    assert state_equal(alone, second)


def test_half_precision_weights_train_in_fp32(cat_tensor):
    from imagic_steps.model_loading import load_components

    components = load_components("tiny", dtype="bf16")
    embedded = optimize_embedding(components, cat_tensor, PROMPT, EmbedParams(steps=2), progress=False)
    assert embedded.optimized_embedding.dtype == torch.float32
    for mode in ("full", "lora"):
        result = finetune_unet(components, embedded, FinetuneParams(steps=2, lr=1e-3, mode=mode,
                                                                    mixed_precision="bf16"), progress=False)
        trainable = [p for p in result.unet.parameters() if p.requires_grad]
        assert trainable and all(p.dtype == torch.float32 for p in trainable)
        assert all(torch.isfinite(torch.tensor(result.losses)))


def test_non_finite_loss_stops_with_the_step(tiny, embedded, monkeypatch):
    real_loss = finetune_module.denoising_loss
    calls = {"n": 0}

    def loss_that_explodes(*args):
        calls["n"] += 1
        value = real_loss(*args)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(finetune_module, "denoising_loss", loss_that_explodes)
    with pytest.raises(NonFiniteLossError, match="at step 2"):
        finetune_unet(tiny, embedded, FinetuneParams(steps=5), progress=False)


def test_loss_history_gives_the_item_values_and_checks_every_n_steps():
    losses = [torch.tensor(v, dtype=torch.float32) for v in (0.1, 0.2, 0.3)]
    history = LossHistory("finetune", previous=[0.5], check_every=3)
    for loss in losses:
        history.append(loss)
    assert history.values() == [0.5] + [loss.item() for loss in losses]  # float32 values, not 0.1 etc.
    history.append(torch.tensor(float("nan")))
    history.append(torch.tensor(1.0))
    with pytest.raises(NonFiniteLossError, match="at step 4"):
        history.append(torch.tensor(1.0))  # the third pending loss is a check: it stops there, not at the end


def test_previews_are_written_and_do_not_change_training(tiny, embedded, tmp_path):
    params = FinetuneParams(steps=6, lr=1e-3, preview_every=3)
    with_previews = finetune_unet(tiny, embedded, params, preview=PreviewSpec(tmp_path, FAST_SAMPLE), progress=False)
    without = finetune_unet(tiny, embedded, dataclasses.replace(params, preview_every=0), progress=False)
    # the last step's grid is run_finetune's final preview, not drawn twice: only step 3 of 6 here
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000003.png"]
    assert state_equal(trainable_state(with_previews.unet, "full"), trainable_state(without.unet, "full"))


@contextlib.contextmanager
def killed_at_step(step: int, monkeypatch):
    """Fine-tuning raises KeyboardInterrupt (a simulated kill) at its `step`-th loss, 1-based, inside the block."""
    real_loss = finetune_module.denoising_loss
    calls = {"n": 0}

    def loss(*args):
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt("simulated kill")
        return real_loss(*args)

    monkeypatch.setattr(finetune_module, "denoising_loss", loss)
    try:
        yield
    finally:
        monkeypatch.setattr(finetune_module, "denoising_loss", real_loss)


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_resume_from_checkpoint_is_bit_identical(tiny, embedded, tmp_path, monkeypatch, mode):
    params = FinetuneParams(steps=9, lr=1e-3, mode=mode, checkpoint_every=4)
    reference = finetune_unet(tiny, embedded, params, checkpoint_dir=tmp_path / "ref", progress=False)

    with killed_at_step(7, monkeypatch), pytest.raises(KeyboardInterrupt):
        finetune_unet(tiny, embedded, params, checkpoint_dir=tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "latest.json").exists()
    resumed = finetune_unet(tiny, embedded, params, checkpoint_dir=tmp_path / "run", progress=False)
    assert resumed.losses == reference.losses
    assert state_equal(trainable_state(resumed.unet, mode), trainable_state(reference.unet, mode))


def test_lora_training_shares_the_frozen_weights_with_the_base(tiny, embedded, tmp_path):
    """No second copy of the UNet for LoRA: the adapters sit over the base's own weight tensors, untouched."""
    from imagic_steps.finetune import trainable_unet

    base = {name: p.data_ptr() for name, p in tiny.unet.named_parameters()}
    tuned = finetune_unet(tiny, embedded, FinetuneParams(steps=2, lr=1e-3, mode="lora"), progress=False)
    frozen = {name.replace(".base_layer", ""): p.data_ptr() for name, p in tuned.unet.named_parameters()
              if not p.requires_grad}
    assert frozen == base
    assert not any("lora" in name for name, _ in tiny.unet.named_parameters())
    save_finetuned(tmp_path / "lora.safetensors", tuned)
    loaded = load_finetuned_unet(tiny.unet, tmp_path / "lora.safetensors")
    assert {n.replace(".base_layer", ""): p.data_ptr() for n, p in loaded.named_parameters() if "lora" not in n} == base
    full = trainable_unet(tiny.unet, FinetuneParams(mode="full"))
    assert not set(p.data_ptr() for p in full.parameters()) & set(base.values())  # full mode trains a real copy


def run_to_folder(components, embed_file, params, folder, stops=()):
    """run_finetune writing the finetune rule's files into `folder`; returns where they are."""
    outputs = FinetuneOutputs(folder / "finetune.safetensors", folder / "losses.csv", folder / "losses.png",
                              folder / "previews", folder / "provenance.json", folder / "preview.png")
    run_finetune(components, embed_file, params, preview_sample=FAST_SAMPLE, resolution=None,
                 artefact=outputs.artefact, losses_csv=outputs.losses_csv, loss_plot=outputs.loss_plot,
                 previews_dir=outputs.previews_dir, record=outputs.record, final_preview=outputs.final_preview,
                 checkpoint_dir=folder.parent / f"{folder.name}_resume", stops=stops, pair_id="cat", progress=False)
    return outputs


def same_files(first: FinetuneOutputs, second: FinetuneOutputs) -> None:
    for a, b in zip(first.paths(), second.paths()):
        if a == first.previews_dir:
            assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
            for grid in a.iterdir():
                assert grid.read_bytes() == (b / grid.name).read_bytes(), grid.name
        elif a != first.record:  # the records differ by design (time, the trajectory)
            assert a.read_bytes() == b.read_bytes(), a.name


# LoRA's case in the slow tier: the same code path but the artefact (its metadata order: tests/test_io.py)
@pytest.mark.parametrize("mode,lr", [("full", 1e-3), pytest.param("lora", 1e-2, marks=pytest.mark.slow)])
def test_a_shared_trajectory_writes_each_stop_as_a_separate_run_would(tiny, embedded, tmp_path, mode, lr):
    """One run to 6 steps with stops at 3 and 4: the 4-step stop's files, moved into place, are byte for byte a
    separate 4-step run's (artefact, losses, loss curve, final and intermediate preview grids)."""
    embed_file = tmp_path / "embed.safetensors"
    embedded.save(embed_file)
    params = FinetuneParams(steps=6, lr=lr, mode=mode, preview_every=2, preview_steps=2)
    stops = [(3, tmp_path / "long/trajectory/k3"), (4, tmp_path / "long/trajectory/k4")]
    long = run_to_folder(tiny, embed_file, params, tmp_path / "long", stops)
    alone = run_to_folder(tiny, embed_file, dataclasses.replace(params, steps=4), tmp_path / "alone")
    adopted = FinetuneOutputs(*(tmp_path / "adopted" / p.name for p in alone.paths()))
    assert trajectory.adopt(stops[1][1], adopted.paths())
    same_files(alone, adopted)
    assert sorted(p.name for p in adopted.previews_dir.iterdir()) == ["step_000002.png"]
    assert not stops[1][1].exists()
    record = json.loads(adopted.record.read_text())
    assert record["params"]["steps"] == 4 and record["trajectory"]["stopped_at"] == 4
    assert json.loads(long.record.read_text())["trajectory_stops"] == [{"steps": 3, "folder": "k3"},
                                                                       {"steps": 4, "folder": "k4"}]
    # a stop missing a file is not adopted, and nothing is moved: the fine-tune then trains itself
    (stops[0][1] / "losses.png").unlink()
    elsewhere = FinetuneOutputs(*(tmp_path / "elsewhere" / p.name for p in alone.paths()))
    assert not trajectory.adopt(stops[0][1], elsewhere.paths())
    assert (stops[0][1] / "finetune.safetensors").exists() and not elsewhere.artefact.exists()


def test_a_trajectory_resumed_after_a_kill_keeps_the_stops_it_had_passed(tiny, embedded, tmp_path, monkeypatch):
    """Killed at step 5 of 6 after a checkpoint at 4: the stops at 2 and 4 written before the kill are kept (the
    resumed run does not pass them again) and still equal separate runs' files."""
    embed_file = tmp_path / "embed.safetensors"
    embedded.save(embed_file)
    params = FinetuneParams(steps=6, lr=1e-3, checkpoint_every=4, preview_every=2, preview_steps=2)
    stops = [(2, tmp_path / "long/trajectory/k2"), (4, tmp_path / "long/trajectory/k4")]
    with killed_at_step(5, monkeypatch), pytest.raises(KeyboardInterrupt):
        run_to_folder(tiny, embed_file, params, tmp_path / "long", stops)
    written = {path: path.stat().st_mtime_ns for path in stops[1][1].rglob("*")}
    run_to_folder(tiny, embed_file, params, tmp_path / "long", stops)
    assert {path: path.stat().st_mtime_ns for path in stops[1][1].rglob("*")} == written  # kept, not redone
    for steps, folder in stops:
        alone = run_to_folder(tiny, embed_file, dataclasses.replace(params, steps=steps), tmp_path / f"alone{steps}")
        same_files(alone, FinetuneOutputs(*(folder / p.name for p in alone.paths())))
