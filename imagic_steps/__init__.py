"""Imagic (Kawar et al., CVPR 2023) text-based image editing on Stable Diffusion, as small testable stages.

Modules, one concept each:
  models    load tokenizer / text encoder / VAE / UNet / scheduler (hub id, local folder or the `tiny` preset)
  images    read any user image and turn it into the model's input tensor
  io        atomic writes, safetensors artefacts, provenance records
  variants  named hyper-parameter presets (`original`, `modified`, `paper`, `pinkney`) and user overrides
  diffusion shared diffusion maths: prompt / image encoding, the denoising loss, fixed probe sets
  embed     stage A: optimise e_tgt into e_opt
  finetune  stage B: fine-tune the UNet with e_opt fixed (full or LoRA)
  sample    stage C: sample along e(a) = a * e_tgt + (1 - a) * e_opt
  score     CLIP text alignment and LPIPS fidelity of samples
  aggregate montages, tables and trade-off plots
"""

__version__ = "0.1.0"
