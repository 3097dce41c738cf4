"""The weights' identity in the cache keys (imagic_steps.weights): content digests of folders, hub snapshot
commits, the scorer's weights, and the plan keys they change. The end-to-end checks (a changed tensor in a local
model folder replans every stage; touching the folder replans nothing; a hub id resolved offline from the hub cache
and keyed by its snapshot commit) are in test_workflow.py's end-to-end runs."""

import json
import os
import shutil

import pytest

from conftest import hub_snapshot
from imagic_steps import weights
from imagic_steps.locations import DIGITS_CLASSIFIER_FOLDER, TINY_VERSION
from imagic_steps.plan import Pair, plan_baselines, plan_experiment
from imagic_steps.weights import folder_digest, model_weights, scorer_weights

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A private digest memo (IMAGIC_STEPS_CACHE) so that this test's hashing is its own."""
    monkeypatch.setenv("IMAGIC_STEPS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def model_folder(path, unet=b"unet weights"):
    (path / "unet").mkdir(parents=True)
    (path / "unet/diffusion_pytorch_model.safetensors").write_bytes(unet)
    (path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    return path


def test_a_folder_digest_follows_the_weights_bytes_not_their_dates_or_figures(tmp_path, own_cache):
    first = model_folder(tmp_path / "a")
    digest = folder_digest(first)
    assert len(digest) == weights.DIGEST_LENGTH
    copy = shutil.copytree(first, tmp_path / "b")
    assert folder_digest(copy) == digest  # the same files elsewhere: the same weights
    for path in copy.rglob("*"):
        os.utime(path, (1, 1))
    assert folder_digest(copy) == digest  # touched only
    (copy / "losses.png").write_bytes(b"a figure")  # figures, notes and hidden files beside the weights
    (copy / "README.md").write_text("notes")
    (copy / ".cache").mkdir()
    (copy / ".cache/download.lock").write_text("x")
    assert folder_digest(copy) == digest
    (copy / "unet/diffusion_pytorch_model.safetensors").write_bytes(b"unet weightz")  # one byte changed
    assert folder_digest(copy) != digest
    (copy / "unet/diffusion_pytorch_model.safetensors").write_bytes(b"unet weights")
    (copy / "unet/config.json").write_text("{}")  # a config file changes what the model computes
    assert folder_digest(copy) != digest
    # a moved file with the same bytes is another model (file names say which component a tensor belongs to)
    moved = model_folder(tmp_path / "c")
    os.rename(moved / "unet", moved / "vae")
    assert folder_digest(moved) != digest


def test_file_hashes_are_remembered_by_path_size_and_mtime(tmp_path, own_cache, monkeypatch):
    folder = model_folder(tmp_path / "model")
    folder_digest(folder)
    memo = json.loads((own_cache / weights.MEMO_FILE).read_text())
    assert str((folder / "model_index.json").resolve()) in memo
    hashed = []
    original = weights.hashlib.sha256

    def counting(*args):
        hashed.append(args)
        return original(*args)

    monkeypatch.setattr(weights.hashlib, "sha256", counting)
    folder_digest(folder)
    assert len(hashed) == 1  # only the combining hash: both files came from the memo
    os.utime(folder / "model_index.json", (5, 5))
    hashed.clear()
    folder_digest(folder)
    assert len(hashed) == 2  # the touched file is read again, the other one is not
    shutil.rmtree(folder / "unet")
    folder_digest(folder)  # a deleted file is forgotten when the memo is written again
    memo = json.loads((own_cache / weights.MEMO_FILE).read_text())
    assert not any("unet" in key for key in memo)


def test_model_identities_by_kind_of_reference(tmp_path, own_cache):
    assert model_weights("tiny", None) == ({"recipe": TINY_VERSION}, None)  # built by seeded code
    shipped, note = model_weights("digits", None)
    assert set(shipped) == {"sha256"} and note is None
    local = model_folder(tmp_path / "local")
    assert model_weights(str(local), None) == ({"sha256": folder_digest(local)}, None)
    assert model_weights("org/model", COMMIT) == ({"hub_commit": COMMIT}, None)  # a pinned commit is the snapshot


def test_a_hub_id_is_keyed_by_the_snapshot_the_local_cache_resolves_it_to(tmp_path, monkeypatch):
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    snapshot = hub_snapshot(hub, "org/model", COMMIT, model_folder(tmp_path / "download"))
    assert (snapshot / "unet/diffusion_pytorch_model.safetensors").is_symlink()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    assert model_weights("org/model", None) == ({"hub_commit": COMMIT}, None)
    # not downloaded, offline (as every test is): keyed by the revision name until downloaded, and said so
    assert constants.HF_HUB_OFFLINE
    identity, note = model_weights("org/other", "fp16")
    assert identity == {"hub_revision": "fp16"}
    assert "not in the local hub cache" in note and "hf download org/other --revision fp16" in note


def test_the_digits_scorer_is_keyed_by_its_classifier_files(tmp_path, own_cache, monkeypatch):
    shipped = scorer_weights({"kind": "digits"})
    assert shipped == scorer_weights({"kind": "colour_digits"})  # both score with the digits classifier
    retrained = shutil.copytree(DIGITS_CLASSIFIER_FOLDER, tmp_path / "classifier")
    monkeypatch.setattr(weights, "DIGITS_CLASSIFIER_FOLDER", retrained)
    assert scorer_weights({"kind": "digits"}) == shipped
    (retrained / "model.safetensors").write_bytes((retrained / "model.safetensors").read_bytes()[:-1] + b"\0")
    assert scorer_weights({"kind": "digits"}) != shipped
    # CLIP: a local checkpoint by its bytes; a published tag by the package versions that map it to one file
    checkpoint = tmp_path / "clip.bin"
    checkpoint.write_bytes(b"clip")
    clip = scorer_weights({"clip_pretrained": str(checkpoint)})
    assert set(clip) == {"open-clip-torch", "lpips", "torchvision", "clip_sha256"}
    checkpoint.write_bytes(b"clap")
    assert scorer_weights({"clip_pretrained": str(checkpoint)})["clip_sha256"] != clip["clip_sha256"]
    assert "clip_sha256" not in scorer_weights({"clip_pretrained": "laion2b_s34b_b79k"})


def test_every_stage_key_and_baseline_key_follows_the_weights():
    pairs = [Pair("cat", "cat.png", "a cat", "a dog")]
    model = {"id": "local", "revision": None, "dtype": "fp32", "weights": {"sha256": "a" * 16}}
    retrained = {**model, "weights": {"sha256": "b" * 16}}
    plans = [plan_experiment(block, pairs, {"original": None}, [0.0, 1.0], [0]) for block in (model, retrained)]
    for attribute in ("embed_key", "finetune_key", "sample_key"):
        assert getattr(plans[0][0], attribute) != getattr(plans[1][0], attribute)
    config = {"sdedit": {"strengths": [0.5]}, "ddim_inversion": {"target_guidances": [1.0]}}
    baselines = [plan_baselines(block, pairs, config, [0]) for block in (model, retrained)]
    assert all(a.key != b.key for a, b in zip(*baselines))
    # the device and speed options change no result: same keys
    moved = {**model, "device": "cuda", "channels_last": True}
    assert plan_experiment(moved, pairs, {"original": None}, [0.0, 1.0], [0])[0].sample_key == plans[0][0].sample_key
