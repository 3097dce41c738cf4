# Config and sheet validation, the experiment plan, and the input functions of every rule.
import atexit
import dataclasses
import functools
import sys
from pathlib import Path

from snakemake.utils import validate

from imagic_steps.configuration import (
    ModelSpec,
    coerce_to_schema,
    config_error,
    default_scorer,
    dtype_device_problem,
    load_schema,
)
from imagic_steps.execution.snakemake_runs import claim_working_directory, snakemake_takes_lock
from imagic_steps.execution.warm_worker import start_worker, stop_worker
from imagic_steps.images import ImageError, open_rgb
from imagic_steps.memory import (
    job_memory_mb,
    known_family_name,
    known_own_text_encoder,
    planning_model_size,
    stage_estimate,
)
from imagic_steps.model_folder import model_folder_problem
from imagic_steps.plan import (
    BASELINES,
    PAIR_ID_PATTERN,
    PlanError,
    expand_sweeps,
    model_variant_specs,
    finetune_jobs,
    format_alpha,
    plan_baselines,
    plan_experiment,
    plan_record,
    read_pairs_sheet,
    supports,
    unsupported_reason,
    read_tedbench,
    shared_trajectories,
    stage_key,
)
from imagic_steps.provenance import code_version
from imagic_steps.results_layout import ResultsLayout, montage_rows, sample_table_rows
from imagic_steps.variants import VariantError
from imagic_steps.weights import model_weights, scorer_weights


def fail(message):
    """Stop planning with one line (no traceback): `error: <where> (<key/pair/file>): <what>; <fix>`."""
    print(message if message.startswith("error: ") else f"error: {message}", file=sys.stderr)
    sys.exit(1)


# A run that will lock the working directory stops here, with one line, beside a live one (Snakemake's own lock
# error advises --unlock, which would break the live run); -n, --unlock, --list and other lock-free runs pass.
if workflow.is_main_process:
    try:
        removed_locks = claim_working_directory(takes_lock=snakemake_takes_lock(workflow))
    except PlanError as error:
        fail(str(error))
    for lock in removed_locks:
        print(f"note: removed {lock}, left by a Snakemake run that is no longer running", file=sys.stderr)


# --config values arrive as strings inside lists and mappings: type them by the schema, then report the first
# violation as one line (key, value, expected form) before Snakemake's validate fills in the defaults.
CONFIG_SCHEMA = load_schema(workflow.source_path("../schemas/config.schema.yaml"))
config.update(coerce_to_schema(dict(config), CONFIG_SCHEMA))
if (problem := config_error(config, CONFIG_SCHEMA)) is not None:
    fail(problem)
config.setdefault("best_alpha", {})  # so that validate fills in its rule's defaults
validate(config, schema="../schemas/config.schema.yaml")

RESULTS = config["results"]
if Path(RESULTS).exists() and not Path(RESULTS).is_dir():
    fail(f"config (results): {RESULTS} is a file; give a folder for the results (it is created if missing)")
SEEDS = config["seeds"]
ALPHAS = config["alphas"]
SAMPLE_JOBS = config["sample_jobs"]  # one sample job per alpha, or per sample set


def jobs_to_run():
    """How many jobs of this run execute something (rule `all` only collects)."""
    return sum(1 for job in workflow.dag.needrun_jobs() if not job.rule.norun)


onstart:
    # Local jobs hand their scripts to one warm process (imagic_steps/execution/warm_worker.py); SLURM jobs start cold. The worker
    # pays from a run's second job on: its start-up is the imports of one cold job, and a lone job would wait for
    # them (a plan-only `--until experiment_plan` run on config/tiny.yaml: 20-21 s with the worker, 6 s without,
    # both measured beside a 2-worker pytest run).
    if config["warm_worker"] and workflow.local_exec and workflow.is_main_process and jobs_to_run() > 1:
        atexit.register(stop_worker, *start_worker())


def model_blocks():
    """label -> model config block: the `models` mapping, or the one `model` (labelled by its id)."""
    if "model" in config and "models" in config:
        fail("config (model/models): the config gives both; give `model` (one model) or `models` (several)")
    if "models" in config:
        return dict(config["models"])
    if "model" in config:
        return {config["model"]["id"]: config["model"]}
    fail("config (model): missing; give `model: {id: digits}` (one model) or `models: {LABEL: {id: ...}, ...}`")


MODELS = {label: ModelSpec.from_config(block) for label, block in model_blocks().items()}
MODEL_BLOCKS = {label: spec.to_config() for label, spec in MODELS.items()}  # every key filled in: what jobs get
GPU_PER_JOB = 0 if all(spec.device == "cpu" for spec in MODELS.values()) else 1
SCORE_DEVICE = next(iter(MODELS.values())).device  # score jobs run where the (first) model does
MODEL_SIZES = {}
for label, spec in MODELS.items():
    where = "config (model" if "model" in config else f"config (models.{label}"
    if (problem := dtype_device_problem(spec.dtype, spec.device, f"{where}.dtype)")) is not None:
        fail(problem)
    if Path(spec.id).is_dir() and (problem := model_folder_problem(spec.id)) is not None:
        fail(problem)
    MODEL_SIZES[label], size_note = planning_model_size(spec.id, spec.revision)  # None: tiny, not built yet
    if size_note:
        print(f"note: {size_note}", file=sys.stderr)
# What each model's weights are (a file digest, a recipe version or a hub snapshot commit) goes into every stage key,
# so changed weights behind the same name replan what was made with them. A hub id's jobs load the very snapshot
# the keys name: their revision is pinned to its commit.
WEIGHTS = {}
for label, spec in MODELS.items():
    WEIGHTS[label], weights_note = model_weights(spec.id, spec.revision)
    if weights_note:
        print(f"note: {weights_note}", file=sys.stderr)
    if "hub_commit" in WEIGHTS[label]:
        MODEL_BLOCKS[label]["revision"] = WEIGHTS[label]["hub_commit"]
KEYED_BLOCKS = {label: {**block, "weights": WEIGHTS[label]} for label, block in MODEL_BLOCKS.items()}


def load_pairs():
    """Pairs from the TSV sheet (schema-validated row by row) or a TEdBench source; images must open."""
    if "tedbench" in config:
        pairs = read_tedbench(config["tedbench"]["json"], config["tedbench"]["images"])
    else:
        pairs = read_pairs_sheet(config["pairs"])
    for pair in pairs:
        try:
            open_rgb(pair.image)
        except ImageError as error:
            raise PlanError(f"{pair.image} (pair '{pair.pair_id}'): {error}") from None
    return pairs


def plan_model_baselines(label, block):
    """The baselines of one model; with several models, a baseline the model's family has no pipeline for is left
    out for that model (said in a note) rather than refused."""
    spec = MODELS[label]
    family = known_family_name(spec.id, spec.revision)
    own_text_encoder = known_own_text_encoder(spec.id, spec.revision)
    several = len(MODELS) > 1
    runs = plan_baselines(
        block,
        PAIRS,
        config,
        SEEDS,
        config.get("resolution"),
        family,
        label,
        skip_unsupported=several,
        own_text_encoder=own_text_encoder,
    )
    for method in BASELINES.values():
        if several and config.get(method.name) and not supports(method, family, own_text_encoder):
            print(
                f"note: {method.name} is not run on model '{label}' ({unsupported_reason(method, family)})",
                file=sys.stderr,
            )
    return runs


try:
    PAIRS = load_pairs()
    RUNS = []
    OWN_VARIANTS = {label: block.get("variants", {}) for label, block in model_blocks().items()}
    for label, block in KEYED_BLOCKS.items():
        # a model's own variant settings (its `variants:`) apply before the sweeps, whose map is every model's
        specs = model_variant_specs(config["variants"], OWN_VARIANTS[label], label)
        specs, SWEEPS = expand_sweeps(specs, config.get("sweeps", {}))
        RUNS += plan_experiment(block, PAIRS, specs, ALPHAS, SEEDS, config.get("resolution"), label)
    BASELINE_RUNS = [run for label, block in KEYED_BLOCKS.items() for run in plan_model_baselines(label, block)]
except (PlanError, VariantError) as error:
    fail(str(error))

# A rule's outputs are path patterns fixed while parsing, so a per_variant sample job's PNGs are the config's
# seed x alpha grid; the job samples its planned run's own (seed, alpha, path) triples (`get_sample_triples`),
# which must be that grid.
if SAMPLE_JOBS == "per_variant":
    for run in RUNS:
        if list(run.alphas) != list(ALPHAS):
            fail(
                f"config (variants.{run.variant.name}.alphas): the variant sets its own alphas, which 'sample_jobs: per_variant' "
                "cannot batch (its jobs sample the config's alphas); remove them or use per_alpha"
            )

EMBED_RUNS = {(r.pair.pair_id, r.embed_key): r for r in RUNS}
FINETUNE_RUNS = finetune_jobs(RUNS)
SAMPLE_RUNS = {(r.pair.pair_id, r.sample_key): r for r in RUNS}
BASELINE_BY_KEY = {(r.pair.pair_id, r.key): r for r in BASELINE_RUNS}
# each baseline's setting grid (the config block's), which its rule's output patterns expand
BASELINE_GRIDS = {
    name: [float(v) for v in config[name][method.grid_key]] for name, method in BASELINES.items() if config.get(name)
}
DEFAULT_SCORERS = {label: default_scorer(spec.id) for label, spec in MODELS.items()}
if "scorer" not in config and len({str(scorer) for scorer in DEFAULT_SCORERS.values()}) > 1:
    fail(
        f"config (scorer): the models' default scorers differ ({DEFAULT_SCORERS}); scores of different scorers "
        "cannot be compared, so set one `scorer:` for all"
    )
SCORER = config.get("scorer") or next(iter(DEFAULT_SCORERS.values()))
# score files live under a key of the scorer and its weights: another scorer, or retrained scorer weights, rescore
SCORER_WEIGHTS = scorer_weights(SCORER)
SCORER_KEY = stage_key({"scorer": SCORER, "weights": SCORER_WEIGHTS})
# score-table columns that split summaries, best settings and trade-off panels: the model label when several
FACETS = (["model"] if len(MODELS) > 1 else []) + list(config.get("facets", []))


wildcard_constraints:
    pair=PAIR_ID_PATTERN,
    ekey="[0-9a-f]{10}",
    fkey="[0-9a-f]{10}",
    skey="[0-9a-f]{10}",
    seed=r"\d+",
    alpha=r"-?[0-9.]+(e-?[0-9]+)?",
    strength=r"[0-9.]+(e-?[0-9]+)?",


# ---- paths: imagic_steps.results_layout is their one home ------------------------------------------------
LAYOUT = ResultsLayout(RESULTS, SCORER_KEY, SAMPLE_JOBS)
# embeds or fine-tunes that differ only in their step count share one training run (imagic_steps.plan.SharedTrajectory)
TRAJECTORIES = [
    trajectory
    for stage in ("embed", "finetune")
    for trajectory in shared_trajectories(RUNS, stage, functools.partial(LAYOUT.finished_trajectory_stops, stage))
]
TRAJECTORY_STOPS = {(t.stage, t.pair_id, t.owner_key): t.stops for t in TRAJECTORIES}
TRAJECTORY_OWNERS = {(t.stage, t.pair_id, key): t.owner_key for t in TRAJECTORIES for _, key in t.stops}
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmark"


def get_baseline_job_images(method):
    """The PNG patterns of a per-pair baseline job: its seeds x the config's setting grid."""
    return LAYOUT.baseline_job_pngs(method, SEEDS, BASELINE_GRIDS[method])


def get_score_csvs():
    keys = sorted({(r.pair.pair_id, r.sample_key) for r in RUNS} | set(BASELINE_BY_KEY))
    return [LAYOUT.score_csv(pair, key) for pair, key in keys]


def get_pair_score_csvs(wildcards):
    keys = {r.sample_key for r in get_pair_runs(wildcards.pair)} | {
        r.key for r in get_pair_baseline_runs(wildcards.pair)
    }
    return [LAYOUT.score_csv(wildcards.pair, key) for key in sorted(keys)]


def get_pair_sample_rows(wildcards):
    """The samples-table rows of one pair (its Imagic runs, then its baselines)."""
    return sample_table_rows(get_pair_runs(wildcards.pair), get_pair_baseline_runs(wildcards.pair), LAYOUT)


def get_finetune_output(path):
    """Full-UNet artefacts are large: optionally removed once every sample that needs them exists."""
    return temp(path) if config.get("temp_finetune", False) else path


def get_resources(stage, estimated=False):
    """Runtime and memory of a stage's jobs. The config's `resources.<stage>` entries win. Otherwise, for the
    model stages (`estimated`), `mem_mb` and on a GPU `gpu_mem_mb` come from imagic_steps.memory's estimate for
    each job; else, or while a preset is not built yet, mem_mb is 2000."""
    resources = {"runtime": 30, **config.get("resources", {}).get(stage, {})}
    if not estimated or None in MODEL_SIZES.values():
        return {"mem_mb": 2000, **resources}
    for key in ("mem_mb", "gpu_mem_mb") if GPU_PER_JOB else ("mem_mb",):
        resources.setdefault(key, estimated_memory(stage, key))
    return resources


def estimated_memory(stage, key):
    """A resource function: `key` (mem_mb or gpu_mem_mb) of one job of `stage` from the memory estimate."""

    def resource(wildcards):
        if stage in BASELINES:  # each baseline's own estimate, from its parameters
            run = get_baseline_run(wildcards)
            spec = MODELS[run.model]
            estimate = stage_estimate(
                stage, MODEL_SIZES[run.model], spec.dtype, run.resolution, baseline=run.method.params(**run.params)
            )
        else:
            run = {"embed": get_embed_run, "finetune": get_finetune_run, "sample": get_sample_run}[stage](wildcards)
            spec = MODELS[run.model]
            batch = 1
            if stage == "sample":
                batch = min(run.variant.sample.batch_size, len(get_sample_triples(wildcards)))
            estimate = stage_estimate(
                stage,
                MODEL_SIZES[run.model],
                spec.dtype,
                run.variant.resolution,
                run.variant.finetune,
                sample_batch=batch,
            )
        return job_memory_mb(estimate, spec.device)[key]

    return resource


# ---- input functions ----------------------------------------------------------------------------------
def get_embed_run(wildcards):
    return EMBED_RUNS[(wildcards.pair, wildcards.ekey)]


def get_finetune_run(wildcards):
    return FINETUNE_RUNS[(wildcards.pair, wildcards.fkey)]


def get_sample_run(wildcards):
    return SAMPLE_RUNS[(wildcards.pair, wildcards.skey)]


def get_embed_inputs(wildcards):
    return {"image": get_embed_run(wildcards).pair.image, **get_trajectory_input("embed")(wildcards)}


def stage_job_key(stage, wildcards):
    return wildcards.ekey if stage == "embed" else wildcards.fkey


def get_trajectory_input(stage):
    """For a stop of a shared trajectory: the trajectory's artefact (its training writes the stop's files)."""

    def inputs(wildcards):
        owner = TRAJECTORY_OWNERS.get((stage, wildcards.pair, stage_job_key(stage, wildcards)))
        if not owner:
            return {}
        artefact = "embed.safetensors" if stage == "embed" else "finetune.safetensors"
        return {"trajectory": f"{LAYOUT.stage_folder(stage, wildcards.pair, owner)}/{artefact}"}

    return inputs


def get_finetune_inputs(wildcards):
    return {"embed": LAYOUT.embed_artefact(get_finetune_run(wildcards)), **get_trajectory_input("finetune")(wildcards)}


def get_trajectory_stops(stage):
    """[steps, folder] of each shorter run this job's training writes on its way (a shared trajectory)."""

    def stops(wildcards):
        key = stage_job_key(stage, wildcards)
        return [
            [steps, LAYOUT.trajectory_stop(stage, wildcards.pair, key, stop)]
            for steps, stop in TRAJECTORY_STOPS.get((stage, wildcards.pair, key), ())
        ]

    return stops


def get_trajectory_stop(stage):
    """Where a shared trajectory wrote this job's files ('' if it trains itself)."""

    def folder(wildcards):
        key = stage_job_key(stage, wildcards)
        owner = TRAJECTORY_OWNERS.get((stage, wildcards.pair, key))
        return LAYOUT.trajectory_stop(stage, wildcards.pair, owner, key) if owner else ""

    return folder


def get_sample_job_images():
    """A sample job's PNGs, seed-major: every seed at the job's alpha, or every seed x alpha of the set."""
    if SAMPLE_JOBS == "per_alpha":
        return expand(LAYOUT.sample_png, seed=SEEDS, allow_missing=True)
    return expand(LAYOUT.sample_png, seed=SEEDS, alpha=[format_alpha(a) for a in ALPHAS], allow_missing=True)


def get_sample_triples(wildcards):
    """(seed, alpha, path) of every sample a sample job writes, from its planned run: every seed at the job's
    alpha (per_alpha), or the run's whole seed x alpha grid (per_variant)."""
    run = get_sample_run(wildcards)
    alphas = [a for a in run.alphas if format_alpha(a) == wildcards.alpha] if SAMPLE_JOBS == "per_alpha" else run.alphas
    return [(seed, alpha, LAYOUT.sample(run, seed, alpha)) for seed in run.seeds for alpha in alphas]


def get_sdedit_samples(wildcards):
    """(seed, path) of every sample an SDEdit job writes: each seed at the job's strength."""
    run = get_baseline_run(wildcards)
    return [(seed, LAYOUT.baseline_sample(run, seed, float(wildcards.strength))) for seed in run.seeds]


def get_baseline_samples(wildcards):
    """(seed, setting, path) of every sample a per-pair baseline job writes."""
    run = get_baseline_run(wildcards)
    return [
        (seed, setting, LAYOUT.baseline_sample(run, seed, setting)) for seed in run.seeds for setting in run.settings
    ]


def get_sample_inputs(wildcards):
    run = get_sample_run(wildcards)
    return {"embed": LAYOUT.embed_artefact(run), "finetune": LAYOUT.finetune_artefact(run)}


def get_pair_runs(pair_id):
    return [r for r in RUNS if r.pair.pair_id == pair_id]


def get_baseline_run(wildcards):
    return BASELINE_BY_KEY[(wildcards.pair, wildcards.skey)]


def get_scored_group(wildcards):
    """(pair, sample paths) of the sample set or baseline set a score job covers."""
    key = (wildcards.pair, wildcards.skey)
    if key in SAMPLE_RUNS:
        return SAMPLE_RUNS[key].pair, LAYOUT.samples(SAMPLE_RUNS[key])
    return BASELINE_BY_KEY[key].pair, LAYOUT.baseline_samples(BASELINE_BY_KEY[key])


def get_pair_baseline_runs(pair_id):
    """The pair's baseline runs, in the order of BASELINES (SDEdit, LEDITS++, DDIM inversion), then of the models."""
    order = list(BASELINES)
    return sorted((r for r in BASELINE_RUNS if r.pair.pair_id == pair_id), key=lambda r: order.index(r.method.name))


def get_pair_samples(wildcards):
    return [png for run in get_pair_runs(wildcards.pair) for png in LAYOUT.samples(run)] + [
        png for run in get_pair_baseline_runs(wildcards.pair) for png in LAYOUT.baseline_samples(run)
    ]


def get_montage_rows(wildcards):
    return montage_rows(get_pair_runs(wildcards.pair), get_pair_baseline_runs(wildcards.pair), LAYOUT, len(MODELS) > 1)


def get_plan_record():
    """What the results folder was planned from (rule experiment_plan writes it as plan.json)."""
    return plan_record(
        config,
        MODEL_BLOCKS,
        SCORER,
        {"models": WEIGHTS, "scorer": SCORER_WEIGHTS, "scorer_key": SCORER_KEY},
        FACETS,
        SEEDS,
        PAIRS,
        RUNS,
        BASELINE_RUNS,
        TRAJECTORIES,
    )


def get_final_outputs():
    outputs = [f"{RESULTS}/plan.json"]
    outputs += [f"{RESULTS}/montages/pairs/{pair.pair_id}.png" for pair in PAIRS]
    outputs += [f"{RESULTS}/montages/overview.png", f"{RESULTS}/tables/samples.csv"]
    outputs += [f"{RESULTS}/tables/summary.md", f"{RESULTS}/montages/best_edits.png"]
    outputs += [f"{RESULTS}/figures/best_settings.png"]
    outputs += [f"{RESULTS}/figures/tradeoff_pairs/{pair.pair_id}.png" for pair in PAIRS]
    outputs += [f"{RESULTS}/finetune/{r.pair.pair_id}/{r.finetune_key}/preview.png" for r in RUNS]
    return sorted(set(outputs))
