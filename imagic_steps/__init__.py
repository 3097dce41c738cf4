"""Imagic (Kawar et al., CVPR 2023) text-based image editing on Stable Diffusion, as small testable stages.

Modules, one concept each (docs/how-it-works.md, "Where the code lives", maps them to rules, scripts and tests):
  configuration  the workflow config: the model block (`ModelSpec`), schema typing and one-line errors
  plan           the pairs sheet / TEdBench list and the experiment plan with each stage's cache key
  variants       every stage's parameters (SDEdit's too), the named presets (`original`, `modified`, `paper`,
                 `pinkney`) and user overrides
  models         load tokenizer / text encoder / VAE / UNet / scheduler (hub id, local folder or a preset)
  families       what differs between model families (SD, SDXL): prompt -> conditioning, the UNet call, image <->
                 UNet space, the img2img pipeline; the stages call these hooks
  locations      the presets and the cache folder
  memory         each job's peak memory, estimated from the model's size
  weights        what a model's or scorer's weights are (file digest, recipe version, hub commit): in every cache key
  images         read any user image and turn it into the model's input tensor
  io             atomic writes, safetensors artefacts
  provenance     what every result folder records, and each stage's code hash
  jobs           one workflow job: log, threads, device, the model, one-line user errors
  runs           the working directory's Snakemake runs (stale locks, jobs that die with their parent)
  diffusion      shared diffusion maths: prompt / image encoding, the denoising loss, fixed probe sets
  drawing        labelled image grids and loss curves (what the stages draw while they run)
  embed          stage A: optimise e_tgt into e_opt
  finetune       stage B: fine-tune the UNet with e_opt fixed (full or LoRA), preview grids, resume checkpoints
  finetune_artefact  stage B's artefact: written by finetune, read by sample
  sample         stage C: sample along e(a) = a * e_tgt + (1 - a) * e_opt
  sdedit         the SDEdit baseline (diffusers img2img)
  score          per-sample scores: text alignment, distance, image similarity (CLIP + LPIPS, or the digits scorer)
  stats          numbers: pair bootstrap summaries, best alphas, sweep means
  figures        result figures: montages, best edits, trade-off and sweep plots
  evaluate       tables and the evaluation job that writes them and the figures
  cli            `python -m imagic_steps edit`: stages A-C on one image in one process
  digits/        the digits domain: data, the shipped model's training, its classifier scorer, the report
"""

__version__ = "0.1.0"
