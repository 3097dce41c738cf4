"""Hostile input, table-driven: each bad sheet, TEdBench list, config, image, model folder or CLI argument must stop
before any job with one line `error: <where> (<what>): ...; <fix>` naming the offending thing, exit code 1, no
traceback, and leave a finished results folder exactly as it was."""

import copy
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TINY_STEPS = {"embed": {"steps": 1}, "finetune": {"steps": 1}, "sample": {"steps": 1}}
GOOD_SHEET = "pair_id\timage\tprompt\nmine\timages/cat.png\ta photo of a gray cat\n"

# The tests that run Snakemake (one finished tiny run, then ~75 planning runs of ~2 s) and the CLI table are marked
# slow one by one; the in-process planning tables below them run in the fast tier (milliseconds).


def base_config() -> dict:
    return copy.deepcopy({"pairs": "pairs.tsv", "results": "results", "model": {"id": "tiny"}, "seeds": [0], "alphas": [0.0, 1.0],
            "variants": {"original": {"preset": "original", **TINY_STEPS}}, "scorer": {"tiny": True}})


def png_with_text_bomb() -> bytes:
    """A valid 64 px PNG with a zTXt chunk that inflates to 200 MB (past PIL's MAX_TEXT_CHUNK)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="PNG")
    data = buffer.getvalue()
    payload = b"Comment\x00\x00" + zlib.compress(b"A" * (200 * 2**20), 9)
    chunk = struct.pack(">I", len(payload)) + b"zTXt" + payload + struct.pack(">I", zlib.crc32(b"zTXt" + payload))
    return data[:33] + chunk + data[33:]


@dataclass
class Case:
    """One bad input: `files` written into the work folder (text or bytes), `config` applied to the base config,
    and the text the first error line must contain."""

    name: str
    expect: str
    files: dict[str, str | bytes] = field(default_factory=dict)
    config: Callable[[dict], None] = lambda config: None


def sheet(text: str | bytes) -> dict:
    return {"pairs.tsv": text}


def tedbench(images: str = "images") -> Callable[[dict], None]:
    def change(config: dict) -> None:
        config.pop("pairs")
        config["tedbench"] = {"json": "list.json", "images": images}
    return change


def setting(path: str, value) -> Callable[[dict], None]:
    """Set a dotted config path, e.g. setting("variants.original.embed.lr", nan)."""
    def change(config: dict) -> None:
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return change


def with_pairs(image: str) -> dict:
    return sheet(f"pair_id\timage\tprompt\nmine\t{image}\ta photo of a gray cat\n")


H = "pair_id\timage\tprompt"
TED = {"img_name": "cat.png", "target_text": "a cat in a hat"}
SHEET_CASES = [
    Case("latin1", "not UTF-8 text", sheet(f"{H}\nmine\timages/cat.png\tun caf\xe9\n".encode("latin-1"))),
    Case("empty_sheet", "sheet_empty_sheet.tsv (pairs sheet): the file is empty", sheet("")),
    Case("header_only", "has a header but no pairs", sheet(H + "\n")),
    Case("misspelled_column", "unknown column(s) 'overide'", sheet(f"{H}\toveride\nmine\timages/cat.png\tx\t{{}}\n")),
    Case("duplicated_column", "column(s) prompt appear twice", sheet(f"{H}\tprompt\nmine\timages/cat.png\tx\ty\n")),
    Case("missing_column", "missing column(s) prompt", sheet("pair_id\timage\nmine\timages/cat.png\n")),
    Case("extra_cell", "3 columns", sheet(f"{H}\nmine\timages/cat.png\tx\textra\n")),
    Case("missing_cell", "2 tab-separated cells", sheet(f"{H}\nmine\timages/cat.png\n")),
    Case("case_duplicate_ids", "repeats pair_id 'Cat'", sheet(f"{H}\nCat\timages/cat.png\tx\ncat\timages/cat.png\ty\n")),
    Case("duplicate_ids", "repeats pair_id 'mine'", sheet(f"{H}\nmine\timages/cat.png\tx\nmine\timages/cat.png\ty\n")),
    Case("nul_in_prompt", "(pair 'mine', prompt)", sheet(f"{H}\nmine\timages/cat.png\ta\x00cat\n")),
    Case("escape_in_prompt", "control characters", sheet(f"{H}\nmine\timages/cat.png\ta\x1b[31mcat\n")),
    Case("empty_prompt", "(pair 'mine', prompt): the value is empty", sheet(f"{H}\nmine\timages/cat.png\t  \n")),
    Case("unsafe_id", "(pair_id '../up')", sheet(f"{H}\n../up\timages/cat.png\tx\n")),
    Case("empty_id", "(pair_id '')", sheet(f"{H}\n\timages/cat.png\tx\n")),
    Case("overrides_list", "is not a JSON object", sheet(f"{H}\toverrides\nmine\timages/cat.png\tx\t[1, 2]\n")),
    Case("overrides_bad_json", "overrides): not valid JSON", sheet(f"{H}\toverrides\nmine\timages/cat.png\tx\t{{bad\n")),
    Case("overrides_string_alpha", "(alphas)", sheet(f'{H}\toverrides\nmine\timages/cat.png\tx\t{{"alphas": ["a"]}}\n')),
    Case("overrides_unknown_field", "unknown field(s) ['stepz']",
         sheet(f'{H}\toverrides\nmine\timages/cat.png\tx\t{{"embed": {{"stepz": 1}}}}\n')),
    Case("overrides_nan_lr", "(embed.lr): nan is invalid",
         sheet(f'{H}\toverrides\nmine\timages/cat.png\tx\t{{"embed": {{"lr": NaN}}}}\n')),
    Case("missing_image", "images/none.png (pair 'mine')", with_pairs("images/none.png")),
    Case("image_path_with_space", "contains ' '", with_pairs("images/a cat.png")),
    Case("sheet_missing", "nope.tsv (pairs sheet): the file does not exist", config=setting("pairs", "nope.tsv")),
    Case("sheet_is_folder", "images (pairs sheet): the file is a folder", config=setting("pairs", "images")),
]
IMAGE_CASES = [
    Case("svg_named_png", "is not a recognised image format", {"images/fake.png": "<svg></svg>", **with_pairs("images/fake.png")}),
    Case("empty_image", "is empty (0 bytes)", {"images/empty.png": b"", **with_pairs("images/empty.png")}),
    Case("truncated_image", "is truncated or corrupt", with_pairs("images/truncated.png")),
    Case("tiny_image", "smaller than the minimum side", with_pairs("images/small.png")),
    Case("folder_as_image", "images/sub (pair 'mine')", with_pairs("images/sub")),
    Case("text_chunk_bomb", "has a chunk too large to decode safely",
         {"images/bomb.png": png_with_text_bomb(), **with_pairs("images/bomb.png")}),
    Case("passwd_as_image", "/etc/passwd (pair 'mine')", with_pairs("/etc/passwd")),
]
TEDBENCH_CASES = [
    Case("tedbench_bad_json", "list.json:1 (TEdBench list): not valid JSON", {"list.json": "[{"}, tedbench()),
    Case("tedbench_not_list", "holds no entries list", {"list.json": '{"a": 1}'}, tedbench()),
    Case("tedbench_empty_list", "holds no entries list", {"list.json": "[]"}, tedbench()),
    Case("tedbench_missing_key", "entry 0 (entry): needs 'img_name' and 'target_text'",
         {"list.json": json.dumps([{"img_name": "cat.png"}])}, tedbench()),
    Case("tedbench_empty_text", "(target_text): the value is empty",
         {"list.json": json.dumps([{**TED, "target_text": " "}])}, tedbench()),
    Case("tedbench_numeric_text", "(target_text): 7 is not text",
         {"list.json": json.dumps([{**TED, "target_text": 7}])}, tedbench()),
    Case("tedbench_absolute_name", "(img_name '/etc/passwd'): must be a path inside",
         {"list.json": json.dumps([{**TED, "img_name": "/etc/passwd"}])}, tedbench()),
    Case("tedbench_parent_name", "(img_name '../pairs.tsv'): must be a path inside",
         {"list.json": json.dumps([{**TED, "img_name": "../pairs.tsv"}])}, tedbench()),
    Case("tedbench_duplicates", "entry 1 (img_name 'cat.png'): repeats entry 0",
         {"list.json": json.dumps([TED, TED])}, tedbench()),
    Case("tedbench_images_missing", "nowhere (tedbench.images): not a folder",
         {"list.json": json.dumps([TED])}, tedbench(images="nowhere")),
    Case("tedbench_image_missing", "does not exist",
         {"list.json": json.dumps([{**TED, "img_name": "gone.png"}])}, tedbench()),
    Case("pairs_and_tedbench", "gives both 'pairs' and 'tedbench'",
         config=setting("tedbench", {"json": "list.json", "images": "images"})),
]
NAN, INF = float("nan"), float("inf")
CONFIG_CASES = [
    Case("alpha_nan", "config (alphas[1]): nan is not a finite number", config=setting("alphas", [0.0, NAN])),
    Case("alpha_inf", "config (alphas[0]): inf is not a finite number", config=setting("alphas", [INF])),
    Case("alpha_huge", "config (alphas[0]): 1e+16 is not a value <= 3", config=setting("alphas", [1e16])),
    Case("alphas_empty", "config (alphas): [] is not a list of at least 1", config=setting("alphas", [])),
    Case("alphas_string", "config (alphas[0]): 'a' is not a value of type number", config=setting("alphas", ["a"])),
    Case("seed_huge", "config (seeds[0])", config=setting("seeds", [2**70])),
    Case("seed_negative", "config (seeds[0]): -1 is not a value >= 0", config=setting("seeds", [-1])),
    Case("seed_float", "config (seeds[0]): 0.5 is not a value of type integer", config=setting("seeds", [0.5])),
    Case("results_root", "config (results): '/' is not a string matching", config=setting("results", "/")),
    Case("results_empty", "config (results): '' is not a non-empty string", config=setting("results", "")),
    Case("results_is_file", "config (results): pairs.tsv is a file", config=setting("results", "pairs.tsv")),
    Case("guidance_inf", "config (variants.original.sample.guidance_scale): inf is not a finite number",
         config=setting("variants.original.sample.guidance_scale", INF)),
    Case("lr_nan", "config (variants.original.finetune.lr): nan is not a finite number",
         config=setting("variants.original.finetune.lr", NAN)),
    Case("lora_alpha_nan", "(variants.original.finetune.lora_alpha): nan",
         config=setting("variants.original.finetune.lora_alpha", NAN)),
    Case("steps_huge", "variant 'original' (embed.steps): 1000000000000 is invalid; use at most",
         config=setting("variants.original.embed.steps", 10**12)),
    Case("steps_negative", "variant 'original' (finetune.steps): -1 is invalid",
         config=setting("variants.original.finetune.steps", -1)),
    Case("variant_seed_huge", "variant 'original' (embed.seed)", config=setting("variants.original.embed.seed", 2**70)),
    Case("misspelled_top_key", "config (top level): unknown key(s) sweep", config=setting("sweep", {})),
    Case("dtype_fp64", "config (model.dtype): 'fp64' is not one of fp32, fp16, bf16", config=setting("model.dtype", "fp64")),
    Case("fp16_on_cpu", "config (model.dtype): fp16 weights on the CPU are ~40x slower", config=setting("model.dtype", "fp16")),
    Case("device_tpu", "config (model.device): 'tpu' is not one of", config=setting("model.device", "tpu")),
    Case("model_id_empty", "config (model.id): '' is not a non-empty string", config=setting("model.id", "")),
    Case("unknown_preset", "variant 'original' (preset): unknown preset 'nope'",
         config=setting("variants.original.preset", "nope")),
    Case("unknown_section", "config (variants.original): unknown key(s) sampler",
         config=setting("variants.original.sampler", {})),
    Case("no_variants", "config (variants): {} is not a mapping of at least 1", config=setting("variants", {})),
    Case("scheduler_unknown", "variant 'original' (sample.scheduler): 'Foo' is invalid",
         config=setting("variants.original.sample.scheduler", "Foo")),
    Case("sdedit_strength_zero", "config (sdedit.strengths[0]): 0 is not a value > 0",
         config=setting("sdedit", {"strengths": [0]})),
    Case("sdedit_strength_big", "config (sdedit.strengths[0]): 1.5 is not a value <= 1",
         config=setting("sdedit", {"strengths": [1.5]})),
    Case("sdedit_scheduler_unknown", "config (sdedit.scheduler): 'FooScheduler' is invalid; choose one of",
         config=setting("sdedit", {"strengths": [0.5], "scheduler": "FooScheduler"})),  # the rest: BASELINE_CASES
    Case("sweep_unknown_variant", "config (sweeps.s.variant): 'ghost' is not a variant",
         config=setting("sweeps", {"s": {"variant": "ghost", "field": "finetune.steps", "values": [1]}})),
    Case("scorer_kind", "config (scorer.kind): 'foo' is not one of clip, digits", config=setting("scorer.kind", "foo")),
    Case("resolution_odd", "config (resolution): 30 is not a multiple of 8", config=setting("resolution", 30)),
]
MODEL_CASES = [
    Case("model_folder_without_index", "model folder 'emptymodel' (model_index.json)", {"emptymodel/x.txt": "x"},
         setting("model.id", "emptymodel")),
    Case("model_folder_without_unet_config", "model folder 'nounet' (unet/config.json)", config=setting("model.id", "nounet")),
    Case("model_folder_corrupt_weights", "model folder 'corrupt' (unet/diffusion_pytorch_model.safetensors)",
         config=setting("model.id", "corrupt")),
    Case("model_folder_pickle_weights", "model folder 'pickled' (text_encoder)", config=setting("model.id", "pickled")),
]
CASES = SHEET_CASES + IMAGE_CASES + TEDBENCH_CASES + CONFIG_CASES + MODEL_CASES


def checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def snakemake(workdir: Path, configfile: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
               "--configfile", str(configfile), "--cores", "2"]
    return subprocess.run(command, capture_output=True, text=True, timeout=900)


def copy_model(source: Path, target: Path) -> None:
    """A copy of a diffusers folder as links (cheap), so a case can break one file of it."""
    for path in source.rglob("*"):
        if path.is_file():
            (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, target / path.relative_to(source))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A work folder with a finished tiny run in results/, and the broken model folders the model cases use."""
    from imagic_steps.model_loading import resolve_model_path

    workdir = tmp_path_factory.mktemp("bad_inputs")
    (workdir / "images" / "sub").mkdir(parents=True)
    Image.open(REPO / "config/images/chelsea.png").save(workdir / "images/cat.png")
    Image.new("RGB", (8, 8)).save(workdir / "images/small.png")
    (workdir / "images/truncated.png").write_bytes((workdir / "images/cat.png").read_bytes()[:2000])
    (workdir / "pairs.tsv").write_text(GOOD_SHEET)
    (workdir / "good.yaml").write_text(yaml.safe_dump(base_config()))
    done = snakemake(workdir, workdir / "good.yaml")
    assert done.returncode == 0, done.stderr[-3000:]

    tiny = Path(resolve_model_path("tiny"))
    copy_model(tiny, workdir / "nounet")
    (workdir / "nounet/unet/config.json").unlink()
    copy_model(tiny, workdir / "corrupt")
    (workdir / "corrupt/unet/diffusion_pytorch_model.safetensors").unlink()
    (workdir / "corrupt/unet/diffusion_pytorch_model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
    copy_model(tiny, workdir / "pickled")
    (workdir / "pickled/text_encoder/model.safetensors").unlink()
    (workdir / "pickled/text_encoder/pytorch_model.bin").write_bytes(b"not a real pickle")
    return workdir, checksums(workdir / "results")


@pytest.mark.slow
def test_there_are_at_least_sixty_cases():
    assert len(CASES) + len(CLI_CASES) >= 60
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_workflow_input_stops_before_any_job_with_one_line(finished, case):
    workdir, before = finished
    sheet_text = GOOD_SHEET
    for name, content in case.files.items():
        if name == "pairs.tsv":
            sheet_text = content
            continue
        path = workdir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    config = base_config()
    config["pairs"] = f"sheet_{case.name}.tsv"
    path = workdir / config["pairs"]
    path.write_bytes(sheet_text if isinstance(sheet_text, bytes) else sheet_text.encode())
    case.config(config)
    configfile = workdir / f"{case.name}.yaml"
    configfile.write_text(yaml.dump(config))  # yaml.dump writes .nan / .inf as YAML does

    done = snakemake(workdir, configfile)
    output = done.stdout + done.stderr
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert done.returncode == 1, output[-2000:]
    assert errors and case.expect in errors[0], output[-2000:]
    assert "Traceback" not in output and "Exception" not in output
    assert checksums(workdir / "results") == before


@dataclass
class CliCase:
    name: str
    args: list[str]
    expect: str


CLI_CASES = [
    CliCase("cli_alpha_nan", ["--alphas", "nan"], "variant 'original' (alphas): nan is invalid"),
    CliCase("cli_alpha_huge", ["--alphas", "0", "50"], "variant 'original' (alphas): 50.0 is invalid"),
    CliCase("cli_empty_prompt", ["--prompt", " "], "command line (--prompt): the value is empty"),
    CliCase("cli_nul_prompt", ["--prompt", "a\x1bcat"], "command line (--prompt)"),
    CliCase("cli_seed_huge", ["--seeds", str(2**70)], "command line (--seeds)"),
    CliCase("cli_seed_text", ["--seeds", "x"], "command line (imagic-steps edit): argument --seeds"),
    CliCase("cli_device_tpu", ["--device", "tpu"], "command line (--device): 'tpu' is not a device"),
    CliCase("cli_fp16_on_cpu", ["--dtype", "fp16"], "command line (--dtype): fp16 weights on the CPU"),
    CliCase("cli_model_folder_missing", ["--model", "/no/such/model"], "command line (--model): folder /no/such/model"),
    CliCase("cli_model_folder_without_index", ["--model", "{empty}"], "(model_index.json): not found"),
    CliCase("cli_out_is_file", ["--out", "{file}"], "command line (--out)"),
    CliCase("cli_bad_set", ["--set", "embed.steps=abc"], "variant 'original' (embed.steps): 'abc' is not a int"),
    CliCase("cli_set_without_value", ["--set", "embed.steps"], "--set expects section.field=value"),
    CliCase("cli_unknown_variant", ["--variant", "nope"], "argument --variant: invalid choice"),
    CliCase("cli_missing_image", ["--image", "{missing}"], "does not exist"),
    CliCase("cli_lr_inf", ["--set", "finetune.lr=.inf"], "variant 'original' (finetune.lr): inf is invalid"),
    CliCase("cli_steps_huge", ["--set", "embed.steps=1000000000000"], "(embed.steps): 1000000000000 is invalid"),
]


# These go through a real `python -m imagic_steps` process (exit code, stderr, nothing imported before the check);
# the rest call the same entry point in this process (one torch import, not one per case: ~6 s each).
CLI_SUBPROCESS_CASES = {"cli_seed_text", "cli_bad_set", "cli_model_folder_without_index"}


def run_cli(args: list[str], in_process: bool, capsys) -> tuple[int, str]:
    """(exit code, stderr) of `imagic-steps edit ARGS`."""
    if not in_process:
        done = subprocess.run([sys.executable, "-m", "imagic_steps", "edit", *args], capture_output=True, text=True,
                              timeout=120)
        return done.returncode, done.stderr
    from imagic_steps.cli import main

    capsys.readouterr()
    try:
        code = main(["edit", *args])
    except SystemExit as exit:  # argparse's errors
        code = exit.code
    return code, capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("case", CLI_CASES, ids=lambda case: case.name)
def test_bad_cli_arguments_are_one_line_before_loading_the_model(tmp_path, case, capsys):
    (tmp_path / "file").write_text("x")
    defaults = {"--image": str(REPO / "config/images/chelsea.png"), "--prompt": "a cat", "--out": str(tmp_path / "out"),
                "--model": "no-such-model-folder"}  # the model is never reached: loading it would fail differently
    (tmp_path / "empty").mkdir()
    args = [a.format(file=tmp_path / "file", missing=tmp_path / "missing.png", empty=tmp_path / "empty")
            for a in case.args]
    given = {a for a in args if a.startswith("--")}
    for option, value in defaults.items():
        if option not in given:
            args += [option, value]
    code, stderr = run_cli(args, case.name not in CLI_SUBPROCESS_CASES, capsys)
    lines = stderr.strip().splitlines()
    assert code == 1, stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and case.expect in lines[0], stderr[-2000:]
    assert not (tmp_path / "out").exists()


# Every baseline parameter, checked at planning in process: the schema first (types, ranges), then the parameter
# classes (imagic_steps.variants: schedulers, step limits, one field against another), which plan_baselines builds
# inside common.smk's `except (PlanError, VariantError)` (the Snakemake path: sdedit_scheduler_unknown above).
# (block, its fields besides the grid, the text the one line must contain, whether the class refuses it by itself)
BASELINE_CASES = {
    "sdedit_scheduler_unknown": ("sdedit", {"scheduler": "FooScheduler"},
                                 "config (sdedit.scheduler): 'FooScheduler' is invalid; choose one of ['DDIMScheduler'",
                                 True),
    "sdedit_scheduler_number": ("sdedit", {"scheduler": 3},
                                "config (sdedit.scheduler): 3 is not a value of type string", False),
    "sdedit_steps_zero": ("sdedit", {"steps": 0}, "config (sdedit.steps): 0 is not a value >= 1", True),
    "sdedit_steps_huge": ("sdedit", {"steps": 10**12}, "config (sdedit.steps): 1000000000000 is invalid; use at most",
                          True),
    "sdedit_guidance_negative": ("sdedit", {"guidance_scale": -1.0},
                                 "config (sdedit.guidance_scale): -1.0 is not a value >= 0", True),
    "sdedit_guidance_nan": ("sdedit", {"guidance_scale": NAN},
                            "config (sdedit.guidance_scale): nan is not a finite number", True),
    "sdedit_unknown_key": ("sdedit", {"eta": 0.5}, "config (sdedit): unknown key(s) eta", False),
    "ledits_steps_zero": ("ledits", {"inversion_steps": 0}, "config (ledits.inversion_steps): 0 is not a value >= 1",
                          True),
    "ledits_steps_huge": ("ledits", {"inversion_steps": 10**12}, "(ledits.inversion_steps): 1000000000000 is invalid",
                          True),
    "ledits_skip_one": ("ledits", {"skip": 1.0}, "config (ledits.skip): 1.0 is not a value < 1", True),
    "ledits_source_guidance_inf": ("ledits", {"source_guidance_scale": INF},
                                   "(ledits.source_guidance_scale): inf is not a finite", True),
    "ledits_threshold_big": ("ledits", {"edit_threshold": 1.5},
                             "config (ledits.edit_threshold): 1.5 is not a value <= 1", True),
    "ledits_warmup_negative": ("ledits", {"edit_warmup_steps": -1},
                               "config (ledits.edit_warmup_steps): -1 is not a value >= 0", True),
    "ledits_warmup_past_inversion": ("ledits", {"inversion_steps": 10, "edit_warmup_steps": 10},
                                     "config (ledits.edit_warmup_steps): 10 is invalid; use 0 or a number below "
                                     "inversion_steps (10)", True),
    "ledits_scheduler": ("ledits", {"scheduler": "DDIMScheduler"}, "config (ledits): unknown key(s) scheduler", False),
    "ddim_steps_zero": ("ddim_inversion", {"steps": 0}, "config (ddim_inversion.steps): 0 is not a value >= 1", True),
    "ddim_steps_huge": ("ddim_inversion", {"steps": 10**12}, "(ddim_inversion.steps): 1000000000000 is invalid", True),
    "ddim_scheduler": ("ddim_inversion", {"scheduler": "DDIMScheduler"},
                       "config (ddim_inversion): unknown key(s) scheduler", False),
}


def planning_error(config: dict) -> str | None:
    """The first line planning gives for the baselines of `config`, as common.smk makes it: the schema's one line,
    else plan_baselines' PlanError / VariantError; None when the baselines plan."""
    from imagic_steps.configuration import coerce_to_schema, config_error, load_schema
    from imagic_steps.plan import PlanError, plan_baselines
    from imagic_steps.variants import VariantError

    schema = load_schema(REPO / "workflow/schemas/config.schema.yaml")
    config = coerce_to_schema(config, schema)
    if (problem := config_error(config, schema)) is not None:
        return problem
    try:
        plan_baselines(config["model"], [], config, config["seeds"])
    except (PlanError, VariantError) as error:
        return f"error: {error}"
    return None


@pytest.mark.parametrize("name", BASELINE_CASES)
def test_every_bad_baseline_parameter_stops_planning_with_one_line(name):
    from imagic_steps.plan import BASELINES
    from imagic_steps.variants import VariantError

    block, fields, expect, by_class = BASELINE_CASES[name]
    method = BASELINES[block]
    config = base_config()
    config[block] = {method.grid_key: [0.5], **fields}
    problem = planning_error(config)
    assert problem is not None and "\n" not in problem and expect in problem, problem
    assert problem.startswith("error: config (") and "; " in problem  # where (key): what; fix
    if by_class:  # the class refuses it without the schema too (a job, the CLI, a config that skips the schema)
        with pytest.raises(VariantError, match=f"^config \\({block}\\."):
            method.params(**fields)


def test_good_baseline_blocks_plan_and_their_defaults_are_valid():
    config = base_config()
    config.update(sdedit={"strengths": [0.5, 1]}, ledits={"edit_guidances": [0, 5], "edit_warmup_steps": 29},
                  ddim_inversion={"target_guidances": [1, 3], "steps": 1})
    assert planning_error(config) is None


def test_an_sdedit_strength_that_denoises_no_step_is_refused_against_the_steps():
    """diffusers' img2img denoises int(steps * strength) steps; 0 fails inside the job (a reshape of 0 elements)."""
    from imagic_steps.variants import SdeditParams, VariantError

    SdeditParams(steps=4).check_grid([0.25, 1.0])
    with pytest.raises(VariantError, match=r"^config \(sdedit.strengths\): 0.2 is invalid; with steps 4 it denoises "
                                           r"int\(4 \* 0.2\) = 0 steps; use strengths of at least 1/steps \(0.25\)"):
        SdeditParams(steps=4).check_grid([0.2, 1.0])


def test_planning_refuses_an_sdedit_strength_that_denoises_no_step():
    config = base_config()
    config["sdedit"] = {"strengths": [0.2, 1.0], "steps": 4}
    assert "config (sdedit.strengths): 0.2 is invalid; with steps 4" in (planning_error(config) or "")


def multi_frame(format: str, frames: int = 3) -> bytes:
    buffer = io.BytesIO()
    images = [Image.new("RGB", (64, 64), colour) for colour in ("red", "green", "blue", "white")[:frames]]
    images[0].save(buffer, format=format, save_all=True, append_images=images[1:])
    return buffer.getvalue()


# A file of several pictures is refused at planning (open_rgb, which load_pairs calls on every pair's image, and
# which the CLI calls before loading the model): which frame to edit is the user's choice. (file, bytes, the text)
MULTI_FRAME_CASES = {
    "animated_gif": ("anim.gif", lambda: multi_frame("GIF"), "is an animated GIF of 3 frames"),
    "apng": ("anim.png", lambda: multi_frame("PNG", 2), "is an animated PNG of 2 frames"),
    "animated_webp": ("anim.webp", lambda: multi_frame("WEBP", 4), "is an animated WEBP of 4 frames"),
    "multi_page_tiff": ("pages.tif", lambda: multi_frame("TIFF"), "is a multi-page TIFF of 3 frames"),
}


@pytest.mark.parametrize("name", MULTI_FRAME_CASES)
def test_a_multi_frame_image_is_refused_with_one_line(tmp_path, name):
    from imagic_steps.images import ImageError, open_rgb

    filename, content, expect = MULTI_FRAME_CASES[name]
    (tmp_path / filename).write_bytes(content())
    with pytest.raises(ImageError) as refused:
        open_rgb(tmp_path / filename)
    message = str(refused.value)
    assert "\n" not in message and f"image '{tmp_path / filename}' {expect}" in message
    assert message.endswith("; save the frame you want as a PNG and give that file")


def test_single_frame_files_and_a_phone_photo_with_a_gain_map_are_accepted(tmp_path):
    """One-frame GIF / PNG / TIFF, and MPO: a JPEG with the previews, depth map or HDR gain map phones store beside
    the photo (PIL counts them as frames; the first is the photo)."""
    from imagic_steps.images import open_rgb

    for name, format in (("one.gif", "GIF"), ("one.png", "PNG"), ("one.tif", "TIFF")):
        Image.new("RGB", (64, 64), "red").save(tmp_path / name, format=format)
        assert open_rgb(tmp_path / name).size == (64, 64)
    (tmp_path / "photo.mpo").write_bytes(multi_frame("MPO", 2))
    assert Image.open(tmp_path / "photo.mpo").n_frames == 2
    assert open_rgb(tmp_path / "photo.mpo").getpixel((0, 0))[0] > 200  # the first frame: red
