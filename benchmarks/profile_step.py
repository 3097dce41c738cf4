"""Where a step of stages A and B goes: ours' real loops under torch.profiler, time split by kind of work.

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 python -m benchmarks.profile_step [--settings digits original] [--steps 20]
    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=2 python -m benchmarks.profile_step --settings original --model sd15-shaped \
        --resolution 256 --steps 3 --threads 2 --no-adam     # Stable Diffusion's size

For each setting (benchmarks.common.bench_settings) and stage, `--steps` steps of `optimize_embedding` /
`finetune_unet` (full) run once unprofiled (ms per step by wall clock) and once under the profiler, after a
warm-up. The profiled time (ms per step) is split by the top-level profiler events: the UNet's forward (a
record_function range opened by hooks on the UNet), its backward (the autograd engine's events), the optimiser's
step and zero_grad, host syncs (`aten::item`, `aten::_local_scalar_dense`), and everything else (noise draws,
`add_noise`, the loss, Python between the ops, and the stage's one-off set-up; the draws, `add_noise` and the
target are also timed apart). Two shares close each row, of the profiled time less the set-up (timed apart): what
lies outside the UNet's forward and backward, and what lies outside those and the optimiser's step (the part no
faster kernel for the UNet or Adam would touch).
Then (unless `--no-adam`) the Adam options torch offers on the CPU are checked on
stage A's real tensor: time per step and whether each gives the default's bits.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from tabulate import tabulate
from torch.profiler import ProfilerActivity, profile, record_function

from imagic_steps.diffusion import draw_noise_and_timesteps, training_target
from imagic_steps.embed import optimize_embedding
from imagic_steps.finetune import finetune_unet, trainable_unet

from .common import bench_settings, load_model_and_image, set_threads

KINDS = ("UNet forward", "backward", "optimizer step", "zero_grad", "host sync (.item)", "other")


def kind_of(name: str) -> str:
    if name == "unet_forward":
        return "UNet forward"
    if name.startswith("autograd::engine"):
        return "backward"
    if name.startswith("Optimizer.step"):
        return "optimizer step"
    if name.startswith("Optimizer.zero_grad"):
        return "zero_grad"
    if name in ("aten::item", "aten::_local_scalar_dense"):
        return "host sync (.item)"
    return "other"


def label_unet_forward(unet: torch.nn.Module) -> list:
    """Hooks that wrap every UNet forward in a `unet_forward` profiler range; returns the handles."""
    ranges = []

    def enter(*_):
        ranges.append(record_function("unet_forward"))
        ranges[-1].__enter__()

    def leave(*_):
        ranges.pop().__exit__(None, None, None)

    return [unet.register_forward_pre_hook(enter), unet.register_forward_hook(leave)]


def profile_stage(run, steps: int, set_up=None) -> dict[str, float]:
    """ms per step: wall clock unprofiled, then the profiled time split into KINDS (top-level events only), and the
    shares of the profiled time outside the UNet's forward and backward (and outside those and Adam's step).

    `set_up` repeats the stage's one-off work (A: encoding the image and the prompt; B: the UNet's training copy);
    it is timed apart, unprofiled, and left out of the shares, which are then per-step costs at any step count.
    """
    row = {}
    if set_up is not None:
        start = time.perf_counter()
        set_up()
        row["set-up ms"] = (time.perf_counter() - start) * 1e3
    start = time.perf_counter()
    run()
    row["wall ms/step"] = (time.perf_counter() - start) * 1e3 / steps
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        start = time.perf_counter()
        run()
        profiled = (time.perf_counter() - start) * 1e3
    totals = dict.fromkeys(KINDS, 0.0)
    for event in profiler.events():
        if event.cpu_parent is None:
            totals[kind_of(event.name)] += event.cpu_time_total / 1e3
    totals["other"] += profiled - sum(totals.values())  # Python between top-level ops
    row["profiled ms/step"] = profiled / steps
    row.update({kind: value / steps for kind, value in totals.items()})
    per_steps = profiled - row.get("set-up ms", 0.0)
    unet = totals["UNet forward"] + totals["backward"]
    row["outside UNet fwd+bwd %"] = 100 * (1 - unet / per_steps)
    row["outside UNet fwd+bwd and optimizer %"] = 100 * (1 - (unet + totals["optimizer step"]) / per_steps)
    return row


def draws_and_noising_ms(components, latents: torch.Tensor, steps: int = 200) -> float:
    """ms per step of what a training step does besides the UNet and Adam: the noise and timestep draws,
    `add_noise` and the training target, timed apart."""
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        noise, timesteps = draw_noise_and_timesteps(latents, components.scheduler, generator)
        components.scheduler.add_noise(latents, noise, timesteps)
        training_target(components.scheduler, latents, noise, timesteps)
    return (time.perf_counter() - start) * 1e3 / steps


def adam_options(embedding: torch.Tensor, steps: int = 200) -> list[dict]:
    """Adam with torch's CPU default (the per-tensor loop), foreach and fused on a copy of `embedding` with fixed
    random gradients: µs per step and whether the result is bit-identical to the default's."""
    generator = torch.Generator().manual_seed(0)
    grads = [torch.randn(embedding.shape, generator=generator) for _ in range(steps)]
    results = {}
    for name, options in {"default (for-loop)": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}.items():
        parameter = embedding.detach().clone().requires_grad_()
        optimizer = torch.optim.Adam([parameter], lr=1e-3, **options)
        start = time.perf_counter()
        for grad in grads:
            parameter.grad = grad
            optimizer.step()
        results[name] = ((time.perf_counter() - start) * 1e6 / steps, parameter.detach())
    default = results["default (for-loop)"][1]
    return [{"Adam on e_opt": name, "µs/step": us, "bit-identical to default": torch.equal(value, default)}
            for name, (us, value) in results.items()]


def main(argv: list[str] | None = None) -> None:
    settings = bench_settings()
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=list(settings), choices=list(settings))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", help="override the settings' model: 'tiny', 'digits', 'sd15-shaped', a folder")
    parser.add_argument("--resolution", type=int, help="override: image side in pixels (default: the model's)")
    parser.add_argument("--no-adam", action="store_true", help="skip the Adam options table")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    overrides = {name: getattr(args, name) for name in ("model", "resolution") if getattr(args, name) is not None}
    rows, adam = [], []
    for name in args.settings:
        config = replace(settings[name], steps_embed=args.steps, steps_finetune=args.steps, **overrides)
        components, image = load_model_and_image(config)
        warm_up = replace(config, steps_embed=3, steps_finetune=3)
        no_steps = replace(config, steps_embed=0)
        embed = optimize_embedding(components, image, config.prompt, warm_up.embed_params(), progress=False)
        finetune_unet(components, embed, warm_up.finetune_params(), progress=False)
        handles = label_unet_forward(components.unet)  # deep copies (stage B's training UNet) keep the hooks
        stages = {"A embed": (lambda: optimize_embedding(components, image, config.prompt, config.embed_params(),
                                                         progress=False),
                              lambda: optimize_embedding(components, image, config.prompt, no_steps.embed_params(),
                                                         progress=False)),
                  "B fine-tune full": (lambda: finetune_unet(components, embed, config.finetune_params(),
                                                             progress=False),
                                       lambda: trainable_unet(components.unet, config.finetune_params()))}
        for stage, (run, set_up) in stages.items():
            rows.append({"setting": name, "stage": stage, **profile_stage(run, args.steps, set_up)})
        rows[-1]["draws + add_noise + target ms/step"] = draws_and_noising_ms(components, embed.image_latents)
        for handle in handles:
            handle.remove()
        if not args.no_adam:
            adam += [{"setting": name, **row} for row in adam_options(embed.optimized_embedding)]
    print(f"ms per step ({args.steps} steps; the kinds split the profiled time, which the profiler inflates):")
    print(tabulate(rows, headers="keys", floatfmt=".2f"))
    if adam:
        print()
        print(tabulate(adam, headers="keys", floatfmt=".1f"))


if __name__ == "__main__":
    main()
