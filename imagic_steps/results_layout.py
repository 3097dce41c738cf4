"""Where a run's files live under its results folder, and the rows that list every sample.

One home for each path: the rules declare the patterns (Snakemake wildcards in braces: `{pair}`, `{ekey}`, ...),
and the input functions, the samples table and the montages fill the same patterns in from a planned run, so what
one rule writes and what the next reads cannot part. Plain Python, built by the workflow's common.smk and tested
without Snakemake (tests/test_results_layout.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .plan import BASELINES, BaselineRun, PlannedRun, format_alpha
from .trajectory import recorded_stops

SAMPLE_JOBS = ("per_alpha", "per_variant")  # the config's `sample_jobs`: one sample job per alpha, or per sample set


@dataclass(frozen=True)
class ResultsLayout:
    """The paths of one results folder `root`: stage folders keyed by pair and cache key, samples, score files
    (under the scorer's key: another scorer, or retrained scorer weights, rescore) and sample-job records."""

    root: str
    scorer_key: str
    sample_jobs: str = "per_alpha"

    def __post_init__(self) -> None:
        if self.sample_jobs not in SAMPLE_JOBS:
            raise ValueError(f"sample_jobs {self.sample_jobs!r}: give one of {', '.join(SAMPLE_JOBS)}")

    # ---- patterns: what the rules declare ------------------------------------------------------------------
    @property
    def embed_dir(self) -> str:
        return f"{self.root}/embed/{{pair}}/{{ekey}}"

    @property
    def finetune_dir(self) -> str:
        return f"{self.root}/finetune/{{pair}}/{{fkey}}"

    @property
    def sample_png(self) -> str:
        return f"{self.root}/samples/{{pair}}/{{skey}}/seed{{seed}}_alpha{{alpha}}.png"

    @property
    def sdedit_png(self) -> str:
        return f"{self.root}/sdedit/{{pair}}/{{skey}}/seed{{seed}}_strength{{strength}}.png"

    @property
    def sample_job(self) -> str:
        """A sample job's name within its sample set: one alpha, or all of them."""
        return "alpha{alpha}" if self.sample_jobs == "per_alpha" else "all_alphas"

    @property
    def sample_record(self) -> str:
        return f"{self.root}/samples/{{pair}}/{{skey}}/{self.sample_job}.json"

    @property
    def sdedit_record(self) -> str:
        return f"{self.root}/sdedit/{{pair}}/{{skey}}/strength{{strength}}.json"

    @property
    def scores_csv(self) -> str:
        return f"{self.root}/scores/{self.scorer_key}/{{pair}}/{{skey}}.csv"

    def baseline_job_pngs(self, method: str, seeds: Sequence[int], grid: Sequence[float]) -> list[str]:
        """The PNG patterns of a per-pair baseline job (LEDITS++, DDIM inversion: one job per pair, the inversion
        shared by its settings): every seed it runs (a deterministic method: the first) x its setting grid."""
        baseline = BASELINES[method]
        runs_seeds = seeds if baseline.stochastic else seeds[:1]
        return [f"{self.root}/{method}/{{pair}}/{{skey}}/seed{seed}_{baseline.setting}{format_alpha(value)}.png"
                for seed in runs_seeds for value in grid]

    # ---- paths of planned runs: what the input functions, tables and montages read -------------------------
    def embed_artefact(self, run: PlannedRun) -> str:
        return self.embed_dir.format(pair=run.pair.pair_id, ekey=run.embed_key) + "/embed.safetensors"

    def finetune_folder(self, pair_id: str, finetune_key: str) -> str:
        return self.finetune_dir.format(pair=pair_id, fkey=finetune_key)

    def finetune_artefact(self, run: PlannedRun) -> str:
        return self.finetune_folder(run.pair.pair_id, run.finetune_key) + "/finetune.safetensors"

    def stage_folder(self, stage: str, pair_id: str, key: str) -> str:
        """The output folder of an `embed` or `finetune` job."""
        return self.embed_dir.format(pair=pair_id, ekey=key) if stage == "embed" else self.finetune_folder(pair_id, key)

    def finished_trajectory_stops(self, stage: str, pair_id: str, key: str) -> list[tuple[int, str]] | None:
        """The stops (steps, stage key) a finished embed or fine-tune wrote, from its provenance record
        (`trajectory.recorded_stops`): [] for one with none, None if it has not finished."""
        return recorded_stops(Path(self.stage_folder(stage, pair_id, key)) / "provenance.json")

    def trajectory_stop(self, stage: str, pair_id: str, owner_key: str, key: str) -> str:
        """Where a shared trajectory (the `stage` job `owner_key`) writes the files of the shorter run `key` until
        that one's job moves them into its own folder."""
        return f"{self.stage_folder(stage, pair_id, owner_key)}/trajectory/{key}"

    def sample(self, run: PlannedRun, seed: int, alpha: float) -> str:
        return self.sample_png.format(pair=run.pair.pair_id, skey=run.sample_key, seed=seed, alpha=format_alpha(alpha))

    def samples(self, run: PlannedRun) -> list[str]:
        """Every sample of an Imagic run, seed-major."""
        return [self.sample(run, seed, alpha) for seed in run.seeds for alpha in run.alphas]

    def baseline_sample(self, run: BaselineRun, seed: int, setting: float) -> str:
        """`seed{S}_{setting name}{value}.png` in the run's folder (SDEdit: seed0_strength0.5.png)."""
        return (f"{self.root}/{run.method.name}/{run.pair.pair_id}/{run.key}/"
                f"seed{seed}_{run.method.setting}{format_alpha(setting)}.png")

    def baseline_samples(self, run: BaselineRun) -> list[str]:
        """Every sample of a baseline run, seed-major."""
        return [self.baseline_sample(run, seed, setting) for seed in run.seeds for setting in run.settings]

    def score_csv(self, pair_id: str, key: str) -> str:
        """The score file of one sample set (an Imagic run's sample key) or baseline run (its key)."""
        return self.scores_csv.format(pair=pair_id, skey=key)


def sample_table_rows(runs: Sequence[PlannedRun], baseline_runs: Sequence[BaselineRun],
                      layout: ResultsLayout) -> list[dict[str, Any]]:
    """One row per sample (tables/samples.csv): every Imagic run x seed x alpha, then every baseline run x seed x
    setting. Each method's own setting column holds its value, the others' are empty (None); the stage keys and
    parameters say what made the sample."""
    no_settings = {method.setting: None for method in BASELINES.values()}
    rows = []
    for run in runs:
        variant = run.variant
        for seed in run.seeds:
            for alpha in run.alphas:
                rows.append({
                    "pair_id": run.pair.pair_id, "model": run.model, "variant": variant.name, "method": "imagic",
                    "seed": seed, "alpha": alpha, **no_settings,
                    "prompt": run.pair.prompt, "source_prompt": run.pair.source_prompt, "image": run.pair.image,
                    "sample": layout.sample(run, seed, alpha),
                    "embed_key": run.embed_key, "finetune_key": run.finetune_key, "sample_key": run.sample_key,
                    "embed_steps": variant.embed.steps, "embed_lr": variant.embed.lr,
                    "finetune_mode": variant.finetune.mode, "finetune_steps": variant.finetune.steps,
                    "finetune_lr": variant.finetune.lr, "scheduler": variant.sample.scheduler,
                    "sample_steps": variant.sample.steps, "guidance_scale": variant.sample.guidance_scale,
                })
    for run in baseline_runs:
        method = run.method.name
        for seed in run.seeds:
            for setting in run.settings:
                rows.append({
                    "pair_id": run.pair.pair_id, "model": run.model, "variant": method, "method": method,
                    "seed": seed, "alpha": None, **no_settings, run.method.setting: setting,
                    "prompt": run.pair.prompt, "source_prompt": run.pair.source_prompt, "image": run.pair.image,
                    "sample": layout.baseline_sample(run, seed, setting), "sample_key": run.key,
                    "scheduler": run.params.get("scheduler"), "sample_steps": run.params.get("steps"),
                    "guidance_scale": run.params.get("guidance_scale"),
                })
    return rows


def run_label(run: PlannedRun | BaselineRun, name: str, several_models: bool) -> list[str]:
    """A run's name in montages, as parts: its variant (a baseline: the method), after its model's label when the
    config has several models."""
    return [run.model, name] if several_models else [name]


def montage_rows(runs: Sequence[PlannedRun], baseline_runs: Sequence[BaselineRun], layout: ResultsLayout,
                 several_models: bool) -> list[dict[str, Any]]:
    """A pair montage's rows (imagic_steps.figures.MontageRow) from that pair's runs: one per Imagic run and seed,
    then one per baseline run and seed it ran (a deterministic baseline: its one seed), each its samples along its
    own setting grid."""
    rows = [{"method": "imagic", "name": run_label(run, run.variant.name, several_models), "seed": seed,
             "setting": "alpha", "values": list(run.alphas),
             "samples": [layout.sample(run, seed, alpha) for alpha in run.alphas]}
            for run in runs for seed in run.seeds]
    rows += [{"method": run.method.name, "name": run_label(run, run.method.name, several_models), "seed": seed,
              "setting": run.method.setting, "values": list(run.settings),
              "samples": [layout.baseline_sample(run, seed, setting) for setting in run.settings]}
             for run in baseline_runs for seed in run.seeds]
    return rows
