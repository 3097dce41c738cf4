import subprocess
import sys

from PIL import Image


def test_one_edit_cli_end_to_end(tmp_path, cat_image_path):
    out = tmp_path / "edit"
    command = [sys.executable, "-m", "imagic_steps", "edit", "--image", str(cat_image_path),
               "--prompt", "a cat dressed as a medieval knight", "--variant", "original",
               "--set", "embed.steps=4", "--set", "finetune.steps=4", "--set", "finetune.preview_every=2",
               "--set", "sample.steps=3", "--alphas", "0", "1", "1.2", "--seeds", "0", "1", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in (out / "samples").iterdir()) == sorted(
        f"seed{s}_alpha{a}.png" for s in (0, 1) for a in ("0", "1", "1.2")
    )
    # the last step's grid is preview.png (the final preview), not drawn twice into previews/
    assert sorted(p.name for p in (out / "previews").iterdir()) == ["step_000002.png"]
    for name in ("preview.png", "embed_losses.png", "finetune_losses.png", "embed.json", "finetune.json",
                 "sample.json"):
        assert (out / name).stat().st_size > 0
    montage = Image.open(out / "montage.png")
    assert montage.size == (48 + 4 * 64, 14 + 2 * 64)
    assert not (out / "resume").exists()


def test_cli_bad_input_is_one_clear_line(tmp_path):
    command = [sys.executable, "-m", "imagic_steps", "edit", "--image", str(tmp_path / "missing.png"),
               "--prompt", "x", "--out", str(tmp_path / "o")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: image '{tmp_path / 'missing.png'}' does not exist; check the path"]
