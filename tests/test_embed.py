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
