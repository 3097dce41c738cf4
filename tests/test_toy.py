"""The digits toy domain: data, the shipped model and classifier, Imagic edits that measurably work, training."""

import json

import numpy as np
import pytest
import torch

from imagic_steps.diffusion import encode_prompts
from imagic_steps.embed import optimize_embedding
from imagic_steps.finetune import finetune_unet
from imagic_steps.images import load_image, pil_to_tensor, tensor_to_pil
from imagic_steps.io import load_tensors
from imagic_steps.models import DIGITS_PRESET, ensure_tiny_model, load_components, resolve_model_path
from imagic_steps.sample import sample_alphas
from imagic_steps.toy.classifier import (
    SCORER_NAME,
    classifier_record,
    digit_probabilities,
    digit_scores,
    held_out_accuracy,
    load_digit_classifier,
)
from imagic_steps.toy.digits import caption, demo_digit, digit_tensors, raw_digits, split_indices
from imagic_steps.toy.train import TrainConfig, train_digits_model
from imagic_steps.variants import EmbedParams, FinetuneParams, SampleParams

# The stage parameters recommended for the digits model (the default workflow config uses them).
EMBED = EmbedParams(steps=200, lr=1e-3)
FINETUNE = FinetuneParams(steps=150, lr=1e-4, mode="full")
SAMPLE = SampleParams(scheduler="DDIMScheduler", steps=20, guidance_scale=3.0)


@pytest.fixture(scope="module")
def digits():
    return load_components(DIGITS_PRESET)


@pytest.fixture(scope="module")
def classifier():
    return load_digit_classifier()


def test_split_is_stratified_disjoint_and_deterministic():
    split = split_indices()
    _, labels = raw_digits()
    assert len(split.train) + len(split.held_out) == len(labels) == 1797
    assert not set(split.train) & set(split.held_out)
    assert np.array_equal(split.held_out, split_indices().held_out)
    assert not np.array_equal(split.held_out, split_indices(seed=1).held_out)
    held_out_share = np.bincount(labels[split.held_out], minlength=10) / np.bincount(labels, minlength=10)
    assert np.allclose(held_out_share, 0.2, atol=0.01)


def test_demo_digit_is_held_out_and_reads_back_as_model_input(tmp_path, classifier):
    image = demo_digit(3)
    assert image.mode == "RGB" and image.size == (64, 64)  # load_image rejects files under 64 px
    path = tmp_path / "three.png"
    image.save(path)
    tensor = pil_to_tensor(load_image(path, 32))
    _, labels = raw_digits()
    held_out = split_indices().held_out
    index = held_out[labels[held_out] == 3][0]
    assert (tensor - digit_tensors([index])).abs().mean() < 0.01  # the file is the 32 px training image, upsampled
    assert digit_probabilities(classifier, [image]).argmax() == 3
    assert caption(3) == "a handwritten digit three"


def test_digits_preset_is_a_shipped_stable_diffusion_folder(digits):
    folder = resolve_model_path(DIGITS_PRESET)
    index = json.loads(open(f"{folder}/model_index.json").read())
    assert index == json.loads((ensure_tiny_model() / "model_index.json").read_text())
    assert digits.resolution == 32 and digits.vae_scale_factor == 4
    assert digits.unet.config.sample_size == 8 and digits.vae.config.latent_channels == 4
    assert digits.scheduler.config.beta_schedule == "scaled_linear"
    assert digits.scheduler.config.num_train_timesteps == 1000
    assert digits.vae.config.scaling_factor != 0.18215  # fitted to this VAE's latents
    assert digits.unet.config.cross_attention_dim == digits.text_encoder.config.hidden_size
    assert digits.tokenizer("a handwritten digit three").input_ids == [49406, 320, 35192, 27472, 2097, 49407]


def test_classifier_held_out_accuracy(classifier):
    record = classifier_record()
    recomputed = held_out_accuracy(classifier)
    print(f"digit classifier held-out accuracy: recorded {record['held_out_accuracy']:.4f}, recomputed {recomputed:.4f}")
    assert record["held_out_accuracy"] >= 0.9
    assert recomputed == pytest.approx(record["held_out_accuracy"], abs=1e-6)


def test_digit_scores_are_labelled_and_bounded(classifier):
    three, eight = demo_digit(3), demo_digit(8)
    scores = digit_scores(classifier, [three, eight], [three, three], [3, 3])
    assert list(scores.columns) == ["target_prob", "predicted", "pixel_fidelity", "ssim", "scorer"]
    assert (scores.scorer == SCORER_NAME).all()
    assert scores.pixel_fidelity[0] == pytest.approx(1.0) and scores.ssim[0] == pytest.approx(1.0)
    assert scores.pixel_fidelity[1] < 0.9 and scores.target_prob[1] < 0.5 < scores.target_prob[0]


def test_text_to_image_makes_the_requested_digit(digits, classifier):
    seeds = [0, 1, 2]
    correct = 0
    for label in range(10):
        embedding = encode_prompts(digits, [caption(label)])
        images = sample_alphas(digits, digits.unet, embedding, embedding, [0.0], seeds, SAMPLE, progress=False)
        correct += int((digit_probabilities(classifier, tensor_to_pil(images[:, 0])).argmax(1) == label).sum())
    accuracy = correct / (10 * len(seeds))
    print(f"text-to-image digit accuracy: {accuracy:.3f} over {10 * len(seeds)} samples (chance 0.1)")
    assert accuracy >= 0.8


def test_imagic_edits_a_three_into_an_eight(digits, classifier, tmp_path):
    source = demo_digit(3)
    source.save(tmp_path / "three.png")
    image = pil_to_tensor(load_image(tmp_path / "three.png", digits.resolution))
    prompt = caption(8)
    seeds = list(range(6))
    embed = optimize_embedding(digits, image, prompt, EMBED, progress=False)
    tuned = finetune_unet(digits, embed, FINETUNE, progress=False)
    edits = sample_alphas(digits, tuned.unet, embed.target_embedding, embed.optimized_embedding, [0.0, 1.0], seeds,
                          SAMPLE, progress=False)
    plain = sample_alphas(digits, digits.unet, embed.target_embedding, embed.target_embedding, [0.0], seeds, SAMPLE,
                          progress=False)

    def scores(images):
        return digit_scores(classifier, tensor_to_pil(images), [source] * len(seeds), [8] * len(seeds)).mean(numeric_only=True)

    alpha0, alpha1, text_only = scores(edits[:, 0]), scores(edits[:, 1]), scores(plain[:, 0])
    print(f"3 -> 'eight' over {len(seeds)} seeds: pixel fidelity a=0 {alpha0.pixel_fidelity:.3f}, "
          f"a=1 {alpha1.pixel_fidelity:.3f}, text-to-image {text_only.pixel_fidelity:.3f}; "
          f"P(8) a=0 {alpha0.target_prob:.3f}, a=1 {alpha1.target_prob:.3f}")
    assert alpha0.pixel_fidelity > text_only.pixel_fidelity + 0.15
    assert alpha1.target_prob > alpha0.target_prob + 0.5


def test_training_runs_and_is_deterministic_from_its_seed(tmp_path):
    config = TrainConfig(vae_steps=2, unet_steps=2, vae_batch_size=4, unet_batch_size=4, warmup_steps=1)
    record = train_digits_model(tmp_path / "a", config, progress=False)
    train_digits_model(tmp_path / "b", config, progress=False)
    for part, weights in (("vae", "diffusion_pytorch_model"), ("unet", "diffusion_pytorch_model"), ("text_encoder", "model")):
        a = load_tensors(tmp_path / "a" / part / f"{weights}.safetensors")
        b = load_tensors(tmp_path / "b" / part / f"{weights}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "losses_unet.png").exists() and (tmp_path / "a" / "losses_vae.png").exists()
    assert set(record["final_losses"]) == {"vae_reconstruction_mse", "vae_kl_per_element", "unet_epsilon_mse"}
    components = load_components(str(tmp_path / "a"))
    assert components.resolution == 32
    assert components.vae.config.scaling_factor == pytest.approx(record["scaling_factor"])
