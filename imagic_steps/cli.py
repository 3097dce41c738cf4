"""Command line: `python -m imagic_steps edit ...` runs stages A, B and C on one image in one process (and, with
`--upscale`, DeepFloyd IF's super-resolution stage on the samples)."""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

import yaml

from .configuration import ModelSpec, dtype_device_problem
from .drawing import save_grid
from .embed import run_embed
from .errors import USER_ERRORS, PlanError
from .families import DeepFloydIFFamily
from .finetune import run_finetune
from .images import load_image, open_rgb
from .io import write_json
from .locations import MODEL_PRESETS
from .memory import known_family_name
from .model_folder import model_folder_problem
from .plan import check_text
from .sample import run_sample
from .upscale import UpscaleParams, check_super_resolution, load_super_resolution, run_upscale
from .variants import MAX_SEED, PRESETS, resolve_variant

DEFAULT_MODEL = ModelSpec()

DEVICE_PATTERN = re.compile(r"cpu|auto|mps|cuda(:\d+)?")


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's one-line error format and exit code 1 for bad input."""

    def error(self, message: str):
        print(f"error: command line ({self.prog}): {message}; see `{self.prog} --help`", file=sys.stderr)
        raise SystemExit(1)


def parse_override(text: str) -> tuple[list[str], object]:
    """`section.field=value` (value parsed as YAML) -> (["section", "field"], value)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--set expects section.field=value, got {text!r}")
    return key.split("."), yaml.safe_load(value)


def variant_spec(preset: str, overrides: list[tuple[list[str], object]]) -> dict:
    spec: dict = {"preset": preset}
    for keys, value in overrides:
        node = spec
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return spec


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="imagic-steps", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    edit = commands.add_parser("edit", help="edit one image with one prompt (stages A, B, C)")
    edit.add_argument("--image", required=True, type=Path)
    edit.add_argument("--prompt", required=True, help="the target text")
    edit.add_argument("--variant", default="original", choices=sorted(PRESETS))
    edit.add_argument("--set", dest="overrides", action="append", type=parse_override, default=[],
                      metavar="SECTION.FIELD=VALUE", help="override a variant field, e.g. embed.steps=20 (repeatable)")
    edit.add_argument("--alphas", type=float, nargs="+", help="default: the variant's alphas")
    edit.add_argument("--seeds", type=int, nargs="+", default=[0])
    edit.add_argument("--model", default=DEFAULT_MODEL.id, help="'tiny', a local diffusers folder or a hub id")
    edit.add_argument("--revision", default=DEFAULT_MODEL.revision)
    edit.add_argument("--device", default=DEFAULT_MODEL.device)
    edit.add_argument("--dtype", default=DEFAULT_MODEL.dtype, choices=["fp32", "fp16", "bf16"])
    edit.add_argument("--channels-last", action="store_true", help="UNet weights in channels-last memory format")
    edit.add_argument("--compile", action="store_true", help="run the UNet through torch.compile")
    edit.add_argument("--out", required=True, type=Path)
    edit.add_argument("--upscale", metavar="MODEL",
                      help="then upscale each sample with DeepFloyd IF's super-resolution stage II, unchanged, into "
                           "OUT/upscaled/ (an IF --model only): a hub id (DeepFloyd/IF-II-M-v1.0), a local folder "
                           "or 'tiny-if-sr'")
    edit.add_argument("--upscale-steps", type=int, default=UpscaleParams.steps, metavar="N")
    edit.add_argument("--upscale-guidance", type=float, default=UpscaleParams.guidance_scale, metavar="SCALE")
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """What argparse's types cannot say, checked before the model loads; PlanError names the option."""
    check_text("command line", "--prompt", args.prompt, "give the target text")
    for seed in args.seeds:
        if not 0 <= seed <= MAX_SEED:
            raise PlanError(f"command line (--seeds): {seed} is out of range; use seeds in 0..{MAX_SEED}")
    if not DEVICE_PATTERN.fullmatch(args.device):
        raise PlanError(f"command line (--device): {args.device!r} is not a device; use cpu, cuda, cuda:N, mps or auto")
    if (problem := dtype_device_problem(args.dtype, args.device, "command line (--dtype)")) is not None:
        raise PlanError(problem)
    if Path(args.model).is_dir() and (problem := model_folder_problem(args.model)) is not None:
        raise PlanError(problem)
    for option, model in (("--model", args.model), ("--upscale", args.upscale)):
        if model and model.startswith((".", "/", "~")) and not Path(model).expanduser().exists():
            raise PlanError(f"command line ({option}): folder {model} does not exist; give a diffusers folder, "
                            f"a hub id or a preset ({', '.join(MODEL_PRESETS)})")
    if args.upscale:
        if args.upscale_steps < 1:
            raise PlanError(f"command line (--upscale-steps): {args.upscale_steps}; give at least 1")
        if (problem := upscale_problem(args.model, known_family_name(args.model, args.revision))) is not None:
            raise PlanError(problem)
        check_super_resolution(args.upscale)  # one line if it is no stage II or cannot be had (offline)
    if args.out.exists() and not args.out.is_dir():
        raise PlanError(f"command line (--out): {args.out} is a file; give a folder (it is created if missing)")


def upscale_problem(model: str, family: str | None) -> str | None:
    """Why `--upscale` cannot follow an edit of `model` (of `family`, None: not known yet), or None: IF's stage II
    upscales stage I's 64 px images only."""
    if family is None or family == DeepFloydIFFamily.name:
        return None
    return (f"command line (--upscale): DeepFloyd IF's super-resolution stage upscales IF stage I edits only, and "
            f"--model '{model}' is of the {family} family; edit with an IF model (e.g. DeepFloyd/IF-I-M-v1.0, tiny-if) "
            "or leave --upscale out")


def upscale_samples(args: argparse.Namespace, samples: dict[tuple[int, float], str], device: str) -> None:
    """`--upscale`: each sample ((seed, alpha) -> PNG) through IF's stage II with the edit's prompt and its seed, into
    OUT/upscaled/ under the sample's file name, and the record OUT/upscale.json."""
    model = load_super_resolution(args.upscale, device=device, dtype=args.dtype)
    params = UpscaleParams(steps=args.upscale_steps, guidance_scale=args.upscale_guidance)
    run_upscale(model, args.prompt, params, record=args.out / "upscale.json",
                samples=[(seed, path, args.out / "upscaled" / Path(path).name) for (seed, _), path in samples.items()])
    print(f"wrote {len(samples)} upscaled samples ({model.resolution} px) to {args.out / 'upscaled'}")


def edit(args: argparse.Namespace) -> None:
    check_arguments(args)
    spec = variant_spec(args.variant, args.overrides)
    if args.alphas:
        spec["alphas"] = args.alphas  # checked with the variant: finite, within the allowed range
    variant = resolve_variant(args.variant, spec)
    alphas = variant.alphas
    out: Path = args.out
    open_rgb(args.image)  # fail on a bad image before spending time on the model
    components = ModelSpec(id=args.model, revision=args.revision, dtype=args.dtype, device=args.device,
                           channels_last=args.channels_last, compile=args.compile).load()
    if args.upscale and (problem := upscale_problem(args.model, components.family.name)) is not None:
        raise PlanError(problem)  # a model whose family only loading told
    resolution = variant.resolution or components.resolution
    input_image = load_image(args.image, resolution)
    write_json(out / "variant.json", {**variant.to_dict(), "alphas": list(alphas), "seeds": args.seeds})
    run_embed(components, args.image, args.prompt, variant.embed, resolution=resolution,
              artefact=out / "embed.safetensors", losses_csv=out / "embed_losses.csv",
              loss_plot=out / "embed_losses.png", record=out / "embed.json")
    finetuned = run_finetune(
        components, out / "embed.safetensors", variant.finetune, preview_sample=variant.sample,
        resolution=resolution, artefact=out / "finetune.safetensors", losses_csv=out / "finetune_losses.csv",
        loss_plot=out / "finetune_losses.png", previews_dir=out / "previews", record=out / "finetune.json",
        final_preview=out / "preview.png", checkpoint_dir=out / "resume",
    )
    outputs = {(s, a): str(out / "samples" / f"seed{s}_alpha{a:g}.png") for s in args.seeds for a in alphas}
    run_sample(components, out / "embed.safetensors", out / "finetune.safetensors", variant.sample,
               samples=[(s, a, path) for (s, a), path in outputs.items()], resolution=resolution,
               record=out / "sample.json", unet=finetuned.unet)
    from PIL import Image

    rows = [[input_image] + [Image.open(outputs[(s, a)]) for a in alphas] for s in args.seeds]
    save_grid(out / "montage.png", rows, column_labels=["input"] + [f"a={a:g}" for a in alphas],
              row_labels=[f"seed {s}" for s in args.seeds], row_label_width=48)
    print(f"wrote {len(outputs)} samples, montage and loss curves to {out}")
    if args.upscale:
        device = str(components.device)
        del components, finetuned  # stage I's weights go before stage II's load
        upscale_samples(args, outputs, device)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        edit(args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
