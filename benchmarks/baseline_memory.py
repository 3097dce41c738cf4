"""The measured constants of the baselines' memory estimate (imagic_steps.memory): the VAE decode's working memory
and the attention scores LEDITS++'s attention processors hold.

    python -m benchmarks.baseline_memory            # both, 5 fresh processes each (~10 min, ~5 GiB of RAM, CPU)
    python -m benchmarks.baseline_memory --decode   # the VAE decode (and encode) only (~7 min)
    python -m benchmarks.baseline_memory --attention  # the attention scores only (~4 min)
    python -m benchmarks.baseline_memory --decode --side 1024 --dtypes fp32  # the area scaling (~9 min, ~9 GiB)
    python -m benchmarks.baseline_memory --table    # the baselines' estimates per published model (no model built)

Each figure is the peak RSS that one inference-mode call adds to a fresh process that already holds the module's
weights (zeroed, resident): the kernel's high-water mark (`imagic_steps.execution.workflow_job.peak_rss_bytes`),
reset just before the call, with the freed memory kept as every workflow job keeps it
(`imagic_steps.execution.freed_memory`), one torch thread as a job runs. The same call measures differently from
one process to the next (the fp32 decode at 512 px: 1.6-1.8 GiB), so each is run in `--repeats` fresh processes and
the median is the constant.

* decode: SD's VAE (SD-1.x, SD-2.x and SDXL share its shape) decoding one image (512 px unless `--side`), fp32
  and bf16: `VAE_DECODE_GIB_512`. The encoder (embed and the baselines encode one image) is measured too.
* attention: SD-1.5's and SD-2.1's UNets at 512 px, batch 2 (LEDITS++'s edit: the unconditional and one edit
  prompt), bf16 weights, with diffusers' default attention processors and with the explicit ones LEDITS++ installs
  (`AttnProcessor`, which materialises every attention's scores): the difference over the largest self-attention's
  score matrix (batch x heads x tokens^2 x bytes: bf16 for SD-1.5, fp32 for SD-2.1, whose config upcasts the
  attention) is what one forward holds; `ATTENTION_SCORE_COPIES` adds one for a whole LEDITS++ job
  (imagic_steps/memory.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch

from imagic_steps.execution.workflow_job import peak_rss_bytes
from imagic_steps.memory import (
    ARCHITECTURE_SIZES,
    ATTENTION_SCORE_COPIES,
    GIB,
    KNOWN_MODELS,
    SD15,
    SD21,
    VAE_DECODE_GIB_512,
    stage_estimate,
    vae_dtype_bytes,
)
from imagic_steps.variants import LEDITS_PIPELINE_INVERSION_STEPS

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SIDE = 512  # the attention's side, and the decode's unless --side


def resident_module(module_class, config: dict, dtype: torch.dtype) -> torch.nn.Module:
    """`module_class(**config)` on the CPU in `dtype` with zeroed (resident) weights, no initialisation time."""
    with torch.device("meta"):
        module = module_class(**config).to(dtype)
    module = module.to_empty(device="cpu").eval().requires_grad_(False)
    for tensor in (*module.parameters(), *module.buffers()):
        tensor.zero_()
    return module


def added_peak_gib(call) -> float:
    """Peak RSS that `call()` adds (inference mode), in GiB: the high-water mark is reset to the current RSS first."""
    with open("/proc/self/clear_refs", "w") as handle:  # 5: reset VmHWM to VmRSS (Linux >= 4.0)
        handle.write("5")
    before = peak_rss_bytes()
    with torch.inference_mode():
        call()
    return (peak_rss_bytes() - before) / GIB


def measure(what: str, dtype_name: str, side: int = SIDE, architecture: str = "sd15") -> float:
    """One measurement in this (fresh) process."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.models.attention_processor import AttnProcessor

    from imagic_steps.execution.freed_memory import retain_freed_memory
    from imagic_steps.preset_recipes import sd15_unet_config, sd21_unet_config, sd_vae_config

    retain_freed_memory()
    torch.set_num_threads(1)
    dtype = DTYPES[dtype_name]
    if what in ("decode", "encode"):
        vae = resident_module(AutoencoderKL, sd_vae_config(side), dtype)
        if what == "decode":
            latents = torch.randn(1, 4, side // 8, side // 8, dtype=dtype)
            return added_peak_gib(lambda: vae.decode(latents))
        image = torch.randn(1, 3, side, side, dtype=dtype)
        return added_peak_gib(lambda: vae.encode(image))
    config = {"sd15": sd15_unet_config, "sd21": sd21_unet_config}[architecture]()
    unet = resident_module(UNet2DConditionModel, {**config, "sample_size": SIDE // 8}, dtype)
    if what == "unet_explicit":
        unet.set_attn_processor(AttnProcessor())
    sample = torch.randn(2, 4, SIDE // 8, SIDE // 8, dtype=dtype)
    text = torch.randn(2, 77, config["cross_attention_dim"], dtype=dtype)
    return added_peak_gib(lambda: unet(sample, 500, text))


def median_of_fresh_processes(what: str, dtype_name: str, repeats: int, side: int = SIDE,
                               architecture: str = "sd15") -> tuple[float, list[float]]:
    values = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-m", "benchmarks.baseline_memory", "--measure", what, dtype_name,
                               "--side", str(side), "--architecture", architecture],
                              capture_output=True, text=True, check=True)
        values.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(values), values


def baseline_table() -> list[dict]:
    """Per published model (benchmarks.memory's TABLE_IDS): the baselines' estimated device peak in GiB, fp16
    weights on a GPU, the native side, the pipelines' default LEDITS++ inversion steps; the VAE's bytes per
    parameter and one image's decode."""
    from benchmarks.memory import TABLE_IDS

    rows = []
    for model_id in TABLE_IDS:
        size = ARCHITECTURE_SIZES[KNOWN_MODELS[model_id]]
        peaks = {stage: stage_estimate(stage, size, "fp16") for stage in ("sdedit", "ddim_inversion", "ledits")
                 if stage != "ledits" or size.family in LEDITS_PIPELINE_INVERSION_STEPS}
        rows.append({"family": size.family, "example id": model_id, "px": size.resolution,
                     "VAE bytes/param": vae_dtype_bytes(size, "fp16") if size.vae else "-",
                     "decode GiB": f"{peaks['sdedit'].decode:.1f}",
                     **{f"{stage} GiB": f"{peaks[stage].device_total:.1f}" if stage in peaks else "-"
                        for stage in ("sdedit", "ddim_inversion", "ledits")}})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.baseline_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--decode", action="store_true", help="measure the VAE decode (and encode) only")
    parser.add_argument("--attention", action="store_true", help="measure LEDITS++'s attention scores only")
    parser.add_argument("--side", type=int, default=SIDE, help="the decoded image's side in pixels")
    parser.add_argument("--dtypes", nargs="+", choices=sorted(DTYPES), default=list(DTYPES),
                        help="the VAE's dtypes to measure")
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes per figure (the median is kept)")
    parser.add_argument("--table", action="store_true", help="print the baselines' estimates per published model")
    parser.add_argument("--architecture", default="sd15", help=argparse.SUPPRESS)
    parser.add_argument("--measure", nargs=2, metavar=("WHAT", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:  # one figure in this fresh process; GiB on stdout
        print(measure(*args.measure, side=args.side, architecture=args.architecture))
        return
    if args.table:
        from tabulate import tabulate

        print("Estimated device peak of the baselines' jobs (GiB), fp16 weights on a GPU, native side")
        print(tabulate(baseline_table(), headers="keys", floatfmt=".1f", tablefmt="github"))
        return
    both = not (args.decode or args.attention)
    if args.decode or both:
        scale = (args.side / 512) ** 2
        for what in ("decode", "encode"):
            for dtype_name in args.dtypes:
                median, values = median_of_fresh_processes(what, dtype_name, args.repeats, args.side)
                print(f"VAE {what}, one {args.side} px image, {dtype_name}: median {median:.3f} GiB of "
                      f"{', '.join(f'{v:.3f}' for v in values)} (the estimate's decode: VAE_DECODE_GIB_512 "
                      f"{VAE_DECODE_GIB_512[DTYPES[dtype_name].itemsize]} x {scale:g} = "
                      f"{VAE_DECODE_GIB_512[DTYPES[dtype_name].itemsize] * scale:.3f} GiB)", flush=True)
    if args.attention or both:
        for architecture, size in (("sd15", SD15), ("sd21", SD21)):
            default, default_values = median_of_fresh_processes("unet", "bf16", args.repeats, SIDE, architecture)
            explicit, explicit_values = median_of_fresh_processes("unet_explicit", "bf16", args.repeats, SIDE,
                                                                  architecture)
            attention = size.attention
            tokens = (SIDE // attention.factor) ** 2
            scores_gib = 2 * attention.heads * tokens**2 * (4 if attention.fp32_scores else 2) / GIB  # batch 2
            print(f"{architecture} UNet, {SIDE} px, batch 2, bf16 weights: default attention processors median "
                  f"{default:.3f} GiB of {', '.join(f'{v:.3f}' for v in default_values)}; LEDITS++'s explicit ones "
                  f"median {explicit:.3f} GiB of {', '.join(f'{v:.3f}' for v in explicit_values)}; the difference is "
                  f"{(explicit - default) / scores_gib:.2f} x the largest score matrix ({scores_gib:.3f} GiB) "
                  f"(a whole job: ATTENTION_SCORE_COPIES = {ATTENTION_SCORE_COPIES})", flush=True)


if __name__ == "__main__":
    main()
