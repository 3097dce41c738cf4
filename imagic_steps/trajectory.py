"""A shared trajectory's stops on disk: the files a longer training run writes for a shorter one with the same
settings, and the shorter run's job moving them into its own outputs (`plan.SharedTrajectory` plans them).

A stop's folder holds the shorter run's outputs under the longer run's file names (`stop_paths`). The longer run
clears the stops it has not reached yet before training (`clear_unreached`: a stop it passed before a kill and a
resume is kept, since it does not pass it again), and the shorter run's job adopts them (`adopt`), or trains itself
when any is missing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)


def stop_paths(folder: str | Path, outputs: Sequence[Path]) -> list[Path]:
    """`outputs`' file names in a stop's `folder`."""
    return [Path(folder) / Path(path).name for path in outputs]


def clear_unreached(stops: Iterable[tuple[int, str | Path]], start: int) -> None:
    """Remove the folders of the stops after step `start` (the step training resumes from; 0 for a fresh run):
    written again on the way, and none may be left half-written by an earlier, killed run."""
    for steps, folder in stops:
        if int(steps) > start:
            shutil.rmtree(folder, ignore_errors=True)


STOPS_RECORD_KEY = "trajectory_stops"  # the longer run's provenance field listing its stops


def stops_record(stops: Sequence[tuple[int, str | Path]]) -> dict:
    """What the longer run's provenance records of its stops (steps and folder name, the shorter run's key), which
    planning reads back once it has finished (`recorded_stops`); {} for a run without stops."""
    return {STOPS_RECORD_KEY: [{"steps": int(steps), "folder": Path(folder).name} for steps, folder in stops]} \
        if stops else {}


def recorded_stops(record: str | Path) -> list[tuple[int, str]] | None:
    """The stops (steps, stage key) a finished run's provenance `record` lists (`stops_record`); [] for a run with
    none; None if the record does not exist or cannot be read (the run has not finished: planned afresh). The record
    is written last, so it exists only once the run is complete."""
    try:
        stops = json.loads(Path(record).read_text()).get(STOPS_RECORD_KEY, [])
        return [(int(stop["steps"]), str(stop["folder"])) for stop in stops]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def link_or_copy(source: Path, target: Path) -> None:
    """`target` as a hard link to `source` (no second copy of the bytes), or a copy where links are not possible."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def adopt(folder: str | Path, outputs: Sequence[Path]) -> bool:
    """Move a stop's files from `folder` into `outputs` (a folder among them: its files); False, moving nothing, if any
    is missing (the trajectory ran before this stop was planned, or the files were adopted and then deleted)."""
    staged = stop_paths(folder, outputs)
    if not all(path.exists() for path in staged):
        logger.info("no complete files of this run in its shared trajectory's folder %s: training it here", folder)
        return False
    for source, target in zip(staged, outputs):
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
            for item in source.iterdir():
                os.replace(item, target / item.name)
        else:
            os.replace(source, target)
    shutil.rmtree(folder)
    with contextlib.suppress(OSError):  # the trajectory's folder, once its last stop has moved out
        Path(folder).parent.rmdir()
    logger.info("written by its shared trajectory (%s): moved into place, nothing trained", folder)
    return True
