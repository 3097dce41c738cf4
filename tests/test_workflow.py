"""The Snakemake workflow on the tiny model: DAG, caching, reruns, validation, lint."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import hub_snapshot, planned_resources_of
from imagic_steps.locations import TINY_PRESET, preset_folder
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

HOSTILE_NAME = "astro naut's $(touch pwned) `id` ;x.png"  # shell syntax in a file name
TINY_STEPS = {"embed": {"steps": 2}, "finetune": {"steps": 2, "preview_every": 1, "preview_steps": 2},
              "sample": {"steps": 2}}


def write_config(workdir: Path, **changes) -> Path:
    """A small experiment: two pairs, two variants sharing their embed parameters."""
    images = workdir / "images"
    images.mkdir(exist_ok=True)
    shutil.copy(REPO / "config/images/chelsea.png", images / "cat.png")
    shutil.copy(REPO / "config/images/astronaut.png", images / "astronaut.png")
    (workdir / "pairs.tsv").write_text(
        "pair_id\timage\tprompt\tsource_prompt\n"
        "cat\timages/cat.png\ta photo of a gray cat\ta photo of a cat\n"
        "astro\timages/astronaut.png\tan astronaut with a red flag, \"quoted\" & $HOME `id`\t\n"
    )
    config = {
        "pairs": "pairs.tsv",
        "results": "results",
        "model": {"id": "tiny", "dtype": "fp32", "device": "cpu"},
        "seeds": [0],
        "alphas": [0.0, 1.0],
        "variants": {
            "full": {"preset": "original", **TINY_STEPS},
            "lora": {"preset": "original", **TINY_STEPS,
                     "finetune": {**TINY_STEPS["finetune"], "mode": "lora", "lr": 1e-3}},
        },
        "scorer": {"tiny": True},
    }
    for key, value in changes.items():
        config[key] = value
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, env={**os.environ},
                          preexec_fn=shared_umask)
    if check and done.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def shared_umask() -> None:
    """Run Snakemake as a user on a shared project folder would: umask 022, so results must come out 0644."""
    os.umask(0o022)


def planned_jobs(workdir: Path, *targets: str) -> dict[str, list[str]]:
    """Dry run (of `targets`; none: the whole workflow) -> {rule: [first output of each job]}."""
    done = snakemake(workdir, "--dry-run", *targets)
    text = done.stdout + done.stderr
    jobs: dict[str, list[str]] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        head = re.match(r"(?:local)?rule (\w+):", block)
        if head:
            output = re.search(r"^\s+output: (\S+?),?$|^\s+output: (\S+?),", block, re.M)
            jobs.setdefault(head.group(1), []).append(output.group(1) or output.group(2) if output else "")
    jobs.pop("all", None)
    return jobs


def counts(jobs: dict[str, list[str]]) -> dict[str, int]:
    return {rule: len(outputs) for rule, outputs in jobs.items()}


def test_dry_run_builds_the_expected_dag(tmp_path):
    write_config(tmp_path)
    jobs = planned_jobs(tmp_path)
    # variants 'full' and 'lora' share embed parameters -> one embed job per pair
    assert counts(jobs) == {"embed": 2, "finetune": 4, "sample": 8, "score": 4, "pair_montage": 2, "pair_tradeoff": 2,
                            "overview_montage": 1, "sample_table": 1, "evaluate": 1, "experiment_plan": 1}


def planned_resources(workdir: Path) -> dict[str, list[dict[str, str]]]:
    """Verbose dry run -> {rule: [resources of each job]}."""
    done = snakemake(workdir, "--dry-run", "--verbose")
    return planned_resources_of(done.stdout + done.stderr)


@pytest.mark.slow  # ~6 s of dry runs; the fast tier is at its 3-minute budget (tests/README.md)
def test_gpu_jobs_request_the_estimated_memory_and_the_config_overrides_it(tmp_path, tiny):
    from imagic_steps.memory import job_memory_mb, model_size, stage_estimate
    from imagic_steps.variants import FinetuneParams

    write_config(tmp_path, model={"id": "tiny", "dtype": "fp32", "device": "cuda"})
    jobs = planned_resources(tmp_path)
    finetune_params = {mode: FinetuneParams(**{**TINY_STEPS["finetune"], "mode": mode}) for mode in ("full", "lora")}
    expected = {mode: job_memory_mb(stage_estimate("finetune", model_size("tiny"), "fp32", None, params), "cuda")
                for mode, params in finetune_params.items()}
    assert sorted(int(job["gpu_mem_mb"]) for job in jobs["finetune"]) == \
        sorted(2 * [expected["full"]["gpu_mem_mb"], expected["lora"]["gpu_mem_mb"]])
    assert all("gpu_mem_mb" in job and job["gpu"] == "1" for rule in ("embed", "sample") for job in jobs[rule])
    assert all("gpu_mem_mb" not in job for job in jobs["evaluate"])
    # every job that loads a model asks for one GPU, the others for none: Snakemake's own scheduler then keeps the sum
    # over running jobs within `--resources gpu=N`, so at most N model jobs run at once (and each claims a device of
    # its own: tests/test_gpu_claims.py)
    model_rules = {"embed", "finetune", "sample", "score"}
    assert {rule for rule, planned in jobs.items() if any("gpu" in job for job in planned)} == model_rules
    assert all(job["gpu"] == "1" for rule in model_rules for job in jobs[rule])

    write_config(tmp_path, model={"id": "tiny", "dtype": "fp32", "device": "cuda"},
                 resources={"finetune": {"gpu_mem_mb": 12345, "mem_mb": 999}})
    assert {(job["gpu_mem_mb"], job["mem_mb"]) for job in planned_resources(tmp_path)["finetune"]} == {("12345", "999")}


def test_memory_of_a_model_not_downloaded_yet_assumes_sd15_and_says_so(tmp_path):
    from imagic_steps.memory import SD15, job_memory_mb, stage_estimate
    from imagic_steps.variants import FinetuneParams

    write_config(tmp_path, model={"id": "someone/not-downloaded", "dtype": "fp16", "device": "cuda"})
    expected = job_memory_mb(stage_estimate("finetune", SD15, "fp16", None, FinetuneParams(**TINY_STEPS["finetune"])),
                             "cuda")
    jobs = planned_resources(tmp_path)
    full = [job for job in jobs["finetune"] if int(job["gpu_mem_mb"]) == expected["gpu_mem_mb"]]
    assert len(full) == 2 and all(int(job["mem_mb"]) == expected["mem_mb"] for job in full)
    assert "not on this machine yet" in snakemake(tmp_path, "--dry-run").stderr


def test_sweep_and_sdedit_add_only_their_new_jobs(tmp_path):
    write_config(tmp_path, sweeps={"steps": {"variant": "full", "field": "finetune.steps", "values": [0, 2]}},
                 sdedit={"strengths": [0.5, 1.0], "steps": 2})
    jobs = counts(planned_jobs(tmp_path))
    # steps=2 is the 'full' variant itself; steps=0 adds one fine-tune (a copy marker) and its samples
    assert (jobs["finetune"], jobs["sample"], jobs["sdedit"]) == (4 + 2, 8 + 4, 2 * 2)
    assert jobs["score"] == 4 + 2 + 2


@pytest.mark.slow  # ~8 s of dry runs; tests/test_plan.py keeps the baselines' planning in the fast tier
def test_ledits_and_ddim_inversion_plan_one_job_per_pair_and_rerun_only_on_their_own_parameters(tmp_path):
    baselines = {"ledits": {"edit_guidances": [0, 5], "inversion_steps": 2},
                 "ddim_inversion": {"target_guidances": [1, 3], "steps": 2}}
    write_config(tmp_path, seeds=[0, 1], **baselines)
    jobs = planned_jobs(tmp_path)
    assert (counts(jobs)["ledits"], counts(jobs)["ddim_inversion"]) == (2, 2)
    assert counts(jobs)["score"] == 4 + 2 + 2  # the Imagic sample sets, then one score job per baseline set
    # LEDITS++ draws noise: every seed; DDIM inversion is deterministic: the first seed only
    done = snakemake(tmp_path, "--dry-run", "--printshellcmds")
    text = done.stdout + done.stderr
    assert re.search(r"ledits/cat/\w+/seed1_edit_guidance5\.png", text)
    assert re.search(r"ddim_inversion/cat/\w+/seed0_target_guidance3\.png", text)
    assert not re.search(r"ddim_inversion/cat/\w+/seed1_", text)
    # a family without a LEDITS++ pipeline is refused while planning, in one line naming the block
    write_config(tmp_path, model={"id": "tiny-if", "dtype": "fp32", "device": "cpu"}, **baselines)
    done = snakemake(tmp_path, "--dry-run", check=False)
    assert done.returncode != 0
    assert "error: config (ledits): not supported for the if family of model 'tiny-if'" in done.stderr


@pytest.mark.slow  # ~10 s of planning: the fast tier keeps one-model planning (the tests above)
def test_several_models_run_every_variant_and_baseline_each_keyed_apart(tmp_path):
    """`models:` (label -> block) crosses the experiment with the models: every stage job once per model, no
    output shared; a baseline one model's family lacks is left out for that model with a note; the sample table
    names each sample's model; both blocks at once are refused in one line."""
    models = {"latent": {"id": "tiny", "dtype": "fp32", "device": "cpu"},
              "pixel": {"id": "tiny-if", "dtype": "fp32", "device": "cpu"}}
    baselines = {"ledits": {"edit_guidances": [5], "inversion_steps": 2},
                 "ddim_inversion": {"target_guidances": [1], "steps": 2}}
    path = write_config(tmp_path, **baselines)
    config = yaml.safe_load(path.read_text())
    del config["model"]
    path.write_text(yaml.safe_dump({**config, "models": models}))
    jobs = planned_jobs(tmp_path)
    assert {rule: n for rule, n in counts(jobs).items() if rule in ("embed", "finetune", "sample")} == {
        "embed": 2 * 2, "finetune": 4 * 2, "sample": 8 * 2}
    assert (counts(jobs)["ledits"], counts(jobs)["ddim_inversion"]) == (2, 2 * 2)  # LEDITS++: no IF pipeline
    assert len(set(jobs["embed"])) == 4 and len(set(jobs["sample"])) == 16
    done = snakemake(tmp_path, "--dry-run")
    assert "note: ledits is not run on model 'pixel' (if family: only sd, sdxl)" in done.stderr
    snakemake(tmp_path, "--until", "experiment_plan")
    plan = json.loads((tmp_path / "results/plan.json").read_text())
    assert {label: block["id"] for label, block in plan["models"].items()} == {"latent": "tiny", "pixel": "tiny-if"}
    assert plan["facets"] == ["model"] and {run["model"] for run in plan["runs"]} == {"latent", "pixel"}
    path.write_text(yaml.safe_dump({**config, "models": models, "model": models["latent"]}))
    done = snakemake(tmp_path, "--dry-run", check=False)
    assert done.returncode != 0 and done.stderr.strip().splitlines()[-1] == (
        "error: config (model/models): the config gives both; give `model` (one model) or `models` (several)")


def test_per_variant_sample_jobs_plan_one_job_per_sample_set(tmp_path):
    write_config(tmp_path, sample_jobs="per_variant", seeds=[0, 1])
    jobs = planned_jobs(tmp_path)
    assert counts(jobs)["sample"] == 4  # 2 pairs x 2 variants, each job every seed x alpha
    assert all(path.endswith("seed0_alpha0.png") for path in jobs["sample"])

    variants = yaml.safe_load((tmp_path / "config.yaml").read_text())["variants"]
    variants["lora"]["alphas"] = [0.5]
    write_config(tmp_path, sample_jobs="per_variant", variants=variants)
    done = snakemake(tmp_path, "--dry-run", check=False)
    assert done.returncode != 0 and "config (variants.lora.alphas): the variant sets its own alphas" in done.stdout + done.stderr


@pytest.mark.slow
def test_per_variant_and_per_alpha_sample_jobs_write_the_same_images(tmp_path):
    variants = {"full": {"preset": "original", **TINY_STEPS, "sample": {"steps": 2, "batch_size": 4}}}
    write_config(tmp_path, sample_jobs="per_variant", seeds=[0, 1], variants=variants)
    cat = [path for path in planned_jobs(tmp_path)["score"] if "/cat/" in path]  # the cat's score CSV
    snakemake(tmp_path, *cat)
    pngs = sorted((tmp_path / "results" / "samples" / "cat").glob("*/seed*_alpha*.png"))
    assert len(pngs) == 4 and len(list((tmp_path / "results" / "samples" / "cat").glob("*/all_alphas.json"))) == 1
    batched = {p: np.asarray(Image.open(p), dtype=np.int16) for p in pngs}

    write_config(tmp_path, sample_jobs="per_alpha", seeds=[0, 1], variants=variants)
    snakemake(tmp_path, "--forcerun", "sample", *cat)  # same sample key: the existing PNGs are rewritten per alpha
    assert len(list((tmp_path / "results" / "samples" / "cat").glob("*/alpha*.json"))) == 2
    for path, pixels in batched.items():
        assert np.abs(np.asarray(Image.open(path), dtype=np.int16) - pixels).max() <= 1, path


@pytest.mark.slow
def test_the_warm_worker_runs_each_job_and_writes_what_cold_jobs_write(tmp_path, monkeypatch):
    """Local runs hand every job to the warm worker (each job log says so); `warm_worker: false` starts every
    job cold; both write the same bytes (models, samples, scores, tables, figures), and no worker is left."""
    variants = {"full": {"preset": "original", **TINY_STEPS, "sample": {"steps": 2}}}
    # the runs' own temporary folder, where their worker keeps its socket: other tests' runs (pytest-xdist) keep
    # theirs elsewhere. Short, as a socket path has at most 107 bytes.
    private_tmp = Path(tempfile.mkdtemp(prefix="ww"))
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    outputs = {}
    for warm in (True, False):
        workdir = tmp_path / ("warm" if warm else "cold")
        workdir.mkdir()
        write_config(workdir, variants=variants, warm_worker=warm)
        snakemake(workdir)
        logs = sorted((workdir / "results/logs").rglob("*.log"))
        served = [log for log in logs if "run by the warm worker (pid " in log.read_text()]
        assert len(logs) >= 10 and served == (logs if warm else [])
        outputs[warm] = {str(path.relative_to(workdir)): path.read_bytes()
                         for path in sorted((workdir / "results").rglob("*")) if path.is_file()
                         and path.suffix in (".safetensors", ".png", ".csv", ".md")
                         and path.relative_to(workdir / "results").parts[0] not in ("logs", "benchmark")}
    assert len(outputs[True]) >= 20 and outputs[True].keys() == outputs[False].keys()
    assert [path for path in outputs[True] if outputs[True][path] != outputs[False][path]] == []
    assert list(private_tmp.glob("imagic_steps_worker_*")) == []  # stopped, removed
    shutil.rmtree(private_tmp)


def test_a_run_of_one_job_starts_no_warm_worker(tmp_path):
    """The worker pays from a run's second job on (common.smk's onstart): a plan-only run's lone job starts cold
    instead of waiting for the worker's imports. Runs of more jobs: the warm-worker test above."""
    write_config(tmp_path)
    snakemake(tmp_path, "--until", "experiment_plan")
    log = (tmp_path / "results/logs/plan.log").read_text()
    assert "device cpu" in log and "run by the warm worker" not in log


def test_schema_violation_fails_before_any_job_naming_the_field(tmp_path):
    write_config(tmp_path)
    sheet = (tmp_path / "pairs.tsv").read_text().replace("\ncat\t", "\n../cat\t")
    (tmp_path / "pairs.tsv").write_text(sheet)
    done = snakemake(tmp_path, "--dry-run", check=False)
    assert done.returncode != 0
    assert "pair_id" in done.stderr + done.stdout
    assert not (tmp_path / "results").exists()

    write_config(tmp_path, seeds=[])
    done = snakemake(tmp_path, "--dry-run", check=False)
    assert done.returncode != 0 and "seeds" in done.stderr + done.stdout


def test_image_name_with_shell_syntax_is_refused_before_any_job(tmp_path):
    # the SLURM executor puts input paths into a shell command line, where such a name would run `touch pwned`
    write_config(tmp_path)
    shutil.copy(REPO / "config/images/astronaut.png", tmp_path / "images" / HOSTILE_NAME)
    sheet = (tmp_path / "pairs.tsv").read_text().replace("images/astronaut.png", f"images/{HOSTILE_NAME}")
    (tmp_path / "pairs.tsv").write_text(sheet)
    done = snakemake(tmp_path, "--cores", "1", check=False)
    assert done.returncode != 0
    assert "pair 'astro'" in done.stdout + done.stderr and "rename the file" in done.stdout + done.stderr
    assert not (tmp_path / "results").exists() and not (tmp_path / "pwned").exists()


def test_unknown_variant_field_and_missing_image_are_named(tmp_path):
    write_config(tmp_path, variants={"v": {"preset": "original", "embed": {"stepz": 1}}})
    done = snakemake(tmp_path, "--dry-run", check=False)
    assert done.returncode != 0 and "variant 'v' (embed): unknown field(s) ['stepz']" in done.stderr + done.stdout

    write_config(tmp_path)
    (tmp_path / "images" / "cat.png").unlink()
    done = snakemake(tmp_path, "--dry-run", check=False)
    assert done.returncode != 0
    assert "pair 'cat'" in done.stderr + done.stdout and "cat.png" in done.stderr + done.stdout


@pytest.mark.slow
def test_end_to_end_interrupted_then_cached_reruns(tmp_path, tiny):
    # the model is a local folder (a copy of the tiny preset): its files' digest keys every stage
    model = tmp_path / "tiny_copy"
    shutil.copytree(preset_folder(TINY_PRESET), model)
    local_model = {"id": model.name, "dtype": "fp32", "device": "cpu"}
    # sweeps whose values share a training run: fine-tune steps 1 of `full`'s 2, embed steps 1 of `lora`'s 2
    sweeps = {"ft": {"variant": "full", "field": "finetune.steps", "values": [1, 2]},
              "em": {"variant": "lora", "field": "embed.steps", "values": [1, 2]}}
    write_config(tmp_path, model=local_model, sweeps=sweeps)
    results = tmp_path / "results"
    # interrupt the first run once samples exist; finished work must survive and not be redone
    command = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
               "--configfile", str(tmp_path / "config.yaml"), "--cores", "2"]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=shared_umask)
    deadline = time.time() + 600
    while not list(results.glob("samples/*/*/*.png")) and first.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    finished = {p: p.stat().st_mtime_ns for p in results.glob("embed/*/*/embed.safetensors")}
    first.send_signal(signal.SIGINT)
    first.wait(timeout=120)
    assert finished, "no embed output before the interruption"
    snakemake(tmp_path)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    # each sweep's shorter value was written by the longer run's training and moved into place (per pair: fine-tune
    # steps 1, embed steps 1); nothing is left in the trajectories' folders
    adopted = [log for log in results.glob("logs/*/*/*.log") if "moved into place" in log.read_text()]
    assert sorted(log.parts[-3] for log in adopted) == ["embed", "embed", "finetune", "finetune"]
    assert not list(results.glob("*/*/*/trajectory"))
    for log in adopted:
        record = json.loads((results / log.parts[-3] / log.parts[-2] / log.stem / "provenance.json").read_text())
        assert record["trajectory"]["stopped_at"] == record["params"]["steps"] == 1

    montage = Image.open(results / "montages/pairs/cat.png")
    # input + 2 alphas, 6 variants x 1 seed rows; samples enlarged by a whole factor to >= 96 px, label strips
    sample = Image.open(next(results.glob("samples/cat/*/seed0_alpha*.png")))
    cell = sample.width * -(-96 // sample.width)
    assert 3 * cell < montage.size[0] < 3 * cell + 300 and 6 * cell < montage.size[1] < 6 * cell + 150
    assert (results / "montages/overview.png").exists()
    table = (results / "tables/samples.csv").read_text().splitlines()
    assert len(table) == 1 + 6 * 2 * 2  # variants x pairs x alphas
    # 4 sample sets per pair (ft-2 is full, em-2 is lora) x 2 alphas
    assert len(list(results.glob("samples/*/*/seed0_alpha*.png"))) == 16
    # step 1 of 2 only, of the three 2-step fine-tunes per pair: the last step's grid is preview.png, not drawn twice
    assert len(list(results.glob("finetune/*/*/previews/step_*.png"))) == 6
    assert not list(results.glob("resume/**/*.safetensors"))
    scores = pd.read_csv(results / "tables/scores.csv")
    assert len(scores) == 24 and scores["scorer"].str.startswith("tiny-random").all()
    assert scores[["text_alignment", "distance", "image_similarity"]].notna().all().all()
    for figure in ("figures/tradeoff.png", "figures/tradeoff_pairs/cat.png", "montages/best_edits.png"):
        assert (results / figure).stat().st_size > 0
    assert "n_pairs" in (results / "tables/summary.md").read_text()
    assert not (tmp_path / "pwned").exists() and not (REPO / "pwned").exists()
    private = [str(p.relative_to(results)) for p in results.rglob("*") if p.is_file() and p.stat().st_mode & 0o777 != 0o644]
    assert not private, f"files not 0644 under umask 022: {private[:10]}"
    provenance = (next(results.glob("embed/cat/*/provenance.json"))).read_text()
    for field in ("code_version", "packages", "torch", "params", '"model": "tiny_copy"'):
        assert field in provenance
    plan = json.loads((results / "plan.json").read_text())
    assert set(plan["weights"]["models"]["tiny_copy"]) == {"sha256"}

    # a second run has nothing to do, also after every model file is touched (mtime only: same content)
    assert planned_jobs(tmp_path) == {}
    for path in model.rglob("*"):
        os.utime(path)
    assert planned_jobs(tmp_path) == {}

    # one changed tensor in the model's folder: everything made with the model is planned again
    unet_file = model / "unet/diffusion_pytorch_model.safetensors"
    tensors = load_file(unet_file)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, unet_file)
    assert counts(planned_jobs(tmp_path)) == {"embed": 4, "finetune": 8, "sample": 16, "score": 8, "pair_montage": 2,
                                              "pair_tradeoff": 2,
                                              "overview_montage": 1, "sample_table": 1, "evaluate": 1,
                                              "experiment_plan": 1}
    shutil.copytree(preset_folder(TINY_PRESET), model, dirs_exist_ok=True)  # back to the cached results
    assert planned_jobs(tmp_path) == {}

    # one more alpha: only its sample jobs and the aggregates
    write_config(tmp_path, alphas=[0.0, 1.0, 0.5], model=local_model, sweeps=sweeps)
    jobs = planned_jobs(tmp_path)
    assert counts(jobs) == {"sample": 8, "score": 8, "pair_montage": 2, "pair_tradeoff": 2, "overview_montage": 1,
                            "sample_table": 1,
                            "evaluate": 1, "experiment_plan": 1}
    assert all(path.endswith("_alpha0.5.png") for path in jobs["sample"])

    # a new fine-tune lr for one variant (and the embed sweep over it): its fine-tunes and samples rerun, no embed
    variants = yaml.safe_load((tmp_path / "config.yaml").read_text())["variants"]
    variants["lora"]["finetune"]["lr"] = 2e-3
    write_config(tmp_path, alphas=[0.0, 1.0], variants=variants, model=local_model, sweeps=sweeps)
    jobs = planned_jobs(tmp_path)
    assert counts(jobs) == {"finetune": 4, "sample": 8, "score": 4, "pair_montage": 2, "pair_tradeoff": 2,
                            "overview_montage": 1,
                            "sample_table": 1, "evaluate": 1, "experiment_plan": 1}


@pytest.mark.slow
def test_a_model_given_by_hub_id_runs_offline_from_the_hub_cache_keyed_by_its_snapshot(tmp_path, tiny, monkeypatch):
    """`model: {id: org/name}` with HF_HUB_OFFLINE=1 and the model in the hub cache as a download lays it (the tiny
    preset's files as blobs, a snapshot of symlinks, refs/main): the stages load it offline, plan.json, each job's
    provenance and every cache key name the snapshot commit, and a moved refs/main replans. A hub id that is not
    downloaded: planning says how to download it once, and the first job stops with one line saying the same."""
    hub = tmp_path / "hub"
    commit, moved = "c0ffee" + "0" * 34, "c0ffee" + "1" * 34
    for snapshot in (commit, moved):  # the same files at two commits; refs/main names the last laid
        hub_snapshot(hub, "org/tiny-sd", snapshot, preset_folder(TINY_PRESET))
    (hub / "models--org--tiny-sd/refs/main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    steps = {"embed": {"steps": 1}, "finetune": {"steps": 1}, "sample": {"steps": 1}}
    write_config(tmp_path, model={"id": "org/tiny-sd", "dtype": "fp32", "device": "cpu"}, alphas=[1.0],
                 variants={"full": {"preset": "original", **steps}})
    (tmp_path / "pairs.tsv").write_text("pair_id\timage\tprompt\ncat\timages/cat.png\ta photo of a gray cat\n")
    targets = [*planned_jobs(tmp_path)["score"], "results/plan.json"]
    done = snakemake(tmp_path, *targets)
    assert "not in the local hub cache" not in done.stderr  # resolved from the cache, offline
    results = tmp_path / "results"
    plan = json.loads((results / "plan.json").read_text())
    assert plan["weights"]["models"]["org/tiny-sd"] == {"hub_commit": commit}
    assert plan["models"]["org/tiny-sd"]["revision"] == commit  # the jobs load that very snapshot
    records = [json.loads(path.read_text()) for pattern in ("*/cat/*/provenance.json", "samples/cat/*/alpha*.json")
               for path in results.glob(pattern)]
    assert len(records) == 3  # embed, fine-tune, sample
    assert all(r["model"]["model"] == "org/tiny-sd" and r["model"]["revision"] == commit for r in records)
    assert planned_jobs(tmp_path, *targets) == {}
    (hub / "models--org--tiny-sd/refs/main").write_text(moved)  # `main` moved to another snapshot
    replanned = planned_jobs(tmp_path)  # every stage key names the commit: new keys, new paths
    assert {rule: len(replanned[rule]) for rule in ("embed", "finetune", "sample", "score")} == dict.fromkeys(
        ("embed", "finetune", "sample", "score"), 1) and replanned["score"] != targets[:1]
    (hub / "models--org--tiny-sd/refs/main").write_text(commit)
    assert planned_jobs(tmp_path, *targets) == {}

    write_config(tmp_path, model={"id": "org/not-downloaded", "dtype": "fp32", "device": "cpu"}, alphas=[1.0],
                 variants={"full": {"preset": "original", **steps}}, warm_worker=False)
    done = snakemake(tmp_path, "--until", "embed", check=False)
    assert done.returncode != 0
    assert ("model 'org/not-downloaded' is not in the local hub cache and HF_HUB_OFFLINE is set" in done.stderr
            and "download it once with `hf download org/not-downloaded`" in done.stderr)
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error: ")]
    assert errors and errors[0].startswith("error: model 'org/not-downloaded' is not available (HF_HUB_OFFLINE is set)")
    assert "download it once with `hf download org/not-downloaded --local-dir DIR`" in errors[0]
    assert not list(results.glob("embed/cat/*/embed.safetensors"))[1:]  # only the hub model's own embed


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny-sdxl", "tiny-if"])
def test_the_workflow_runs_each_model_family(tmp_path, preset):
    """The whole workflow, baselines included, on the SDXL and the pixel-space IF family: every stage writes its
    files and records the family, and every score is a number."""
    # every baseline the family has a pipeline for: LEDITS++ is SD / SDXL only
    baselines = {"sdedit": {"strengths": [0.5], "steps": 2}, "ddim_inversion": {"target_guidances": [3], "steps": 2}}
    if preset == "tiny-sdxl":
        baselines["ledits"] = {"edit_guidances": [5], "inversion_steps": 2}
    # one variant: the families differ in the model, not in what the variants do
    write_config(tmp_path, model={"id": preset, "dtype": "fp32", "device": "cpu"},
                 variants={"full": {"preset": "original", **TINY_STEPS}}, **baselines)
    snakemake(tmp_path)
    results = tmp_path / "results"
    assert len(list(results.glob("samples/*/*/seed0_alpha*.png"))) == 4
    baseline_images = {name: len(list(results.glob(f"{name}/*/*/*.png"))) for name in baselines}
    assert baseline_images == {name: 2 for name in baselines}  # two pairs, one setting, one seed
    scores = pd.read_csv(results / "tables/scores.csv")
    assert len(scores) == 4 + 2 * len(baselines) and scores[["text_alignment", "distance"]].notna().all().all()
    family = {"tiny-sdxl": "sdxl", "tiny-if": "if"}[preset]
    records = [json.loads(p.read_text()) for stage in ("embed", "finetune", "samples", *baselines)
               for p in results.glob(f"{stage}/*/*/*.json")]
    models = [r["model"] for r in records if isinstance(r, dict) and isinstance(r.get("model"), dict)]
    assert len(models) >= 2 + 2 + 2 + 2 * len(baselines)  # embeds, fine-tunes, sample jobs, baseline jobs
    assert all(m["family"] == family and m["model"] == preset for m in models)
    assert (results / "montages/pairs/cat.png").exists() and (results / "figures/tradeoff.png").exists()


def test_lint_has_only_the_documented_finding():
    done = subprocess.run([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(REPO), "--lint"],
                          capture_output=True, text=True, timeout=300)
    findings = set(re.findall(r"^\s+\* (.+?):?$", done.stdout + done.stderr, re.M))
    # deliberate: the project installs with pip (README), so rules name no conda env or container
    assert findings <= {"Specify a conda environment or container for each rule."}, findings
