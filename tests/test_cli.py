"""`imagic-steps edit`, called in process (the entry point `python -m imagic_steps` runs: its own process is what
tests/test_bad_inputs.py's CLI_SUBPROCESS_CASES and tests/test_shaped_presets.py's SD-2.1-shaped edit start)."""

from PIL import Image

from imagic_steps.cli import main


def test_one_edit_cli_end_to_end(tmp_path, cat_image_path, capsys):
    out = tmp_path / "edit"
    code = main(["edit", "--image", str(cat_image_path), "--prompt", "a cat dressed as a medieval knight",
                 "--variant", "original", "--set", "embed.steps=4", "--set", "finetune.steps=4",
                 "--set", "finetune.preview_every=2", "--set", "sample.steps=3", "--alphas", "0", "1", "1.2",
                 "--seeds", "0", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err[-2000:]
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


def test_cli_bad_input_is_one_clear_line(tmp_path, capsys):
    capsys.readouterr()
    code = main(["edit", "--image", str(tmp_path / "missing.png"), "--prompt", "x", "--out", str(tmp_path / "o")])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: image '{tmp_path / 'missing.png'}' does not exist; check the path"]
