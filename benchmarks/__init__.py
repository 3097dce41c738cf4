"""Benchmarks of the Imagic stages: speed, memory and artefact size, ours against a faithful reference of the
community pipeline's algorithm.

Run `python -m benchmarks.run` (stage table, ours vs the reference at two step settings),
`python -m benchmarks.profile_step` (where a training step goes) and `python -m benchmarks.memory`
(training-memory estimate for real models); see benchmarks/README.md.
"""
