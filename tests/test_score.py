"""Tests of imagic_steps.score with the offline tiny (random-weight) scorers, and the real scorers' loading code on
stand-in weight files laid where a download puts them."""

import hashlib
import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import hub_snapshot, random_image
from imagic_steps import score
from imagic_steps.errors import ModelNotAvailableError
from imagic_steps.images import check_same_length
from imagic_steps.score import (
    ScorerSpec,
    Scorers,
    clip_directional_scores,
    clip_score_from_embeddings,
    encode_images,
    encode_texts,
    load_scorers,
    lpips_backbone_file,
    lpips_distance,
    score_sample_files,
    score_samples,
)

TINY = ScorerSpec(tiny=True, seed=0)
# Below the 256 px default wherever the resolution is not under test: 4x less LPIPS compute on CPU.
RES = 128
PROMPTS = ["a photo of a cat", "a dog sitting", "a red car", "a bird flying", "an apple on a table"]


# The CLIP metrics one at a time, from the same encoders and formulas as score_samples' columns: the references
# its table is checked against (test_score_samples_columns_and_scorer_name).
def clip_text_score(
    scorers: Scorers, images: list[Image.Image], prompts: list[str], batch_size: int = 16
) -> np.ndarray:
    """CLIPScore of each image against its prompt: 100 * max(cos, 0), shape (N,), in [0, 100]."""
    check_same_length(images=images, prompts=prompts)
    return clip_score_from_embeddings(
        encode_images(scorers, images, batch_size), encode_texts(scorers, prompts, batch_size)
    )


def clip_image_similarity(
    scorers: Scorers, images_a: list[Image.Image], images_b: list[Image.Image], batch_size: int = 16
) -> np.ndarray:
    """Cosine similarity of the CLIP embeddings of paired images, shape (N,), in [-1, 1]."""
    check_same_length(images_a=images_a, images_b=images_b)
    emb_a = encode_images(scorers, images_a, batch_size)
    emb_b = encode_images(scorers, images_b, batch_size)
    return (emb_a * emb_b).sum(-1).numpy()


def directional_clip_similarity(
    scorers: Scorers,
    sources: list[Image.Image],
    edits: list[Image.Image],
    source_prompts: list[str | None],
    target_prompts: list[str],
    batch_size: int = 16,
) -> np.ndarray:
    """cos(E_img(edit) - E_img(source), E_txt(target) - E_txt(source)), shape (N,), in [-1, 1].

    NaN where the source prompt is None or empty (the edit direction in text space is undefined).
    """
    check_same_length(sources=sources, edits=edits, source_prompts=source_prompts, target_prompts=target_prompts)
    return clip_directional_scores(
        scorers,
        encode_images(scorers, sources, batch_size),
        encode_images(scorers, edits, batch_size),
        source_prompts,
        target_prompts,
        batch_size,
    )


@pytest.fixture(scope="module")
def scorers():
    return load_scorers(TINY)


def smooth_image(rng: np.random.Generator, size=(72, 64)) -> Image.Image:
    """A low-frequency RGB image (a random 5x4 grid upsampled), so added noise is a real change."""
    coarse = rng.integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)


def add_noise(image: Image.Image, sigma: float, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image, dtype=np.float32)
    noisy = pixels + rng.normal(0.0, sigma, size=pixels.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1234)
    return [smooth_image(rng) for _ in range(5)]


@pytest.fixture(scope="module")
def other_images():
    rng = np.random.default_rng(99)
    return [smooth_image(rng, size=(64, 80)) for _ in range(5)]


def test_lpips_of_identical_images_is_zero(scorers, images):
    np.testing.assert_allclose(lpips_distance(scorers, images, images), 0.0, atol=1e-6)


def test_lpips_is_symmetric(scorers, images, other_images):
    forward = lpips_distance(scorers, images, other_images, resolution=RES)
    backward = lpips_distance(scorers, other_images, images, resolution=RES)
    assert np.all(forward > 0)
    np.testing.assert_allclose(forward, backward, rtol=1e-5, atol=1e-6)


def test_lpips_grows_with_noise(scorers, images):
    rng = np.random.default_rng(7)
    small = lpips_distance(scorers, images, [add_noise(image, 4.0, rng) for image in images], resolution=RES)
    large = lpips_distance(scorers, images, [add_noise(image, 40.0, rng) for image in images], resolution=RES)
    assert np.all(small > 0)
    assert np.all(small < large)


def test_lpips_sees_square_inputs_in_minus_one_one(scorers, images, other_images, monkeypatch):
    seen = []
    lpips_model = scorers.lpips_model

    def spy(a, b):
        seen.append((a.shape, b.shape, min(a.min(), b.min()).item(), max(a.max(), b.max()).item()))
        return lpips_model(a, b)

    monkeypatch.setattr(scorers, "lpips_model", spy)
    lpips_distance(scorers, images, other_images, resolution=96, batch_size=16)
    ((shape_a, shape_b, low, high),) = seen
    assert shape_a == shape_b == (5, 3, 96, 96)
    # The random images span nearly the full 0..255 range, so [-1, 1] scaling reaches both ends.
    assert -1.0 <= low < -0.5 and 0.5 < high <= 1.0


def test_clip_image_similarity_with_itself_is_one(scorers, images, other_images):
    np.testing.assert_allclose(clip_image_similarity(scorers, images, images), 1.0, atol=1e-5)
    assert np.all(clip_image_similarity(scorers, images, other_images) < 1.0 - 1e-5)


def test_clip_text_score_is_clipped_scaled_cosine(scorers, images):
    scores = clip_text_score(scorers, images, PROMPTS)
    assert scores.shape == (5,)
    assert np.all((scores >= 0) & (scores <= 100))
    # Recompute one pair straight from the model to pin down the 100 * max(cos, 0) definition.
    with torch.inference_mode():
        image_emb = scorers.clip_model.encode_image(scorers.preprocess(images[2].convert("RGB"))[None])
        text_emb = scorers.clip_model.encode_text(scorers.tokenizer([PROMPTS[2]]))
    cosine = torch.nn.functional.cosine_similarity(image_emb, text_emb).item()
    np.testing.assert_allclose(scores[2], 100 * max(cosine, 0.0), atol=1e-4)


def test_scores_are_deterministic_across_loads(images, other_images):
    first, second = load_scorers(TINY), load_scorers(TINY)
    for scorer_pair_fn in (
        lambda s: clip_text_score(s, images, PROMPTS),
        lambda s: clip_image_similarity(s, images, other_images),
        lambda s: lpips_distance(s, images, other_images, resolution=RES),
    ):
        np.testing.assert_array_equal(scorer_pair_fn(first), scorer_pair_fn(second))


def test_seed_changes_random_weights(scorers, images, other_images):
    reseeded = load_scorers(ScorerSpec(tiny=True, seed=1))
    assert not np.allclose(
        clip_image_similarity(scorers, images, other_images), clip_image_similarity(reseeded, images, other_images)
    )


def test_scores_do_not_depend_on_batch_size(scorers, images, other_images):
    source_prompts = ["a cat", None, "a car", "", "an apple"]
    by_batch = {
        batch_size: [
            clip_text_score(scorers, images, PROMPTS, batch_size=batch_size),
            clip_image_similarity(scorers, images, other_images, batch_size=batch_size),
            lpips_distance(scorers, images, other_images, resolution=RES, batch_size=batch_size),
            directional_clip_similarity(
                scorers, images, other_images, source_prompts, PROMPTS, batch_size=batch_size
            ),
        ]
        for batch_size in (1, 3)
    }
    for one, three in zip(by_batch[1], by_batch[3]):
        np.testing.assert_allclose(one, three, atol=1e-5, equal_nan=True)


def test_directional_is_nan_without_source_prompt(scorers, images, other_images):
    source_prompts = ["a cat", None, "a car", "", "   "]
    scores = directional_clip_similarity(scorers, images, other_images, source_prompts, PROMPTS)
    assert np.all(np.isfinite(scores[[0, 2]]))
    assert np.all(np.abs(scores[[0, 2]]) <= 1 + 1e-6)
    assert np.all(np.isnan(scores[[1, 3, 4]]))
    # Recompute pair 0 straight from the model to pin down the direction (edit - source) in both spaces.
    with torch.inference_mode():
        pixels = torch.stack([scorers.preprocess(image.convert("RGB")) for image in (images[0], other_images[0])])
        source_img, edit_img = scorers.clip_model.encode_image(pixels, normalize=True)
        source_txt, target_txt = scorers.clip_model.encode_text(scorers.tokenizer(["a cat", PROMPTS[0]]), normalize=True)
    expected = torch.nn.functional.cosine_similarity(edit_img - source_img, target_txt - source_txt, dim=0).item()
    np.testing.assert_allclose(scores[0], expected, atol=1e-5)


def test_score_samples_columns_and_scorer_name(scorers, images, other_images):
    table = score_samples(scorers, other_images, images, PROMPTS, source_prompts=["a cat"] + [None] * 4)
    assert list(table.columns) == ["text_alignment", "distance", "image_similarity", "directional_similarity", "scorer"]
    assert len(table) == 5
    assert (table["scorer"] == TINY.name).all() and "tiny" in TINY.name
    # The table must agree with the single-metric functions it is built from.
    np.testing.assert_allclose(table["text_alignment"], clip_text_score(scorers, other_images, PROMPTS), atol=1e-5)
    np.testing.assert_allclose(table["distance"], lpips_distance(scorers, other_images, images), atol=1e-6)
    assert np.isfinite(table["directional_similarity"][0]) and table["directional_similarity"][1:].isna().all()


def test_real_scorer_name_is_not_tiny():
    assert "tiny" not in ScorerSpec().name
    assert ScorerSpec().name == "clip:ViT-B-32/laion2b_s34b_b79k+lpips:alex"
    with pytest.raises(ValueError):
        ScorerSpec(lpips_net="squeeze")


def test_tiny_scorers_load_offline(monkeypatch, images):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def refuse(*args, **kwargs):
        raise AssertionError("tiny scorers tried to open a network connection")

    # Any download (HF hub, torchvision weights) goes through a socket connection.
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    offline = load_scorers(ScorerSpec(tiny=True, lpips_net="vgg"))
    assert np.isfinite(lpips_distance(offline, images[:1], images[1:2], resolution=64)).all()


# ---- the real scorers' loading code, on stand-in weights --------------------------------------------------------
# What a connected user's first score job downloads, laid where the download puts it, with seeded random weights of
# the right architectures (built here: no network): open_clip's checkpoint for ViT-B-32 / laion2b_s34b_b79k in the
# hub cache, and LPIPS's torchvision AlexNet backbone under $TORCH_HOME/hub/checkpoints/ (LPIPS's calibrated heads
# ship inside the lpips package). The score job then runs exactly the code it runs online, offline.

REAL = {"clip_arch": "ViT-B-32", "clip_pretrained": "laion2b_s34b_b79k", "lpips_net": "alex"}
STANDIN_RECIPE = "1"  # bump when the stand-ins' recipe below changes: cached copies are then rebuilt
STANDIN_SEED = 123  # not the scorers' own seed 0: loaded weights equal to the stand-in's came from the file
STANDIN_COMMIT = hashlib.sha1(b"stand-in CLIP checkpoint").hexdigest()


def clip_download(arch: str, tag: str) -> tuple[str, str]:
    """(hub repo id, file name) open_clip asks the hub for first for `arch` / `tag`: the repo of the tag's pretrained
    config ('org/name/' with open_clip's default file) and the safetensors version of that file, which
    `open_clip.pretrained.download_pretrained_from_hf` tries before the pickle (open_clip_pytorch_model.bin)."""
    import open_clip

    repo_id, filename = os.path.split(open_clip.get_pretrained_cfg(arch, tag)["hf_hub"])
    assert filename == "", "a tag whose config names its file: lay that file instead"
    return repo_id, open_clip.constants.HF_SAFE_WEIGHTS_NAME


def build_standins(root: Path) -> None:
    """The stand-in files under `root`: hub/ (an HF_HUB_CACHE) and torch/ (a TORCH_HOME)."""
    import open_clip
    import torchvision
    from safetensors.torch import save_file

    staging = root / "staging"
    staging.mkdir(parents=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(STANDIN_SEED)
        clip = open_clip.create_model(REAL["clip_arch"])  # random init: no pretrained tag
        alexnet = torchvision.models.alexnet()
    repo_id, filename = clip_download(REAL["clip_arch"], REAL["clip_pretrained"])
    save_file({name: tensor.contiguous() for name, tensor in clip.state_dict().items()}, staging / filename)
    hub_snapshot(root / "hub", repo_id, STANDIN_COMMIT, staging, move=True)
    staging.rmdir()
    checkpoints = root / "torch/hub/checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(alexnet.state_dict(), checkpoints / Path(torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url).name)


@pytest.fixture(scope="session")
def standin_weights(preset_cache) -> Path:
    """The stand-ins, built once into the test cache (IMAGIC_STEPS_TEST_CACHE keeps them across sessions), ~850 MB."""
    root = Path(preset_cache) / f"standin_scorer_weights_v{STANDIN_RECIPE}"
    if not root.is_dir():
        building = root.with_name(f"{root.name}.building-{os.getpid()}")
        shutil.rmtree(building, ignore_errors=True)
        build_standins(building)
        try:
            os.rename(building, root)  # atomic: a concurrent worker's finished copy wins
        except OSError:
            shutil.rmtree(building)
    return root


def point_at(monkeypatch, hub: Path, torch_home: Path) -> None:
    """This process's hub cache and torch home, as HF_HUB_CACHE and TORCH_HOME set before start-up would give."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))  # read from the environment at import
    monkeypatch.setenv("TORCH_HOME", str(torch_home))  # read by torch.hub at every call
    assert os.environ["HF_HUB_OFFLINE"] == "1"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.slow  # ~4 s to build the stand-ins (once per test cache) and ~4 s to load and score
def test_the_real_scorer_loads_downloaded_weights_offline_and_scores(standin_weights, monkeypatch, no_network,
                                                                     tmp_path, cat_image_path):
    from safetensors import safe_open

    point_at(monkeypatch, standin_weights / "hub", standin_weights / "torch")
    loaded = []
    real_load = score.load_scorers
    monkeypatch.setattr(score, "load_scorers", lambda *args, **kwargs: loaded.append(real_load(*args, **kwargs))
                        or loaded[-1])
    sample = tmp_path / "seed0_alpha1.png"
    random_image(0).save(sample)
    # the score job's own call (workflow/scripts/score.py), with the scorer block a config gives
    table = score_sample_files(REAL, "cpu", cat_image_path, [str(sample)], "a photo of a dog", "a photo of a cat",
                               tmp_path / "scores.csv")
    assert (tmp_path / "scores.csv").is_file() and len(table) == 1
    assert table["scorer"][0] == "clip:ViT-B-32/laion2b_s34b_b79k+lpips:alex"  # names the pretrained tag
    assert table[["text_alignment", "distance", "image_similarity", "directional_similarity"]].notna().all(axis=None)
    # the weights came from the laid files (the scorers' own random init is seeded otherwise)
    (scorers,) = loaded
    repo_id, filename = clip_download(REAL["clip_arch"], REAL["clip_pretrained"])
    checkpoint = (standin_weights / "hub" / f"models--{repo_id.replace('/', '--')}" / "snapshots" / STANDIN_COMMIT
                  / filename)
    with safe_open(checkpoint, "pt") as stored:
        for name, tensor in scorers.clip_model.state_dict().items():
            assert torch.equal(tensor, stored.get_tensor(name)), name
    backbone = torch.load(lpips_backbone_file("alex"), weights_only=True)
    assert lpips_backbone_file("alex").is_relative_to(standin_weights)
    assert torch.equal(scorers.lpips_model.net.slice1[0].weight, backbone["features.0.weight"])
    heads = torch.load(Path(score.lpips.__file__).parent / "weights/v0.1/alex.pth", map_location="cpu",
                       weights_only=True)
    assert torch.equal(scorers.lpips_model.lin0.model[1].weight, heads["lin0.model.1.weight"])  # shipped heads


def test_missing_scorer_weights_offline_say_how_to_download_them_once(monkeypatch, no_network, tmp_path,
                                                                      cat_image_path):
    """Offline, before any weights are read: the LPIPS backbone is checked first (torch.hub would try the network),
    then open_clip's hub download fails; one line each, naming the command that downloads both scorers' weights."""
    command = ("python -m imagic_steps.score --clip-arch ViT-B-32 --clip-pretrained laion2b_s34b_b79k "
               "--lpips-net alex")
    with_backbone = tmp_path / "torch_home"
    (with_backbone / "hub/checkpoints").mkdir(parents=True)
    (with_backbone / "hub/checkpoints/alexnet-owt-7be5be79.pth").touch()  # only its presence is checked first
    cases = {  # (hub cache, torch home) -> how the one line starts
        "nothing downloaded": (tmp_path / "empty_hub", tmp_path / "empty_torch",
                               "scorer weights 'lpips:alex' (its torchvision ImageNet backbone) are not available: "
                               f"{tmp_path}/empty_torch/hub/checkpoints/alexnet-owt-7be5be79.pth not found"),
        "no CLIP checkpoint": (tmp_path / "empty_hub", with_backbone,
                               "scorer weights 'clip:ViT-B-32/laion2b_s34b_b79k' are not available: "
                               f"laion/CLIP-ViT-B-32-laion2B-s34B-b79K is not in the hub cache {tmp_path}/empty_hub"),
    }
    sample = tmp_path / "seed0_alpha1.png"
    random_image(0).save(sample)
    for name, (hub, torch_home, expected) in cases.items():
        point_at(monkeypatch, hub, torch_home)
        with pytest.raises(ModelNotAvailableError) as error:
            score_sample_files(REAL, "cpu", cat_image_path, [str(sample)], "a dog", "", tmp_path / "s.csv")
        message = str(error.value)
        assert message.startswith(expected) and f"download them once with `{command}`" in message, name
        assert "(HF_HUB_OFFLINE is set)" in message and "\n" not in message, name
    assert not (tmp_path / "s.csv").exists()
