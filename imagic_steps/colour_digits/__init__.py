"""The coloured-digits domain: the digits domain's images with the stroke in one of five colours, to measure
attribute edits (colour; the digit must stay) against structure edits (digit; the colour must stay).

`data` holds the rendering, split, captions and edit prompts; `scorer` scores samples with the digits
classifier (on the ink) and a training-free palette colour estimate.
"""
