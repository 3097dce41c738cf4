"""The digits toy domain: a small Stable Diffusion trained on scikit-learn's handwritten digits, and a scorer.

`digits` holds the data and captions, `train` trains and saves the `digits` preset, `classifier` trains
and applies the digit classifier that scores its edits.
"""
