import json

import pytest
import torch
from diffusers import UNet2DConditionModel

from imagic_steps.errors import ModelNotAvailableError
from imagic_steps.model_loading import load_components
from imagic_steps.preset_recipes import ensure_tiny_model


def test_tiny_preset_is_a_stable_diffusion_folder_loaded_offline(tiny):
    folder = ensure_tiny_model()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    for part in ("tokenizer", "text_encoder", "vae", "unet", "scheduler"):
        assert (folder / part).is_dir()
    assert list((folder / "unet").glob("*.safetensors"))
    # the same folder through the generic from_pretrained path gives identical weights
    again = load_components(str(folder))
    for a, b in zip(tiny.unet.state_dict().values(), again.unet.state_dict().values()):
        assert torch.equal(a, b)


def test_tiny_preset_shapes_match_stable_diffusion(tiny):
    unet_params = sum(p.numel() for p in tiny.unet.parameters())
    print(f"tiny UNet parameters: {unet_params:,}")
    assert 1_000_000 <= unet_params <= 3_000_000
    assert tiny.space_factor == 8
    assert tiny.vae.config.latent_channels == 4
    assert tiny.unet.config.cross_attention_dim == tiny.text_encoder.config.hidden_size
    assert any("CrossAttn" in block for block in tiny.unet.config.down_block_types)
    assert tiny.scheduler.config.beta_schedule == "scaled_linear"
    assert tiny.resolution == 64


def test_tiny_tokenizer_is_sd_clip_bpe(tiny):
    # ids of SD 1.x's CLIP tokenizer for this text: bos, a, photo, of, a, cat, eos
    ids = tiny.tokenizer("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert len(tiny.tokenizer) == 49408
    assert tiny.tokenizer.model_max_length == 77


def test_tiny_preset_is_deterministic(tmp_path):
    from imagic_steps.preset_recipes import build_tiny_model

    build_tiny_model(tmp_path / "a")
    build_tiny_model(tmp_path / "b")
    a = UNet2DConditionModel.from_pretrained(tmp_path / "a", subfolder="unet")
    b = UNet2DConditionModel.from_pretrained(tmp_path / "b", subfolder="unet")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("model", ["nobody/not-a-real-model-id", "stabilityai/stable-diffusion-xl-base-1.0",
                                   "DeepFloyd/IF-I-M-v1.0"])
def test_missing_model_offline_says_how_to_fix(model):
    """Every family's real id goes through the same from_pretrained path and, offline, the same one-line message."""
    with pytest.raises(ModelNotAvailableError) as info:
        load_components(model)
    message = str(info.value)
    assert message.startswith(f"model '{model}' is not available (HF_HUB_OFFLINE is set)")
    assert "local" in message and "--local-dir" in message
    assert "\n" not in message


def test_half_precision_storage_dtype(preset_cache):
    components = load_components("tiny", dtype="bf16")
    assert components.unet.dtype == torch.bfloat16
    assert components.provenance()["dtype"] == "bfloat16"
