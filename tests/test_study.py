"""benchmarks/study.py counts a study's UNet work as the workflow and the community loop do it: checked against a
hand count of a small planned config (sharing of embeds, fine-tunes and sample sets, a shared trajectory's stops,
preview grids, guidance doubling the batch, a skipped start of the schedule) and against the UNet calls the samplers
make when they run."""

from pathlib import Path

import pytest
import torch
import yaml

from benchmarks import reference, study
from benchmarks.study import TRAINING_STEP_FE, Work
from conftest import ONE_AT_A_TIME
from imagic_steps.sample import make_scheduler, sample_alphas
from imagic_steps.variants import SampleParams

pytestmark = ONE_AT_A_TIME  # Snakemake plans in the repository itself (conftest.py)
REPO = Path(__file__).resolve().parents[1]

# One digits pair, 2 seeds x 2 alphas (4 images a run). `base` and its steps sweep (0, 3, 4, 6) share one embed; 6 is
# `base` again, 3 and 4 are stops of base's trajectory; `euler` has its own embed (the modified preset's lr), an
# unguided Euler sampler that skips round(0.3 x 10) = 3 of its 10 steps, and no previews but the finished model's.
SMALL_CONFIG = {
    "model": {"id": "digits", "dtype": "fp32", "device": "cpu"},
    "seeds": [0, 1],
    "alphas": [0.0, 1.0],
    "sample_jobs": "per_variant",
    "variants": {
        "base": {"preset": "original", "embed": {"steps": 4},
                 "finetune": {"steps": 6, "lr": 1e-4, "preview_every": 2, "preview_steps": 3},
                 "sample": {"steps": 5, "guidance_scale": 3.0, "batch_size": 3}},
        "euler": {"preset": "modified", "embed": {"steps": 4}, "finetune": {"steps": 6, "preview_steps": 4},
                  "sample": {"steps": 10, "guidance_scale": 1.0, "init_timestep_rate": 0.3}},
    },
    "sweeps": {"finetune_steps": {"variant": "base", "field": "finetune.steps", "values": [0, 3, 4, 6]}},
}


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    pairs = folder / "pairs.tsv"
    pairs.write_text("pair_id\timage\tprompt\nthree_to_eight\tconfig/images/digits/3.png\ta handwritten digit eight\n")
    config = folder / "small.yaml"
    config.write_text(yaml.safe_dump({"pairs": str(pairs), **SMALL_CONFIG}))
    plan = study.plan_of(str(config), folder / "results")
    return plan, study.Samplers(plan["models"])


def test_the_count_of_a_small_study_is_the_hand_count(planned):
    plan, samplers = planned
    work = study.count_study(plan, samplers)
    # A: ours 2 embed jobs of 4 steps; the loop one per run, 6 runs
    assert work.ours["A embed"] == Work(3 * 8, 8) and work.loop["A embed"] == Work(3 * 24, 24)
    # B: ours trains base to 6 (writing the stops 3 and 4 on its way), euler 6, the 0-step sweep nothing
    assert work.ours["B fine-tune"] == Work(3 * 12, 12)
    assert work.loop["B fine-tune"] == Work(3 * (6 + 6 + 0 + 3 + 4 + 6), 25)
    # previews, 5 alphas a grid: base's at 2 and 4, its finished model's, stop 3's finished model's (stop 4's is
    # base's grid at 4, linked), the 0-step job's base model: 5 grids, each 5 images x 3 DDIM steps x 2 (guided) =
    # 30 FE in ceil(5 / 3) x 3 = 6 calls; euler's finished model: 4 Euler steps less round(1.2) = 1, unguided, one
    # batch of 5: 15 FE in 3 calls
    assert work.ours["B previews"] == Work(5 * 30 + 15, 5 * 6 + 3)
    assert work.loop["B previews"] == Work()
    # C: ours 5 sample sets (base = the 6-step sweep), 4 images each: 4 DDIM sets of 4 x 5 steps x 2 (guided) in
    # ceil(4 / 3) x 5 calls; euler 4 x 7 steps unguided in one batch. The loop: 6 runs, one call per image
    assert work.ours["C sample"] == Work(4 * 40 + 28, 4 * 10 + 7)
    assert work.loop["C sample"] == Work(5 * 40 + 28, 5 * 4 * 5 + 4 * 7)
    assert work.total("ours").fe == 24 + 36 + 165 + 188 and work.total("loop").fe == 72 + 75 + 228
    assert work.jobs == {"embed": 2, "fine-tune": 3, "stops": 2, "sample sets": 5, "runs": 6}


def test_sharing_a_trajectory_saves_exactly_its_stops_steps(planned):
    plan, samplers = planned
    shared = study.count_study(plan, samplers)
    unshared = study.count_study(plan, samplers, share_trajectories=False)
    stops = [stop["steps"] for trajectory in plan["trajectories"] for stop in trajectory["stops"]]
    assert sorted(stops) == [3, 4]
    assert unshared.ours["B fine-tune"] - shared.ours["B fine-tune"] == Work(TRAINING_STEP_FE * 7, 7)
    # on their own the stops draw 2 grids each (at 2 and finished); shared, base draws stop 3's finished one: 3 fewer
    assert unshared.ours["B previews"] - shared.ours["B previews"] == Work(3 * 30, 3 * 6)
    assert unshared.loop == shared.loop


def test_the_counted_calls_are_the_ones_the_samplers_make(planned, load):
    """Ours' batched sampling and the reference's pipeline call on the digits model, every UNet call recorded:
    the counted FE and calls are theirs, with and without guidance and a skipped start."""
    plan, samplers = planned
    components = load("digits")
    batches = []
    hook = components.unet.register_forward_hook(lambda module, args, output: batches.append(args[0].shape[0]))
    width = components.unet.config.cross_attention_dim
    target, optimized = torch.zeros(1, 77, width), torch.ones(1, 77, width)
    side = components.resolution // components.space_factor
    latents = torch.zeros(1, components.unet.config.in_channels, side, side)
    samplers_run = [("DDIMScheduler", 5, 0.0, 3.0), ("EulerDiscreteScheduler", 10, 0.3, 1.0),
                    ("HeunDiscreteScheduler", 4, 0.25, 2.0)]  # Heun: 2 calls a step; skips round(0.25 x 4) x 2
    try:
        for scheduler, steps, rate, guidance in samplers_run:
            sample = {"scheduler": scheduler, "steps": steps, "init_timestep_rate": rate, "guidance_scale": guidance}
            params = SampleParams(scheduler=scheduler, steps=steps, guidance_scale=guidance, init_timestep_rate=rate,
                                  batch_size=3)
            batches.clear()
            sample_alphas(components, components.unet, target, optimized, [0.0, 0.5, 1.0, 1.5, 2.0], [0], params,
                          init_latents=latents, unconditional=target, progress=False)
            counted = study.sampling(5, 3, samplers.ours("digits", sample), study.ours_guided(sample))
            assert counted == Work(sum(batches), len(batches)), sample
            batches.clear()
            pipeline = make_scheduler(scheduler, components.scheduler.config)
            reference.pipeline_call(components, pipeline, target, optimized, 1.0, torch.Generator().manual_seed(0),
                                    study.loop_denoising_steps(sample), guidance, 0.0)
            counted = study.sampling(1, 1, samplers.loop("digits", sample), study.loop_guided(sample))
            assert counted == Work(sum(batches), len(batches)), sample
    finally:
        hook.remove()


@pytest.mark.slow  # plans config/sd15.yaml and config/config.yaml in Snakemake: ~10 s
def test_benchmarks_readme_states_the_counts_the_command_prints(tmp_path):
    """benchmarks/README.md's "The cost of a study" shows `python -m benchmarks.study`'s output for config/sd15.yaml
    and config/config.yaml: every line it prints is on the page (line breaks aside), so the page cannot drift from
    the plans or the counting."""
    page = " ".join((REPO / "benchmarks" / "README.md").read_text().split())
    for configfile in ("config/sd15.yaml", "config/config.yaml"):
        plan = study.plan_of(configfile, tmp_path / Path(configfile).stem)
        printed = study.format_count(configfile, plan, study.Samplers(plan["models"]))
        missing = [line for line in printed.splitlines() if " ".join(line.split()) not in page]
        assert not missing, f"benchmarks/README.md lacks, for {configfile}:\n" + "\n".join(missing)
