"""The experiment plan: pairs x variants -> the stage outputs they need, keyed by what each stage consumes.

Each stage's output folder is named by a short hash of exactly the parameters that stage consumes:

  embed     model (id, revision, dtype, weights: imagic_steps.weights), image, prompt, resolution, embed params
  finetune  the embed key + fine-tune params (not preview / checkpoint cadence: they change no weight)
  sample    the finetune key + sampling params (not batch size), then one file per seed and alpha

so two variants with equal embed parameters share one embed output, and changing a fine-tune parameter
leaves the embed output alone. Embeds or fine-tunes of a pair that differ only in their step count (an `embed.steps`
or `finetune.steps` sweep) share one training run (`shared_trajectories`): the longest trains and writes each shorter
one's outputs as it passes that step, under the shorter one's own key. Baselines are keyed the same way (model, image, prompts, parameters). The model's
weights are part of the key: a retrained or overwritten model replans everything made with it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import PlanError, VariantError
from .model_folder import FAMILY_NAMES, FAMILY_TEXT_ENCODERS, LEDITS_FAMILIES
from .variants import (DdimInversionParams, LeditsParams, SdeditParams, Variant, deep_merge,
                       resolve_variant)

KEY_LENGTH = 10
PAIR_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
NON_RESULT_FINETUNE_FIELDS = ("preview_every", "preview_steps", "checkpoint_every")
NON_RESULT_SAMPLE_FIELDS = ("batch_size",)


@dataclass(frozen=True)
class Pair:
    pair_id: str
    image: str
    prompt: str
    source_prompt: str = ""
    overrides: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class PlannedRun:
    """One pair under one variant on one model (its config label): the keys of its three stages."""

    pair: Pair
    variant: Variant
    embed_key: str
    finetune_key: str
    sample_key: str
    alphas: tuple[float, ...]
    seeds: tuple[int, ...]
    model: str = ""


def stage_key(identity: dict[str, Any]) -> str:
    """Short, stable hash of a JSON-serialisable identity."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def format_alpha(alpha: float) -> str:
    """How an alpha appears in file names: the shortest text that reads back as the same float
    (1.0 -> '1', 0.25 -> '0.25', 1/3 -> '0.3333333333333333')."""
    text = repr(float(alpha))
    return text[:-2] if text.endswith(".0") else text


def model_identity(model: dict[str, Any]) -> dict[str, Any]:
    """What a stage result depends on of its model block: the id, revision, dtype and the weights' identity (the
    `weights` entry the workflow adds from imagic_steps.weights; device and speed options change no result)."""
    return {k: model.get(k) for k in ("id", "revision", "dtype", "weights")}


def embed_identity(model: dict[str, Any], pair: Pair, variant: Variant) -> dict[str, Any]:
    return {
        "model": model_identity(model),
        "image": str(pair.image),
        "prompt": pair.prompt,
        "resolution": variant.resolution,
        "embed": asdict(variant.embed),
    }


def finetune_identity(variant: Variant) -> dict[str, Any]:
    params = asdict(variant.finetune)
    for name in NON_RESULT_FINETUNE_FIELDS:
        params.pop(name)
    return params


def sample_identity(variant: Variant) -> dict[str, Any]:
    params = asdict(variant.sample)
    for name in NON_RESULT_SAMPLE_FIELDS:
        params.pop(name)
    return {"sample": params, "resolution": variant.resolution}


@dataclass(frozen=True)
class SharedTrajectory:
    """Runs of one stage (`embed` or `finetune`) for one pair that differ only in their step count, served by one
    training run.

    With one seeded generator and a constant learning rate, an N-step run is the first N steps of any longer one with
    the same settings, bit for bit on the CPU, so the longest run (`owner_key`, `owner_steps`) writes each shorter
    one's outputs when it passes that step (`stops`: (steps, stage key), ascending), and the shorter runs' jobs only
    move those files into their own folders (each keeps its own key: results and provenance read as a separate
    run's)."""

    stage: str
    pair_id: str
    owner_key: str
    owner_steps: int
    stops: tuple[tuple[int, str], ...]


def embed_jobs(runs: Sequence[PlannedRun]) -> dict[tuple[str, str], PlannedRun]:
    """One embed job per (pair id, embed key); the last run of a key stands for it."""
    return {(run.pair.pair_id, run.embed_key): run for run in runs}


def finetune_jobs(runs: Sequence[PlannedRun]) -> dict[tuple[str, str], PlannedRun]:
    """One fine-tune job per (pair id, finetune key): runs with equal keys share it, and the last of them stands for
    it (its preview settings and sampler draw the job's preview grids)."""
    return {(run.pair.pair_id, run.finetune_key): run for run in runs}


def trajectory_identity(stage: str, run: PlannedRun) -> dict[str, Any]:
    """What runs of `stage` sharing a trajectory have in common: everything the stage's key hashes except the step
    count. Embed: the model, image, prompt, resolution and the other embed parameters. Fine-tune: the embed output
    and every other fine-tune parameter, including the preview cadence and the preview's sampler (a shorter run's
    preview grids are the longer run's), and the resolution."""
    if stage == "embed":
        params = asdict(run.variant.embed)
        params.pop("steps")
        return {"pair": run.pair.pair_id, "model": run.model, "image": str(run.pair.image), "prompt": run.pair.prompt,
                "resolution": run.variant.resolution, "embed": params}
    params = asdict(run.variant.finetune)
    params.pop("steps")
    params.pop("checkpoint_every")  # changes no file
    return {"pair": run.pair.pair_id, "embed": run.embed_key, "finetune": params, **sample_identity(run.variant)}


def stage_steps(stage: str, run: PlannedRun) -> int:
    return getattr(run.variant, stage).steps


def stage_run_key(stage: str, run: PlannedRun) -> str:
    return run.embed_key if stage == "embed" else run.finetune_key


def shared_trajectories(
    runs: Sequence[PlannedRun], stage: str,
    finished_stops: Callable[[str, str], list[tuple[int, str]] | None] = lambda pair_id, key: None,
) -> list[SharedTrajectory]:
    """The jobs of `stage` (`embed_jobs`, `finetune_jobs`) that share a training run, grouped by
    `trajectory_identity`. Zero-step runs train nothing and stay out.

    `finished_stops(pair_id, key)`: the stops a finished run of the stage was run with (its provenance), or None if
    it has not run. A finished run keeps its stops, so Snakemake sees the parameters it ran with and does not
    retrain it; a shorter run added to a sweep afterwards trains in its own job (from scratch: the optimiser's state
    at the steps passed is not kept, which for a full SD-1.5 fine-tune would be 6.9 GB per step)."""
    jobs = embed_jobs(runs) if stage == "embed" else finetune_jobs(runs)
    groups: dict[str, list[PlannedRun]] = {}
    for run in jobs.values():
        if stage_steps(stage, run) > 0:
            groups.setdefault(stage_key(trajectory_identity(stage, run)), []).append(run)
    trajectories = []
    for members in groups.values():
        members.sort(key=lambda r: stage_steps(stage, r))
        owner = members[-1]
        pair_id, owner_key = owner.pair.pair_id, stage_run_key(stage, owner)
        recorded = finished_stops(pair_id, owner_key)
        if recorded is not None:
            stops = tuple((int(steps), key) for steps, key in recorded)
        else:  # a shorter run that has already run on its own stays as it is
            stops = tuple((stage_steps(stage, r), stage_run_key(stage, r)) for r in members[:-1]
                          if finished_stops(pair_id, stage_run_key(stage, r)) is None)
        if stops:
            trajectories.append(SharedTrajectory(stage, pair_id, owner_key, stage_steps(stage, owner), stops))
    return trajectories


# Snakemake's cluster executors (e.g. the SLURM plugin) put input paths into a shell command line: a path with
# shell syntax in it would be executed there, so such paths are refused while planning.
UNSAFE_PATH_CHARACTERS = re.compile(r"""[\s$`;&|<>()'"\\*?!{}\[\]#~]""")


def check_image_path(pair_id: str, image: str, where: str) -> None:
    if not image:
        raise PlanError(f"{where} (pair '{pair_id}', image): no image path; fill the 'image' column")
    bad = sorted(set(UNSAFE_PATH_CHARACTERS.findall(image)))
    if bad:
        raise PlanError(
            f"{where} (pair '{pair_id}', image): the path {image!r} contains {''.join(bad)!r}, which a cluster job's shell "
            f"would interpret; rename the file or link it under a name of letters, digits and . _ - / + = , @"
        )


def check_pair_id(pair_id: str, where: str) -> None:
    if not re.fullmatch(PAIR_ID_PATTERN, pair_id):
        raise PlanError(
            f"{where} (pair_id {pair_id!r}): not safe as a folder name; use 1-64 letters, digits, '_' or '-', "
            f"starting with a letter or digit"
        )


SHEET_COLUMNS = ("pair_id", "image", "prompt", "source_prompt", "overrides")
REQUIRED_COLUMNS = ("pair_id", "image", "prompt")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def _read_text(path: Path, what: str, fix: str) -> str:
    """The UTF-8 text of a sheet or list (a leading byte-order mark dropped), or a PlanError saying why not."""
    if not path.is_file():
        state = "is a folder" if path.is_dir() else "does not exist"
        raise PlanError(f"{path} ({what}): the file {state}; {fix}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise PlanError(f"{path} ({what}): not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}); "
                        "save the file as UTF-8") from None
    if not text.strip():
        raise PlanError(f"{path} ({what}): the file is empty; {fix}")
    return text


def check_text(where: str, subject: str, value: Any, fix: str, required: bool = True) -> str:
    """`value` as a string without control characters (NUL, escapes, ...), non-empty when `required`."""
    if not isinstance(value, str):
        raise PlanError(f"{where} ({subject}): {value!r} is not text; {fix}")
    if CONTROL_CHARACTERS.search(value):
        raise PlanError(f"{where} ({subject}): {value!r} contains control characters; remove them")
    if required and not value.strip():
        raise PlanError(f"{where} ({subject}): the value is empty; {fix}")
    return value


def check_unique_ids(pairs: Sequence[Pair], where: str) -> None:
    """Pair ids name folders, and ids that differ only in case are one folder on case-insensitive file systems."""
    seen: dict[str, str] = {}
    for pair in pairs:
        folded = pair.pair_id.casefold()
        if folded in seen:
            raise PlanError(f"{where} (pair_id {pair.pair_id!r}): repeats pair_id {seen[folded]!r} (ids name folders; "
                            "ids differing only in case share one on some file systems); give every pair its own id")
        seen[folded] = pair.pair_id


def read_pairs_sheet(path: str | Path) -> list[Pair]:
    """Pairs from a UTF-8 TSV with columns pair_id, image, prompt [, source_prompt, overrides (JSON)].

    Cells are taken literally (no CSV quoting: a prompt may contain quotes). Image paths are relative to the
    working directory, as Snakemake takes them. Every problem is a PlanError naming the line and column.
    """
    path = Path(path)
    fix = "write a header line pair_id<TAB>image<TAB>prompt and one line per pair (config/pairs.tsv)"
    lines = _read_text(path, "pairs sheet", fix).splitlines()
    header = lines[0].split("\t")
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if duplicated:
        raise PlanError(f"{path}:1 (columns): column(s) {', '.join(duplicated)} appear twice; keep one of each")
    unknown = [name for name in header if name not in SHEET_COLUMNS]
    if unknown:
        raise PlanError(f"{path}:1 (columns): unknown column(s) {', '.join(map(repr, unknown))}; the columns are "
                        f"{', '.join(SHEET_COLUMNS)} (the last two optional)")
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise PlanError(f"{path}:1 (columns): missing column(s) {', '.join(missing)}; {fix}")
    pairs = []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        where = f"{path}:{number}"
        if len(cells) != len(header):
            raise PlanError(f"{where} (row): {len(cells)} tab-separated cells for {len(header)} columns; "
                            "separate cells with exactly one tab")
        row = dict(zip(header, cells))
        pair_id = row["pair_id"].strip()
        check_pair_id(pair_id, where)
        subject = f"pair '{pair_id}'"
        prompt = check_text(where, f"{subject}, prompt", row["prompt"], "write the target text in the 'prompt' column")
        source_prompt = check_text(where, f"{subject}, source_prompt", row.get("source_prompt", ""), "", required=False)
        overrides_text = check_text(where, f"{subject}, overrides", row.get("overrides", ""), "", required=False).strip()
        try:
            overrides = json.loads(overrides_text) if overrides_text else {}
        except json.JSONDecodeError as error:
            raise PlanError(f"{where} ({subject}, overrides): not valid JSON ({error.msg}); "
                            'write e.g. {"embed": {"steps": 100}}') from None
        if not isinstance(overrides, dict):
            raise PlanError(f"{where} ({subject}, overrides): {overrides_text} is not a JSON object; "
                            'write e.g. {"embed": {"steps": 100}}')
        image = check_text(where, f"{subject}, image", row["image"], "fill the 'image' column").strip()
        check_image_path(pair_id, image, where)
        pairs.append(Pair(pair_id, image, prompt, source_prompt.strip(), overrides))
    if not pairs:
        raise PlanError(f"{path} (pairs sheet): the sheet has a header but no pairs; add one line per pair")
    check_unique_ids(pairs, str(path))
    return pairs


def tedbench_pair_id(img_name: str, target_text: str) -> str:
    """A safe, deterministic id from a TEdBench entry: the image stem (sanitised) + a hash of name and text."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(img_name).stem).strip("_-") or "image"
    digest = hashlib.sha256(f"{img_name}\n{target_text}".encode()).hexdigest()[:6]
    return f"{stem[:48]}-{digest}"


def read_tedbench(json_path: str | Path, images_dir: str | Path) -> list[Pair]:
    """Pairs from a TEdBench-style JSON list of {"img_name", "target_text"} and a folder of originals.

    `img_name` is a relative path inside `images_dir` (absolute paths and `..` are refused: the list names files
    of the benchmark, not of this machine); repeated entries are refused, since they would score twice.
    """
    json_path = Path(json_path)
    fix = 'write a JSON list of {"img_name": "file.png", "target_text": "..."} entries'
    text = _read_text(json_path, "TEdBench list", fix)
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as error:
        raise PlanError(f"{json_path}:{error.lineno} (TEdBench list): not valid JSON ({error.msg}, column "
                        f"{error.colno}); {fix}") from None
    if not isinstance(entries, list) or not entries:
        raise PlanError(f"{json_path} (TEdBench list): the file holds no entries list; {fix}")
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise PlanError(f"{images_dir} (tedbench.images): not a folder; point tedbench.images at the originals")
    pairs, seen = [], {}
    for index, entry in enumerate(entries):
        where = f"{json_path}: entry {index}"
        if not isinstance(entry, dict) or not {"img_name", "target_text"} <= set(entry):
            raise PlanError(f"{where} (entry): needs 'img_name' and 'target_text'; {fix}")
        name = check_text(where, "img_name", entry["img_name"], "give the image's file name")
        target = check_text(where, "target_text", entry["target_text"], "give the edit's target text")
        relative = Path(name)
        if relative.is_absolute() or ".." in relative.parts:
            raise PlanError(f"{where} (img_name {name!r}): must be a path inside tedbench.images; "
                            "give the file name relative to that folder")
        if (name, target) in seen:
            raise PlanError(f"{where} (img_name {name!r}): repeats entry {seen[(name, target)]}; remove the duplicate")
        seen[(name, target)] = index
        pair_id = tedbench_pair_id(name, target)
        image = str(images_dir / relative)
        check_image_path(pair_id, image, where)
        pairs.append(Pair(pair_id, image, target))
    check_unique_ids(pairs, str(json_path))
    return pairs


def plan_experiment(
    model: dict[str, Any],
    pairs: Sequence[Pair],
    variant_specs: dict[str, dict[str, Any] | None],
    alphas: Sequence[float],
    seeds: Sequence[int],
    resolution: int | None = None,
    label: str = "",
) -> list[PlannedRun]:
    """Every pair under every variant on `model` (a config model block, named `label` in tables); the config's
    alphas (and `resolution`, when given) apply unless a variant sets its own."""
    if not seeds:
        raise PlanError("config: 'seeds' is empty; give at least one seed")
    if not alphas:
        raise PlanError("config: 'alphas' is empty; give at least one alpha")
    runs = []
    for pair in pairs:
        for name, spec in variant_specs.items():
            defaults = {"alphas": list(alphas), **({"resolution": resolution} if resolution is not None else {})}
            spec = {**defaults, **(spec or {})}
            variant = resolve_variant(name, deep_merge(spec, pair.overrides))
            embed_key = stage_key(embed_identity(model, pair, variant))
            finetune_key = stage_key({"embed": embed_key, "finetune": finetune_identity(variant)})
            sample_key = stage_key({"finetune": finetune_key, **sample_identity(variant)})
            runs.append(PlannedRun(pair, variant, embed_key, finetune_key, sample_key, variant.alphas, tuple(seeds),
                                   label))
    return runs


def model_variant_specs(variant_specs: dict[str, dict[str, Any] | None], overrides: dict[str, dict[str, Any]],
                        label: str) -> dict[str, dict[str, Any] | None]:
    """The config's variants as one model runs them: a model block's `variants:` ({variant: {section: {field:
    value}}}, e.g. settings tuned on that model) merged over the config's own, before the sweeps, which then sweep
    the model's variant. Raises PlanError naming the model's key for an unknown variant or an invalid field."""
    specs = dict(variant_specs)
    for name, override in overrides.items():
        where = f"config (models.{label}.variants.{name})"
        if name not in variant_specs:
            raise PlanError(f"{where}: '{name}' is not a variant of this config; name one defined under 'variants'")
        specs[name] = deep_merge(variant_specs[name] or {"preset": name}, override)
        try:
            resolve_variant(name, specs[name])
        except VariantError as error:
            raise PlanError(f"{where}: {error}") from None
    return specs


def expand_sweeps(
    variant_specs: dict[str, dict[str, Any] | None], sweeps: dict[str, dict[str, Any]]
) -> tuple[dict[str, dict[str, Any] | None], dict[str, dict[str, Any]]]:
    """Add one variant per swept value: {name: {variant, field: "section.field", values}} -> variant
    `<name>-<value>` = the base variant with that field set. Returns (all variant specs, sweep map with
    {"field", "variants": {variant name: value}} per sweep)."""
    specs = dict(variant_specs)
    sweep_map = {}
    for name, sweep in sweeps.items():
        base = sweep["variant"]
        if base not in variant_specs:
            raise PlanError(f"config (sweeps.{name}.variant): '{base}' is not a variant of this config; "
                            "name one defined under 'variants'")
        section, _, field_name = sweep["field"].partition(".")
        members = {}
        for value in sweep["values"]:
            variant_name = f"{name}-{value}"
            specs[variant_name] = deep_merge(variant_specs[base] or {"preset": base},
                                             {section: {field_name: value}} if field_name else {section: value})
            members[variant_name] = value
        sweep_map[name] = {"field": sweep["field"], "variants": members}
    return specs, sweep_map


@dataclass(frozen=True)
class BaselineMethod:
    """A tuning-free baseline: its config block and results folder (`name`), the edit setting its grid varies (a
    sample-table column, e.g. `strength`; the block's `grid_key` lists the values), its parameters class, whether it
    draws noise (a stochastic one runs every seed; a deterministic one only the first, which its rows record), the
    model families it supports, whether it needs the family's own text encoder (`own_text_encoder`: its diffusers
    pipeline encodes prompts itself, which on another family's text encoder is not the model's encoding;
    `imagic_steps.families`) and whether it needs the pair's source prompt (the empty prompt when a pair has none,
    as TEdBench's)."""

    name: str
    setting: str
    grid_key: str
    params: type
    stochastic: bool
    families: tuple[str, ...] = FAMILY_NAMES
    uses_source_prompt: bool = False
    own_text_encoder: bool = False


BASELINES: dict[str, BaselineMethod] = {method.name: method for method in (
    BaselineMethod("sdedit", "strength", "strengths", SdeditParams, stochastic=True),
    BaselineMethod("ledits", "edit_guidance", "edit_guidances", LeditsParams, stochastic=True,
                   families=LEDITS_FAMILIES, uses_source_prompt=True, own_text_encoder=True),
    BaselineMethod("ddim_inversion", "target_guidance", "target_guidances", DdimInversionParams, stochastic=False,
                   uses_source_prompt=True),
)}


@dataclass(frozen=True)
class BaselineRun:
    """One baseline for one pair on one model (its config label): its key, the setting grid and seeds it runs, its
    parameters (defaults filled)."""

    method: BaselineMethod
    pair: Pair
    key: str
    settings: tuple[float, ...]
    seeds: tuple[int, ...]
    params: dict[str, Any] = field(hash=False, compare=False)
    resolution: int | None = None
    model: str = ""


def plan_baselines(model: dict[str, Any], pairs: Sequence[Pair], config: dict[str, Any], seeds: Sequence[int],
                   resolution: int | None = None, family: str | None = None, label: str = "",
                   skip_unsupported: bool = False, own_text_encoder: bool = True) -> list[BaselineRun]:
    """One BaselineRun per pair and baseline whose block (`sdedit:`, `ledits:`, `ddim_inversion:`) the config has,
    on `model` (named `label` in tables). Each is keyed by what it consumes: the model, image, prompt (and source
    prompt where the method uses one), resolution and its parameters, not its grid (one file per setting).
    `family` (sd, sdxl, if; None: not known before loading) refuses a baseline the family has no pipeline for, or
    leaves it out with `skip_unsupported` (a run of several models, where another may support it); so does a model
    without its family's own text encoder (`own_text_encoder` False) a baseline that needs it."""
    runs = []
    for method in BASELINES.values():
        block = config.get(method.name)
        if not block or (skip_unsupported and not supports(method, family, own_text_encoder)):
            continue
        if not supports(method, family):
            raise PlanError(f"config ({method.name}): not supported for the {family} family of model "
                            f"'{model.get('id')}' (only {', '.join(method.families)}); remove the block")
        if not supports(method, family, own_text_encoder):
            raise PlanError(f"config ({method.name}): not supported for model '{model.get('id')}' "
                            f"({unsupported_reason(method, family)}); remove the block")
        checked = method.params(**{k: v for k, v in block.items() if k != method.grid_key})
        checked.check_grid(block[method.grid_key])
        params = asdict(checked)
        for pair in pairs:
            identity = {"model": model_identity(model), "image": str(pair.image),
                        "prompt": pair.prompt, "resolution": resolution, method.name: params}
            if method.uses_source_prompt:
                identity["source_prompt"] = pair.source_prompt
            runs.append(BaselineRun(method, pair, stage_key(identity), tuple(float(v) for v in block[method.grid_key]),
                                    tuple(seeds) if method.stochastic else tuple(seeds[:1]), params, resolution,
                                    label))
    return runs


def supports(method: BaselineMethod, family: str | None, own_text_encoder: bool = True) -> bool:
    """Whether `method` has a pipeline for `family` (None: not known before loading, assumed so) and, if it needs
    the family's own text encoder, the model holds it."""
    return (family is None or family in method.families) and (own_text_encoder or not method.own_text_encoder)


def unsupported_reason(method: BaselineMethod, family: str | None) -> str:
    """Why `method` does not run on a model of `family` that `supports` refuses, in a few words."""
    if family is not None and family not in method.families:
        return f"{family} family: only {', '.join(method.families)}"
    return (f"its text encoder is not the {family} family's {FAMILY_TEXT_ENCODERS.get(family, 'own')}, and the "
            f"{method.name} pipeline encodes prompts itself")


def plan_record(config: dict[str, Any], models: dict[str, dict[str, Any]], scorer: dict[str, Any],
                weights: dict[str, Any], facets: Sequence[str], seeds: Sequence[int], pairs: Sequence[Pair],
                runs: Sequence[PlannedRun], baseline_runs: Sequence[BaselineRun],
                trajectories: Sequence[SharedTrajectory] = ()) -> dict[str, Any]:
    """What a results folder was planned from (its plan.json): the config after defaults, the model blocks jobs get
    (label -> block), the scorer, what the weights are (`weights`: models, scorer, scorer key), the facets, and
    every run with its stage keys; the shared trajectories (which embed's or fine-tune's training writes which shorter
    ones'); baselines under their method's name, with their grid and parameters."""
    return {
        "config": dict(config),
        "models": models,
        "scorer": scorer,
        "weights": weights,
        "facets": list(facets),
        "seeds": list(seeds),
        "pairs": [asdict(pair) for pair in pairs],
        "runs": [{"pair_id": r.pair.pair_id, "model": r.model, "variant": r.variant.to_dict(),
                  "embed_key": r.embed_key, "finetune_key": r.finetune_key, "sample_key": r.sample_key}
                 for r in runs],
        "trajectories": [{"stage": t.stage, "pair_id": t.pair_id, "owner_key": t.owner_key,
                          "owner_steps": t.owner_steps, "stops": [{"steps": steps, "key": key} for steps, key in t.stops]}
                         for t in trajectories],
        **{name: [{"pair_id": r.pair.pair_id, "model": r.model, "key": r.key, method.grid_key: list(r.settings),
                   "seeds": list(r.seeds), "resolution": r.resolution, **r.params}
                  for r in baseline_runs if r.method is method]
           for name, method in BASELINES.items()},
    }
