"""Imagic (Kawar et al., CVPR 2023) text-based image editing on Stable Diffusion, as small testable stages.

One concept per module; docs/how-it-works.md, "Where the code lives", lists every module by what it holds and maps
the stages to their rules, scripts and tests.
"""

__version__ = "0.1.0"
