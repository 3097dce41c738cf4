"""Every shipped config plans exactly its own experiment, as a user types it from the repository root.

Each test runs `snakemake --configfile config/X.yaml` in the repository itself (the merge bug only showed there,
where config/config.yaml exists) with the results redirected to a temporary folder, and reads the resolved plan
that rule experiment_plan writes (no model is loaded).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from jinja2 import Environment

from conftest import ONE_AT_A_TIME, planned_resources_of
from imagic_steps.io import save_image, save_tensors, staging_dir, write_text
from imagic_steps.memory import ARCHITECTURE_SIZES, KNOWN_MODELS, SD15, job_memory_mb, stage_estimate
from imagic_steps.variants import deep_merge, resolve_variant

REPO = Path(__file__).resolve().parents[1]
pytestmark = ONE_AT_A_TIME  # Snakemake runs in the repository itself (conftest.py)
SHIPPED = ["config.yaml", "tiny.yaml", "sd15.yaml", "sdxl.yaml", "if.yaml", "tedbench.yaml", "analysis.yaml",
           "analysis_tuning.yaml"]


def snakemake(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "--cores", "1", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def plan_of(results: Path, *args: str, config: tuple[str, ...] = (), cwd: Path = REPO) -> dict:
    """The plan of `snakemake ARGS --config results=RESULTS CONFIG...` (Snakemake keeps only the last --config)."""
    done = snakemake(*args, "--config", f"results={results}", *config, "--until", "experiment_plan", cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((results / "plan.json").read_text())


def expected_variants(config: dict) -> dict[str, dict]:
    """The file's variants plus one per swept value, as plan.expand_sweeps names them."""
    specs = {name: dict(spec or {}) for name, spec in config["variants"].items()}
    for sweep_name, sweep in config.get("sweeps", {}).items():
        section, field = sweep["field"].split(".")
        for value in sweep["values"]:
            base = yaml.safe_load(yaml.safe_dump(specs[sweep["variant"]]))
            base.setdefault(section, {})[field] = value
            specs[f"{sweep_name}-{value}"] = base
    return specs


def pair_count(config: dict) -> int:
    if "tedbench" in config:
        return len(json.loads((REPO / config["tedbench"]["json"]).read_text()))
    return len((REPO / config["pairs"]).read_text().strip().splitlines()) - 1


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.slow) if name.startswith("analysis") else name
                                  for name in SHIPPED])  # the analysis' plans: ~9-10 s each
def test_each_shipped_config_plans_exactly_its_own_experiment(tmp_path, name):
    config = yaml.safe_load((REPO / "config" / name).read_text())
    plan = plan_of(tmp_path / "results", "--configfile", f"config/{name}")

    variants = expected_variants(config)
    models = config.get("models") or {config["model"]["id"]: config["model"]}  # label -> block
    planned = {(run["model"], run["variant"]["name"]): run["variant"] for run in plan["runs"]}
    assert {name for _, name in planned} == set(variants)
    for (label, variant_name), variant in planned.items():  # every stage parameter is the file's (or its preset's)
        top_level = {key: config[key] for key in ("alphas", "resolution") if key in config}  # a variant's own wins
        # a model's own settings of a variant (its block's `variants:`) apply on that model only
        own = models[label].get("variants", {}).get(variant_name, {})
        expected = resolve_variant(variant_name, deep_merge({**top_level, **variants[variant_name]}, own)).to_dict()
        assert json.loads(json.dumps(variant)) == json.loads(json.dumps(expected)), (label, variant_name)
    assert {label: block["id"] for label, block in plan["models"].items()} == {
        label: block["id"] for label, block in models.items()}
    assert len(plan["pairs"]) == pair_count(config)
    assert len(plan["runs"]) == len(plan["pairs"]) * len(variants) * len(models)
    assert plan["seeds"] == config["seeds"]
    assert len(plan["sdedit"]) == (len(plan["pairs"]) * len(models) if "sdedit" in config else 0)
    if "scorer" in config:
        assert {k: v for k, v in plan["scorer"].items() if k in config["scorer"]} == config["scorer"]
    # nothing of the digits default leaks into another config
    if name != "config.yaml":
        assert plan["scorer"].get("kind") != "digits"
        assert not {"imagic", "embed_only", "finetune_only"} & (set(planned) - set(variants))


@pytest.mark.parametrize("name", SHIPPED)
def test_the_report_caption_names_each_model_of_each_shipped_config(name):
    """`snakemake --report` renders workflow/report/workflow.rst with the config (as Snakemake does: one jinja
    environment, the config as `snakemake.config`); a config with `models:` has no `model` key."""
    config = yaml.safe_load((REPO / "config" / name).read_text())

    class Snakemake:
        config = yaml.safe_load((REPO / "config" / name).read_text())

    caption = Environment(trim_blocks=True, lstrip_blocks=True).from_string(
        (REPO / "workflow/report/workflow.rst").read_text()).render(snakemake=Snakemake)
    models = config.get("models") or {config["model"]["id"]: config["model"]}
    for label, block in models.items():
        assert f"model ``{label}`` (``{block['id']}``)" in caption


def test_sd15_config_plans_its_variants_and_the_clip_scorer(tmp_path):
    plan = plan_of(tmp_path / "results", "--configfile", "config/sd15.yaml")
    names = {run["variant"]["name"] for run in plan["runs"]}
    assert names == {"original", "modified", "paper", "paper_lora", "finetune_steps-0", "finetune_steps-250",
                     "finetune_steps-500", "finetune_steps-1000", "finetune_steps-1500"}
    assert plan["scorer"]["kind"] == "clip" and plan["scorer"]["clip_arch"] == "ViT-B-32"
    original = next(r["variant"] for r in plan["runs"] if r["variant"]["name"] == "original")
    assert original["embed"]["steps"] == 500 and original["finetune"]["steps"] == 1000  # the preset's, not digits'
    assert original["finetune"]["mixed_precision"] == "fp16"
    assert plan["models"]["stable-diffusion-v1-5/stable-diffusion-v1-5"]["dtype"] == "fp16"


@pytest.mark.parametrize("name, family", [("sdxl.yaml", "sdxl"), ("if.yaml", "if")])
def test_family_configs_request_their_published_sizes_memory_before_any_download(tmp_path, name, family):
    """Planned offline (HF_HUB_OFFLINE, nothing cached): each model job's mem_mb / gpu_mem_mb is the estimate for
    the model's published architecture and family, at the config's resolution, not SD-1.5's fallback."""
    config = yaml.safe_load((REPO / "config" / name).read_text())
    size = ARCHITECTURE_SIZES[KNOWN_MODELS[config["model"]["id"]]]
    assert size.family == family and size.resolution == config["resolution"]
    done = snakemake("--configfile", f"config/{name}", "--config", f"results={tmp_path}/r", "--dry-run", "--verbose")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "published size" in done.stderr and "Stable Diffusion 1.5's size" not in done.stderr
    jobs = planned_resources_of(done.stdout + done.stderr)
    variants = [resolve_variant(n, {"alphas": config["alphas"], **spec}) for n, spec in config["variants"].items()]

    def expected(model_size, stage):
        return {tuple(job_memory_mb(stage_estimate(stage, model_size, "fp16", config["resolution"], v.finetune),
                                    "cuda").values()) for v in variants}

    for stage in ("embed", "finetune"):
        planned = {(int(job["mem_mb"]), int(job["gpu_mem_mb"])) for job in jobs[stage]}
        assert planned == expected(size, stage), stage
        assert planned.isdisjoint(expected(SD15, stage)), stage
    assert not (tmp_path / "r").exists()


def test_readme_states_the_memory_sd15_yaml_plans(tmp_path):
    """docs/running.md's "Memory per job" figures for config/sd15.yaml's full and LoRA fine-tunes (moved there from
    README.md) are what planning it requests (`--dry-run --verbose`), so the docs cannot drift from the estimate."""
    config = yaml.safe_load((REPO / "config/sd15.yaml").read_text())
    done = snakemake("--configfile", "config/sd15.yaml", "--config", f"results={tmp_path}/r", "--dry-run", "--verbose")
    assert done.returncode == 0, done.stderr[-3000:]
    planned = {int(job["gpu_mem_mb"]) for job in planned_resources_of(done.stdout + done.stderr)["finetune"]}
    page = " ".join((REPO / "docs/running.md").read_text().split())  # its text, line breaks as spaces
    for name in ("paper", "paper_lora"):
        finetune = resolve_variant(name, config["variants"][name]).finetune
        estimate = stage_estimate("finetune", SD15, config["model"]["dtype"], None, finetune)
        gpu_mem_mb = job_memory_mb(estimate, "cuda")["gpu_mem_mb"]
        assert gpu_mem_mb in planned, (name, planned)
        assert f"{estimate.device_total:.2f} GiB, `gpu_mem_mb={gpu_mem_mb}`" in page, (
            name, estimate.device_total, "docs/running.md")


def test_no_configfile_runs_the_digits_default(tmp_path):
    plan = plan_of(tmp_path / "results")
    default = yaml.safe_load((REPO / "config/config.yaml").read_text())
    assert {r["variant"]["name"] for r in plan["runs"]} == set(expected_variants(default))
    assert plan["scorer"]["kind"] == "digits" and list(plan["models"]) == ["digits"]  # one model, labelled by its id
    assert plan["models"]["digits"]["id"] == "digits"


def test_command_line_grids_and_results_override_the_file(tmp_path):
    results = tmp_path / "other"
    plan = plan_of(results, "--configfile", "config/tiny.yaml", config=("alphas=[0,0.5,1]", "seeds=[0,1,2]"))
    assert plan["config"]["alphas"] == [0.0, 0.5, 1.0]
    assert plan["seeds"] == [0, 1, 2]
    assert plan["config"]["results"] == str(results)
    assert all(run["variant"]["alphas"] == [0.0, 0.5, 1.0] for run in plan["runs"])
    # nested values typed by the schema too, and the top-level resolution reaches every variant and SDEdit
    plan = plan_of(tmp_path / "nested", "--configfile", "config/tiny.yaml",
                   config=("resolution=32", "sdedit={strengths: [0.5], steps: 3}"))
    assert {run["variant"]["resolution"] for run in plan["runs"]} == {32}
    assert {(s["resolution"], s["steps"], tuple(s["strengths"])) for s in plan["sdedit"]} == {(32, 3, (0.5,))}


@pytest.mark.parametrize("value, where", [
    ("alphas=[0,x,1]", "alphas[1]"),
    ("alphas=[0,nan]", "alphas[1]"),
    ("seeds=[0,1.5]", "seeds[1]"),
    ("seeds=[-1]", "seeds[0]"),
    ("model={id: tiny, dtype: fp64}", "model.dtype"),
    ("sdedit={strengths: [2]}", "sdedit.strengths[0]"),
    ("scorer={kind: clip, colour: red}", "scorer"),
    ("resolution=30", "resolution"),
])
def test_bad_command_line_values_give_one_line_naming_the_key(tmp_path, value, where):
    done = snakemake("--configfile", "config/tiny.yaml", "--config", f"results={tmp_path}/r", value, "--dry-run")
    assert done.returncode != 0
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-2000:]
    assert errors[0].startswith(f"error: config ({where}): ")
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "r").exists()


def test_a_users_own_tedbench_config_with_only_the_essentials_plans(tmp_path):
    listing = tmp_path / "input_list.json"
    listing.write_text(json.dumps([{"img_name": "chelsea.png", "target_text": "a cat in a hat"}]))
    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump({
        "tedbench": {"json": str(listing), "images": str(REPO / "config/images")},
        "model": {"id": "tiny"}, "seeds": [0], "alphas": [0.0, 1.0],
        "variants": {"paper": {"preset": "paper"}},
    }))
    plan = plan_of(tmp_path / "results", "--configfile", str(own))
    assert [r["variant"]["name"] for r in plan["runs"]] == ["paper"]
    assert plan["scorer"] == {"tiny": True}  # a random-weight model gets the offline scorers
    assert plan["sdedit"] == []


def test_both_pairs_and_tedbench_is_one_clear_line(tmp_path):
    done = snakemake("--config", f"results={tmp_path}/r", "tedbench={json: a.json, images: b}", "--dry-run")
    assert done.returncode != 0
    assert "error: config (pairs/tedbench): the config gives both 'pairs' and 'tedbench'" in done.stdout + done.stderr


def test_written_files_get_the_umask_permissions(tmp_path):
    from PIL import Image
    import torch

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        save_image(Image.new("RGB", (4, 4)), tmp_path / "a.png")
        save_tensors(tmp_path / "a.safetensors", {"w": torch.zeros(2)})
        folder = staging_dir(tmp_path, ".stage.")
    finally:
        os.umask(old)
    for name in ("a.txt", "a.png", "a.safetensors"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
    assert folder.stat().st_mode & 0o777 == 0o755
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temporary left behind


@pytest.mark.slow
def test_a_tedbench_list_of_awkward_photos_runs_through_configfile(tmp_path):
    """RGBA with transparency, a JPEG named .png, non-square and 1251 px photos, on `tiny`, end to end."""
    from PIL import Image
    from skimage import data

    originals = tmp_path / "originals"
    originals.mkdir()
    photo = Image.fromarray(data.chelsea())  # 451 x 300
    rgba = Image.fromarray(data.astronaut()).convert("RGBA")
    rgba.putalpha(Image.new("L", rgba.size, 0).point(lambda _: 128))
    rgba.save(originals / "rgba.png")
    photo.save(originals / "jpeg_named.png", format="JPEG")
    photo.transpose(Image.Transpose.ROTATE_90).save(originals / "portrait.png")
    photo.resize((1251, 832)).save(originals / "large.png")
    entries = [{"img_name": name, "target_text": f"a photo of {name.split('.')[0]} in winter"}
               for name in ("rgba.png", "jpeg_named.png", "portrait.png", "large.png")]
    (tmp_path / "input_list.json").write_text(json.dumps(entries))
    own = tmp_path / "mine.yaml"
    steps = {"embed": {"steps": 2}, "finetune": {"steps": 2}, "sample": {"steps": 2}}
    own.write_text(yaml.safe_dump({
        "tedbench": {"json": str(tmp_path / "input_list.json"), "images": str(originals)},
        "results": str(tmp_path / "results"), "model": {"id": "tiny"}, "seeds": [0], "alphas": [0.0, 1.0],
        "variants": {"original": {"preset": "original", **steps}},
    }))
    done = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(own)], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = tmp_path / "results"
    plan = json.loads((results / "plan.json").read_text())
    assert len(plan["pairs"]) == 4 and [r["variant"]["name"] for r in plan["runs"]] == ["original"] * 4
    samples = sorted(results.glob("samples/*/*/seed0_alpha*.png"))
    assert len(samples) == 8 and all(Image.open(p).size == (64, 64) for p in samples)
    scores = (results / "tables/scores.csv").read_text().splitlines()
    assert len(scores) == 1 + 8
