"""What keying the caches by the weights costs planning: a model folder's digest, cold and remembered.

    HF_HUB_OFFLINE=1 python -m benchmarks.weights_digest [--model sd15-shaped] [--repeats 3]

The folder of `--model` (a preset, built first if needed, or a local diffusers folder) is hashed as the workflow
does for a local folder (`imagic_steps.weights.folder_digest`): once with an empty digest memo (the first plan
after the weights appeared or changed: every byte read and hashed), then `--repeats` times with the memo (every
later plan: one stat per file), then once after touching every file (mtime changed, content not: all re-hashed,
the same digest). Prints the folder's size and each figure; the memo lives in a temporary IMAGIC_STEPS_CACHE.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="sd15-shaped", help="a preset name or a local diffusers folder")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from imagic_steps.locations import MODEL_PRESETS
    from imagic_steps.model_loading import resolve_model_path

    folder = Path(resolve_model_path(args.model) if args.model in MODEL_PRESETS else args.model)
    with tempfile.TemporaryDirectory() as memo_cache:
        os.environ["IMAGIC_STEPS_CACHE"] = memo_cache  # after the preset is built in the real cache
        from imagic_steps.weights import folder_digest, weight_files

        files = weight_files(folder)
        size = sum(path.stat().st_size for path in files)

        def timed() -> tuple[float, str]:
            start = time.perf_counter()
            digest = folder_digest(folder)
            return time.perf_counter() - start, digest

        cold, digest = timed()
        remembered = [timed() for _ in range(args.repeats)]
        for path in files:
            os.utime(path)
        touched, touched_digest = timed()
    assert all(d == digest for _, d in remembered) and touched_digest == digest
    print(f"model folder: {folder} ({len(files)} weight files, {size / 2**30:.2f} GiB)")
    print(f"digest {digest}")
    print(f"cold (empty memo): {cold:.2f} s ({size / 2**30 / cold:.2f} GiB/s)")
    print(f"remembered: median {statistics.median(t for t, _ in remembered) * 1e3:.1f} ms "
          f"(n = {len(remembered)}, min-max {min(t for t, _ in remembered) * 1e3:.1f}-"
          f"{max(t for t, _ in remembered) * 1e3:.1f} ms)")
    print(f"after touching every file: {touched:.2f} s, same digest")


if __name__ == "__main__":
    main()
