"""Atomic writes: a killed writer's temporary does not outlive the next write of the same target."""

import os

import pytest

from imagic_steps.io import atomic_path, load_tensors, read_metadata, save_tensors, write_text


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "seed0_alpha1.png"
    stale = tmp_path / ".seed0_alpha1.png.170d8515.tmp.png"  # what SIGKILL mid-write leaves
    other = tmp_path / ".seed0_alpha1.2.png.170d8515.tmp.png"  # another target's: not ours to remove
    stale.touch()
    other.touch()
    write_text(target, "x")
    assert target.read_text() == "x"
    assert not stale.exists() and other.exists()


def test_a_failed_write_leaves_neither_the_target_nor_a_temporary(tmp_path):
    target = tmp_path / "table.csv"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert os.listdir(tmp_path) == []


def test_equal_tensors_and_metadata_save_to_equal_bytes(tmp_path):
    """safetensors writes metadata from a hash map, in a new order each call (LoRA artefacts of identical runs
    differed); save_tensors sorts it, and the file still reads back the same."""
    import torch

    tensors = {"b": torch.ones(2, 3), "a": torch.arange(5.0)}
    metadata = {"mode": "lora", "target_modules": '["to_q", "to_k"]', "lora_rank": "4", "lora_alpha": "4.0", "é": "ü"}
    saved = set()
    for _ in range(8):
        save_tensors(tmp_path / "x.safetensors", tensors, metadata)
        saved.add((tmp_path / "x.safetensors").read_bytes())
    assert len(saved) == 1
    assert read_metadata(tmp_path / "x.safetensors") == metadata
    loaded = load_tensors(tmp_path / "x.safetensors")
    assert all(torch.equal(loaded[name], tensors[name]) for name in tensors)
