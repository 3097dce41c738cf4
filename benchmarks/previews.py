"""What preview grids cost stage B on the default run: the `imagic` variant of config/config.yaml, one pair.

    HF_HUB_OFFLINE=1 python -m benchmarks.previews [--rounds 3]

Prints the CPU seconds (time.process_time: one torch thread, so other jobs on the machine barely move it; wall
seconds in brackets) of `finetune.run_finetune` without any grid, with only the finished model's grid
(preview.png, which the workflow always draws) and with the config's cadence, and what the grids add to the
stage. Medians over rounds, configurations interleaved.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from benchmarks.common import REPO_ROOT
from imagic_steps.configuration import ModelSpec
from imagic_steps.embed import run_embed
from imagic_steps.finetune import run_finetune
from imagic_steps.variants import resolve_variant


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text())
    variant = resolve_variant("imagic", {"alphas": config["alphas"], **config["variants"]["imagic"]})
    with open(REPO_ROOT / config["pairs"], encoding="utf-8") as sheet:
        pair = next(csv.DictReader(sheet, delimiter="\t"))
    components = ModelSpec.from_config(config["model"]).load()
    folder = Path(tempfile.mkdtemp(prefix="bench_previews_"))
    embed = folder / "embed.safetensors"
    run_embed(components, REPO_ROOT / pair["image"], pair["prompt"], variant.embed, resolution=variant.resolution,
              artefact=embed, losses_csv=folder / "embed.csv", loss_plot=folder / "embed.png",
              record=folder / "embed.json", progress=False)
    no_periodic = dataclasses.replace(variant.finetune, preview_every=0)
    settings = {"no grid": (no_periodic, False), "preview.png only": (no_periodic, True),
                "the config's cadence": (variant.finetune, True)}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
    grids = {}
    for round_ in range(args.rounds + 1):  # round 0 warms up
        for index, (name, (params, final)) in enumerate(settings.items()):
            out = folder / f"{round_}_{index}"
            wall, cpu = time.perf_counter(), time.process_time()
            run_finetune(components, embed, params, preview_sample=variant.sample, resolution=variant.resolution,
                         artefact=out / "finetune.safetensors", losses_csv=out / "losses.csv",
                         loss_plot=out / "losses.png", previews_dir=out / "previews", record=out / "record.json",
                         final_preview=out / "preview.png" if final else None, progress=False)
            if round_:
                times[name].append((time.process_time() - cpu, time.perf_counter() - wall))
            grids[name] = int(final) + len(list((out / "previews").iterdir()))
    base = statistics.median(cpu for cpu, _ in times["no grid"])
    print(f"stage B of pair {pair['pair_id']}, variant imagic: {variant.finetune.steps} steps, preview_every "
          f"{variant.finetune.preview_every}, preview_steps {variant.finetune.preview_steps}, {args.rounds} rounds")
    for name, runs in times.items():
        cpu, wall = statistics.median(c for c, _ in runs), statistics.median(w for _, w in runs)
        print(f"  {name:22s} {grids[name]} grid(s): {cpu:.2f} s CPU [{wall:.2f} s wall], "
              f"{100 * (cpu - base) / base:+.1f} % against no grid")


if __name__ == "__main__":
    main()
