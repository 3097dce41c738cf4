"""Atomic writes: a killed writer's temporary does not outlive the next write of the same target."""

import os

import pytest

from imagic_steps.io import atomic_path, write_text


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
