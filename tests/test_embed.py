"""Stage A on the tiny preset: the embedding optimisation lowers the loss, long prompts are truncated and recorded."""

import torch

from conftest import stage_a_probe_losses
from imagic_steps.variants import EmbedParams


def test_embed_lowers_loss_on_fixed_probe_set(tiny, embedded):
    before, after = stage_a_probe_losses(tiny, embedded)
    print(f"stage A probe loss: e_tgt {before:.4f} -> e_opt {after:.4f}")
    assert after < before
    assert len(embedded.losses) == 40
    assert not torch.equal(embedded.optimized_embedding, embedded.target_embedding)


def test_long_prompt_is_truncated_with_a_warning_and_recorded(tiny, cat_image_path, tmp_path, caplog):
    from imagic_steps.embed import run_embed
    from imagic_steps.io import read_json

    prompt = "a very " + "very " * 90 + "long prompt with 'quotes', \"double\", $HOME, `id`, ünïcödé\nand a newline"
    with caplog.at_level("WARNING"):
        run_embed(tiny, cat_image_path, prompt, EmbedParams(steps=1), resolution=64,
                  artefact=tmp_path / "e.safetensors", losses_csv=tmp_path / "l.csv", loss_plot=tmp_path / "l.png",
                  record=tmp_path / "e.json", progress=False)
    record = read_json(tmp_path / "e.json")
    assert record["prompt"] == prompt
    kept = record["prompt_truncated_to"]
    assert kept and kept.startswith("a very very") and len(kept) < len(prompt)
    assert "truncated" in caplog.text


def test_a_shared_embed_trajectory_writes_each_stop_as_a_separate_run_would(tiny, cat_image_path, tmp_path):
    """One stage A run of 5 steps with a stop at 3: the stop's files, moved into place, are byte for byte a
    separate 3-step run's (e_tgt, e_opt, latents, unconditional, losses, loss curve); its record says so."""
    from imagic_steps import trajectory
    from imagic_steps.embed import run_embed
    from imagic_steps.io import read_json

    def run(folder, steps, stops=()):
        paths = [folder / "embed.safetensors", folder / "losses.csv", folder / "losses.png", folder / "provenance.json"]
        run_embed(tiny, cat_image_path, "a photo of a dog", EmbedParams(steps=steps, lr=1e-2), resolution=64,
                  artefact=paths[0], losses_csv=paths[1], loss_plot=paths[2], record=paths[3], stops=stops,
                  pair_id="cat", progress=False)
        return paths

    long = run(tmp_path / "long", 5, [(3, tmp_path / "long/trajectory/k3")])
    alone = run(tmp_path / "alone", 3)
    adopted = [tmp_path / "adopted" / path.name for path in alone]
    assert trajectory.adopt(tmp_path / "long/trajectory/k3", adopted)
    for first, second in zip(alone[:3], adopted[:3]):
        assert first.read_bytes() == second.read_bytes(), first.name
    assert not (tmp_path / "long/trajectory").exists()  # emptied by its last stop
    record = read_json(adopted[3])
    assert record["params"]["steps"] == 3 and record["trajectory"]["stopped_at"] == 3
    assert read_json(long[3])["trajectory_stops"] == [{"steps": 3, "folder": "k3"}]
    assert long[0].read_bytes() != alone[0].read_bytes()  # the longer run went on
