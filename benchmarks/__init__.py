"""Benchmarks of the Imagic stages: speed, memory and artefact size, ours against a naive reference.

Run `python -m benchmarks.run` (stage table, ours vs naive, preview overhead) and
`python -m benchmarks.memory` (training-memory estimate for real models); see benchmarks/README.md.
"""
