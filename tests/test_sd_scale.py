"""config/sd15.yaml's own experiment through the workflow on the SD-1.5-shaped model (random weights), on the CPU.

The overlay tests/configs/sd15_shaped_overlay.yaml keeps sd15.yaml's variants (LoRA included), its fine-tune-steps
sweep, SDEdit and its scorer architectures (CLIP ViT-B-32, LPIPS-alex, random weights), adds LEDITS++ and DDIM
inversion (one setting, 2 steps each), and cuts pairs, seeds, alphas, steps and resolution (256 px) to fit a 2-core
CI machine. The whole experiment is planned; what runs is one job of each kind (`paper` and `paper_lora`: one
embed, a full and a LoRA fine-tune, their two sample jobs, SDEdit, LEDITS++, DDIM inversion, the scores and
tables): the other variants' jobs are the same code at the same size with other numbers, and a full fine-tune job
took 241 s here (with a 10-step preview); the LEDITS++ and DDIM inversion jobs took 15 s and 16 s. What it
proves: every stage runs at Stable Diffusion's real size and each job's peak memory is what imagic_steps.memory
planned for it. What it cannot: anything about edit quality, nor the parts of an estimate that 256 px leaves
below the model-loading transient (the VAE decode, LEDITS++'s attention scores: benchmarks/README.md, "Baselines'
memory", checks those at 640-768 px).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ONE_AT_A_TIME
from snakemake.utils import update_config

from imagic_steps.memory import GIB, LIBRARY_RSS_GIB, MB, SAFETY_FACTOR

REPO = Path(__file__).resolve().parents[1]
OVERLAY = "tests/configs/sd15_shaped_overlay.yaml"
CONFIGS = ["--configfile", "config/sd15.yaml", OVERLAY]
RUN_VARIANTS = ("paper", "paper_lora")  # one job of each kind (module docstring)
MEMORY_LIMIT_MB = 23000  # one full fine-tune (~17 GiB here) at a time, and nothing beside it, on 24 GiB
MODEL_RULES = ("embed", "finetune", "sample", "sdedit", "ledits", "ddim_inversion")
MIB = 2**20  # Snakemake's benchmark max_rss is in MiB

pytestmark = ONE_AT_A_TIME  # SD-sized models, and Snakemake in the repository itself (conftest.py)


def snakemake(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--resources", f"mem_mb={MEMORY_LIMIT_MB}", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=2400,
                          preexec_fn=lambda: os.umask(0o022))


def planned_memory(*args: str) -> dict[str, tuple[str, int, str]]:
    """benchmark path -> (the job's rule, its mem_mb, its log path), from a verbose dry run."""
    done = snakemake(*args, "--dry-run", "--verbose")
    assert done.returncode == 0, done.stderr[-3000:]
    planned = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", done.stdout + done.stderr):
        rule = re.match(r"(?:local)?rule (\w+):", block)
        bench = re.search(r"^\s+benchmark: (\S+)$", block, re.M)
        memory = re.search(r"\bmem_mb=(\d+)", block)
        log = re.search(r"^\s+log: (\S+)", block, re.M)
        if rule and rule.group(1) in MODEL_RULES and bench and memory:
            planned[bench.group(1)] = (rule.group(1), int(memory.group(1)), log.group(1).split(" ")[0])
    return planned


def estimate_before_safety_mib(mem_mb: int) -> float:
    """A CPU job's mem_mb is libraries + SAFETY_FACTOR x the stage estimate; undo the factor."""
    stage_gib = (mem_mb * MB / GIB - LIBRARY_RSS_GIB) / SAFETY_FACTOR
    return (LIBRARY_RSS_GIB + stage_gib) * GIB / MIB


@pytest.fixture(scope="module")
def sd15_plan(tmp_path_factory) -> dict:
    """plan.json of the whole experiment (config/sd15.yaml + the overlay, every variant and the sweep): planned
    only, no model job."""
    results = tmp_path_factory.mktemp("sd15_shaped_plan") / "results"
    done = snakemake(*CONFIGS, "--config", f"results={results}", "--until", "experiment_plan")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((results / "plan.json").read_text())


@pytest.fixture(scope="module")
def sd15_run(tmp_path_factory):
    """The experiment cut to RUN_VARIANTS (config/sd15.yaml + the overlay merged as Snakemake merges config
    files, other variants and the sweep left out), run: (results folder, planned memory of its model jobs)."""
    from imagic_steps.preset_recipes import ensure_preset

    ensure_preset("sd15-shaped")  # once, before parallel jobs would each build it
    folder = tmp_path_factory.mktemp("sd15_shaped")
    config = yaml.safe_load((REPO / "config/sd15.yaml").read_text())
    update_config(config, yaml.safe_load((REPO / OVERLAY).read_text()))
    config["variants"] = {name: config["variants"][name] for name in RUN_VARIANTS}
    del config["sweeps"]
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    results = folder / "results"
    args = ("--configfile", str(folder / "config.yaml"), "--config", f"results={results}")
    planned = planned_memory(*args)
    done = snakemake(*args)
    assert done.returncode == 0, done.stderr[-5000:]
    return results, planned


@pytest.mark.slow
def test_sd15_yaml_fp16_on_the_cpu_is_one_clear_line():
    done = snakemake("--configfile", "config/sd15.yaml", "--config", "model={id: sd15-shaped, device: cpu}",
                     "--dry-run")
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 1 and len(errors) == 1
    assert errors[0].startswith("error: config (model.dtype): fp16 weights on the CPU")


@pytest.mark.slow
def test_sd15_experiment_plans_every_variant_and_the_sweep(sd15_plan):
    sd15 = yaml.safe_load((REPO / "config/sd15.yaml").read_text())
    expected = set(sd15["variants"]) | {f"finetune_steps-{v}" for v in
                                        yaml.safe_load((REPO / OVERLAY).read_text())["sweeps"]["finetune_steps"]["values"]}
    assert {run["variant"]["name"] for run in sd15_plan["runs"]} == expected
    assert {run["variant"]["finetune"]["mode"] for run in sd15_plan["runs"]} == {"full", "lora"}
    assert sd15_plan["models"] == {"sd15-shaped": {"id": "sd15-shaped", "revision": None, "dtype": "bf16",
                                                   "device": "cpu", "channels_last": False, "compile": False}}
    assert sd15_plan["scorer"]["clip_arch"] == "ViT-B-32" and sd15_plan["scorer"]["lpips_net"] == "alex"


@pytest.mark.slow
def test_sd15_experiment_runs_at_sd_scale_with_the_planned_memory(sd15_run, capsys):
    results, planned = sd15_run
    plan = json.loads((results / "plan.json").read_text())
    assert {run["variant"]["name"] for run in plan["runs"]} == set(RUN_VARIANTS)
    assert {run["variant"]["finetune"]["mode"] for run in plan["runs"]} == {"full", "lora"}
    # one job of each kind: one embed (the two variants share its parameters), a full and a LoRA fine-tune,
    # their sample jobs, one job of each baseline
    assert sorted(rule for rule, *_ in planned.values()) == ["ddim_inversion", "embed", "finetune", "finetune",
                                                              "ledits", "sample", "sample", "sdedit"]

    # every stage finished, and the scores say their networks were random
    assert (results / "tables/summary.md").exists() and (results / "montages/best_edits.png").exists()
    for baseline in ("sdedit", "ledits", "ddim_inversion"):
        assert len(list(results.glob(f"{baseline}/*/*/*.png"))) == 1, baseline
    scores = (results / "tables/scores.csv").read_text()
    assert "random-init(clip:ViT-B-32+lpips:alex)" in scores
    for record in results.glob("embed/*/*/provenance.json"):
        assert json.loads(record.read_text())["model"]["random_weights"] is True

    # peak memory of each model job within 20 % of its estimate before the safety factor. The peak is the kernel's
    # high-water mark that each job logs; Snakemake's benchmark max_rss is shown too, but it samples every 0.5 s
    # and misses short peaks (loading a model is one), and with the warm worker it measures the job's hand-over
    # process only (imagic_steps/execution/warm_worker.py).
    rows = []
    for bench, (_, mem_mb, log) in sorted(planned.items()):
        max_rss = float(Path(bench).read_text().splitlines()[1].split("\t")[2])
        peak = float(re.findall(r"peak RSS (\d+) MiB", Path(log).read_text())[-1])
        estimate = estimate_before_safety_mib(mem_mb)
        rows.append((str(Path(bench).relative_to(results / "benchmark")), mem_mb, estimate, max_rss, peak,
                     peak / estimate))
    with capsys.disabled():
        print("\n| job | mem_mb | estimate before x1.2 (MiB) | benchmark max_rss (MiB) | peak RSS (MiB) | peak / estimate |")
        print("|---|---|---|---|---|---|")
        for job, mem_mb, estimate, max_rss, peak, ratio in rows:
            print(f"| {job} | {mem_mb} | {estimate:.0f} | {max_rss:.0f} | {peak:.0f} | {ratio:.2f} |")
    assert len(rows) == len(planned)
    off = [(job, round(ratio, 2)) for job, *_, ratio in rows if not 0.8 <= ratio <= 1.2]
    assert not off, f"jobs whose peak memory is more than 20 % off their estimate: {off}"

    private = [str(p) for p in results.rglob("*") if p.is_file() and p.stat().st_mode & 0o777 != 0o644]
    assert not private, private[:5]
