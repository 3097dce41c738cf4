"""Scores of edited samples: one row per sample, the same columns whatever the scorer, the scorer in its own column.

The columns say what is measured; the `scorer` column says how. With CLIP and LPIPS (the Imagic paper's
evaluation; the digits domain's classifier scorer is `imagic_steps.digits.classifier.digit_evaluation_scores`):
  text_alignment          100 * max(cos(E_img(sample), E_txt(target prompt)), 0)   (CLIPScore, no 2.5 weight)
  distance                LPIPS(sample, input), both resized to a fixed square      >= 0, lower = closer
  image_similarity        cos(E_img(sample), E_img(input))                          in [-1, 1]
  directional_similarity  cos(E_img(edit) - E_img(src), E_txt(tgt) - E_txt(src))    NaN without a source prompt

`ScorerSpec(tiny=True)` builds random-weight scorers offline for tests and the tiny model; their
numbers only check the plumbing, and every score row carries `ScorerSpec.name` so they are never
mistaken for real ones.

The real scorers' weights are downloaded on first use: CLIP's checkpoint into the hub cache (HF_HOME /
HF_HUB_CACHE), LPIPS's torchvision backbone into `$TORCH_HOME/hub/checkpoints/` (its calibrated heads ship inside
the lpips package). Offline and not downloaded, loading stops with one line (`ModelNotAvailableError`) naming the
missing weights and the command that downloads them once: `python -m imagic_steps.score` on a machine with network
access (it loads the default scorer, or the one its options name, through this very code).
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import lpips
import numpy as np
import open_clip
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import ModelNotAvailableError, first_line, hub_offline
from .images import check_same_length, load_image
from .io import atomic_path

LPIPS_NETS = ("alex", "vgg")

# Small enough to build in well under a second on CPU; the text tower keeps CLIP's real context
# length and vocabulary so the shipped BPE tokenizer works unchanged.
TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "head_width": 32, "layers": 2},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@dataclass(frozen=True)
class ScorerSpec:
    """Which CLIP and LPIPS networks to score with.

    Args:
        clip_arch: open_clip architecture name, e.g. "ViT-B-32". Ignored when `tiny`.
        clip_pretrained: open_clip pretrained tag or a local checkpoint path; None gives random
            weights. Ignored when `tiny`.
        lpips_net: LPIPS backbone, "alex" or "vgg".
        tiny: build small random-weight scorers offline (tests, the tiny model).
        random_weights: the real `clip_arch` and `lpips_net` architectures with seeded random weights, built
            offline (mechanics, memory and timing at real scale, e.g. beside the SD-shaped presets).
        seed: seeds every random initialisation, so random-weight scorers are reproducible.
    """

    clip_arch: str = "ViT-B-32"
    clip_pretrained: str | None = "laion2b_s34b_b79k"
    lpips_net: str = "alex"
    tiny: bool = False
    random_weights: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.lpips_net not in LPIPS_NETS:
            raise ValueError(f"lpips_net must be one of {LPIPS_NETS}, got {self.lpips_net!r}")

    @property
    def name(self) -> str:
        """Label stored with every score, e.g. "clip:ViT-B-32/laion2b_s34b_b79k+lpips:alex"."""
        if self.tiny:
            return f"tiny-random(clip+lpips-{self.lpips_net})"
        if self.random_weights:
            return f"random-init(clip:{self.clip_arch}+lpips:{self.lpips_net})"
        pretrained = self.clip_pretrained or "random-init"
        return f"clip:{self.clip_arch}/{pretrained}+lpips:{self.lpips_net}"


@dataclass
class Scorers:
    """Loaded scoring networks, all in eval mode on `device`."""

    clip_model: open_clip.CLIP
    preprocess: Callable[[Image.Image], torch.Tensor]
    tokenizer: Callable[[list[str]], torch.Tensor]
    lpips_model: lpips.LPIPS
    device: torch.device
    spec: ScorerSpec


def load_scorers(spec: ScorerSpec, device: str | torch.device = "cpu") -> Scorers:
    """Build (tiny) or load (real; may download) the CLIP model and the LPIPS module."""
    device = torch.device(device)
    _check_lpips_backbone(spec)  # before CLIP's seconds of loading
    # Seed inside a forked RNG scope: random initialisation is reproducible from `spec.seed` and the
    # caller's global RNG state is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        clip_model, preprocess, tokenizer = _build_clip(spec)
        lpips_model = _build_lpips(spec)
    return Scorers(
        clip_model=clip_model.to(device).eval(),
        preprocess=preprocess,
        tokenizer=tokenizer,
        lpips_model=lpips_model.to(device).eval(),
        device=device,
        spec=spec,
    )


def _build_clip(spec: ScorerSpec):
    if spec.tiny:
        model = open_clip.CLIP(**TINY_CLIP_CONFIG)
        image_size = TINY_CLIP_CONFIG["vision_cfg"]["image_size"]
        preprocess = open_clip.image_transform(image_size, is_train=False)
        # The BPE vocabulary ships inside open_clip, so this never touches the network.
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=TINY_CLIP_CONFIG["text_cfg"]["context_length"])
        return model, preprocess, tokenizer
    pretrained = None if spec.random_weights else spec.clip_pretrained
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(spec.clip_arch, pretrained=pretrained)
    except (RuntimeError, OSError) as error:  # open_clip words a failed download as RuntimeError
        if pretrained is None or Path(pretrained).is_file():
            raise  # random weights or a local checkpoint: no download to advise
        raise ModelNotAvailableError(_clip_unavailable(spec, error)) from error
    return model, preprocess, open_clip.get_tokenizer(spec.clip_arch)


def download_command(spec: ScorerSpec) -> str:
    """The command that downloads `spec`'s weights once, through `load_scorers` itself."""
    return (f"python -m imagic_steps.score --clip-arch {spec.clip_arch} --clip-pretrained "
            f"{spec.clip_pretrained or 'none'} --lpips-net {spec.lpips_net}")


def _clip_unavailable(spec: ScorerSpec, error: Exception) -> str:
    """One line: CLIP's pretrained weights cannot be had, where a download would put them, and how to get them."""
    from huggingface_hub import constants

    hub = (open_clip.get_pretrained_cfg(spec.clip_arch, spec.clip_pretrained) or {}).get("hf_hub", "")
    repo = "/".join(hub.split("/")[:2]) if hub.count("/") >= 2 else None  # open_clip's 'org/name/[file]'
    if hub_offline():
        what = f"{repo or 'the checkpoint'} is not in the hub cache {constants.HF_HUB_CACHE} (HF_HUB_OFFLINE is set)"
    else:
        what = first_line(error)
    return (f"scorer weights 'clip:{spec.clip_arch}/{spec.clip_pretrained}' are not available: {what}; download them "
            f"once with `{download_command(spec)}` on a machine with access to the hub (into the HF_HOME / "
            "HF_HUB_CACHE the jobs read), or set scorer.clip_pretrained to a local checkpoint file")


# lpips' backbones: the torchvision ImageNet weights each `lpips_net` loads (`pretrained=True` in lpips 0.1.4)
LPIPS_BACKBONE_WEIGHTS = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights"}


def lpips_backbone_file(net: str) -> Path:
    """Where torchvision keeps (and, online, downloads) the backbone weights of LPIPS `net`:
    `$TORCH_HOME/hub/checkpoints/<the weights URL's file name>`, e.g. alexnet-owt-7be5be79.pth."""
    import torchvision

    url = getattr(torchvision.models, LPIPS_BACKBONE_WEIGHTS[net]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _lpips_unavailable(spec: ScorerSpec, what: str) -> str:
    return (f"scorer weights 'lpips:{spec.lpips_net}' (its torchvision ImageNet backbone) are not available: {what}; "
            f"download them once with `{download_command(spec)}` on a machine with network access (into the "
            "TORCH_HOME the jobs read), or copy the file there")


def _check_lpips_backbone(spec: ScorerSpec) -> None:
    """Offline, a missing LPIPS backbone is a one-line error: torch.hub knows nothing of HF_HUB_OFFLINE and would
    try the network."""
    if spec.tiny or spec.random_weights or not hub_offline():
        return
    if not (backbone := lpips_backbone_file(spec.lpips_net)).is_file():
        raise ModelNotAvailableError(_lpips_unavailable(spec, f"{backbone} not found (HF_HUB_OFFLINE is set)"))


def _build_lpips(spec: ScorerSpec) -> lpips.LPIPS:
    # The calibrated linear heads ship with the lpips package; only the ImageNet backbone would be
    # downloaded, so the tiny preset keeps the heads and randomly initialises the backbone.
    random_backbone = spec.tiny or spec.random_weights
    with warnings.catch_warnings():
        # lpips still calls torchvision with the deprecated `pretrained=` argument.
        warnings.filterwarnings("ignore", message=".*pretrained.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*weight enum.*", category=UserWarning)
        try:
            return lpips.LPIPS(net=spec.lpips_net, pretrained=True, pnet_rand=random_backbone, verbose=False)
        except OSError as error:  # a failed download (URLError is an OSError)
            if random_backbone:
                raise
            raise ModelNotAvailableError(_lpips_unavailable(spec, first_line(error))) from error


def _batches(n: int, batch_size: int) -> list[slice]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [slice(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]


@torch.inference_mode()
def encode_images(scorers: Scorers, images: Sequence[Image.Image], batch_size: int) -> torch.Tensor:
    """Unit-norm CLIP image embeddings, shape (N, D), float32 on CPU."""
    features = []
    for batch in _batches(len(images), batch_size):
        pixels = torch.stack([scorers.preprocess(image.convert("RGB")) for image in images[batch]])
        features.append(scorers.clip_model.encode_image(pixels.to(scorers.device), normalize=True).float().cpu())
    return torch.cat(features) if features else torch.empty(0, _embed_dim(scorers))


@torch.inference_mode()
def encode_texts(scorers: Scorers, prompts: Sequence[str], batch_size: int) -> torch.Tensor:
    """Unit-norm CLIP text embeddings, shape (N, D), float32 on CPU."""
    features = []
    for batch in _batches(len(prompts), batch_size):
        tokens = scorers.tokenizer(list(prompts[batch]))
        features.append(scorers.clip_model.encode_text(tokens.to(scorers.device), normalize=True).float().cpu())
    return torch.cat(features) if features else torch.empty(0, _embed_dim(scorers))


def _embed_dim(scorers: Scorers) -> int:
    return scorers.clip_model.text_projection.shape[-1]


def clip_score_from_embeddings(image_emb: torch.Tensor, text_emb: torch.Tensor) -> np.ndarray:
    """CLIPScore 100 * max(cos, 0) of row-aligned unit embeddings (N, D) -> (N,)."""
    return (100.0 * (image_emb * text_emb).sum(-1).clamp(min=0.0)).numpy()


def _directional_from_embeddings(
    source_emb: torch.Tensor,
    edit_emb: torch.Tensor,
    source_text_emb: torch.Tensor,
    target_text_emb: torch.Tensor,
) -> np.ndarray:
    """cos(edit - source, target_text - source_text) row-wise, (N, D) each -> (N,).

    A zero image or text direction (e.g. an unchanged image) gives 0, not NaN.
    """
    return F.cosine_similarity(edit_emb - source_emb, target_text_emb - source_text_emb, dim=-1).numpy()


def _lpips_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """RGB image -> (3, resolution, resolution) float32 tensor in [-1, 1] (the range LPIPS expects)."""
    image = image.convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


@torch.inference_mode()
def lpips_distance(
    scorers: Scorers,
    images_a: list[Image.Image],
    images_b: list[Image.Image],
    resolution: int = 256,
    batch_size: int = 16,
) -> np.ndarray:
    """LPIPS distance of paired images, shape (N,), >= 0; both resized to resolution x resolution px."""
    n = check_same_length(images_a=images_a, images_b=images_b)
    distances = []
    for batch in _batches(n, batch_size):
        a = torch.stack([_lpips_tensor(image, resolution) for image in images_a[batch]]).to(scorers.device)
        b = torch.stack([_lpips_tensor(image, resolution) for image in images_b[batch]]).to(scorers.device)
        distances.append(scorers.lpips_model(a, b).flatten().float().cpu())
    return torch.cat(distances).numpy() if distances else np.empty(0, dtype=np.float32)


def _has_prompt(prompt: str | None) -> bool:
    return prompt is not None and prompt.strip() != ""


def clip_directional_scores(
    scorers: Scorers,
    source_emb: torch.Tensor,
    edit_emb: torch.Tensor,
    source_prompts: Sequence[str | None],
    target_prompts: Sequence[str],
    batch_size: int,
) -> np.ndarray:
    """Directional CLIP similarity from precomputed image embeddings; NaN where there is no source prompt."""
    valid = [i for i, prompt in enumerate(source_prompts) if _has_prompt(prompt)]
    scores = np.full(len(source_prompts), np.nan, dtype=np.float32)
    if valid:
        # Encode only the pairs that have a source prompt; texts are encoded in one list so both
        # prompts of a pair go through the same batches regardless of how many pairs are valid.
        texts = encode_texts(scorers, [source_prompts[i] for i in valid] + [target_prompts[i] for i in valid], batch_size)
        source_text_emb, target_text_emb = texts[: len(valid)], texts[len(valid) :]
        scores[valid] = _directional_from_embeddings(
            source_emb[valid], edit_emb[valid], source_text_emb, target_text_emb
        )
    return scores


def score_samples(
    scorers: Scorers,
    samples: list[Image.Image],
    inputs: list[Image.Image],
    prompts: list[str],
    source_prompts: list[str | None] | None = None,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Score each sample against its input image and target prompt.

    Args:
        samples: edited images, one per row.
        inputs: the input image each sample was edited from.
        prompts: target prompt of each sample.
        source_prompts: description of each input image; None (or None entries) leaves
            directional_similarity NaN.

    Returns:
        One row per sample with the evaluation's columns (`EVALUATION_COLUMNS`), measured by CLIP and LPIPS:
        text_alignment (CLIP score, 100 * cosine of image and prompt), distance (LPIPS to the input),
        image_similarity (CLIP image cosine to the input), directional_similarity (directional CLIP) and scorer.
    """
    if source_prompts is None:
        source_prompts = [None] * len(samples)
    check_same_length(samples=samples, inputs=inputs, prompts=prompts, source_prompts=source_prompts)
    # Each image set is encoded once and shared by the three CLIP metrics.
    sample_emb = encode_images(scorers, samples, batch_size)
    input_emb = encode_images(scorers, inputs, batch_size)
    return pd.DataFrame(
        {
            "text_alignment": clip_score_from_embeddings(sample_emb, encode_texts(scorers, prompts, batch_size)),
            "distance": lpips_distance(scorers, samples, inputs, batch_size=batch_size),
            "image_similarity": (sample_emb * input_emb).sum(-1).numpy(),
            "directional_similarity": clip_directional_scores(scorers, input_emb, sample_emb, source_prompts, prompts,
                                                   batch_size),
            "scorer": scorers.spec.name,
        },
        index=pd.RangeIndex(len(samples)),
    )


def score_sample_files(
    scorer: dict,
    device: str,
    image_path,
    samples: Sequence[str],
    prompt: str,
    source_prompt: str,
    out_csv,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Score sample files against their input image and target prompt; writes one CSV row per sample.

    `scorer` holds `ScorerSpec` fields, or `kind: digits` for the digits domain's classifier scorer
    (`imagic_steps.digits.classifier.digit_evaluation_scores`), or `kind: colour_digits` for the coloured digits'
    (`imagic_steps.colour_digits.scorer.colour_digit_evaluation_scores`: the pair's source prompt names the input's
    colour and digit): the same columns. Each sample is compared with the input resized
    and centre-cropped to the sample's size, i.e. the image the model was given.
    """
    images = [Image.open(path).convert("RGB") for path in samples]
    reference = load_image(image_path, images[0].width)
    spec = dict(scorer)
    kind = spec.pop("kind", "clip")
    if kind == "digits":
        from .digits.classifier import digit_evaluation_scores

        table = digit_evaluation_scores(images, [reference] * len(images), prompt)
    elif kind == "colour_digits":
        from .colour_digits.scorer import colour_digit_evaluation_scores

        table = colour_digit_evaluation_scores(images, [reference] * len(images), prompt, source_prompt)
    else:
        scorers = load_scorers(ScorerSpec(**spec), device)
        table = score_samples(scorers, images, [reference] * len(images), [prompt] * len(images),
                              [source_prompt or None] * len(images), batch_size=batch_size)
    table.insert(0, "sample", list(samples))
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False)
    return table



def main(argv: list[str] | None = None) -> None:
    """`python -m imagic_steps.score`: load a real scorer once (downloading its weights where they are missing), so
    that offline jobs later find them; prints the scorer's label and where the weights are."""
    parser = argparse.ArgumentParser(prog="python -m imagic_steps.score", description=main.__doc__)
    defaults = ScorerSpec()
    parser.add_argument("--clip-arch", default=defaults.clip_arch)
    parser.add_argument("--clip-pretrained", default=defaults.clip_pretrained,
                        help="an open_clip pretrained tag (default %(default)s) or 'none' (LPIPS's backbone only)")
    parser.add_argument("--lpips-net", default=defaults.lpips_net, choices=LPIPS_NETS)
    args = parser.parse_args(argv)
    pretrained = None if args.clip_pretrained.lower() == "none" else args.clip_pretrained
    spec = ScorerSpec(clip_arch=args.clip_arch, clip_pretrained=pretrained, lpips_net=args.lpips_net)
    load_scorers(spec)
    from huggingface_hub import constants

    print(f"{spec.name}: CLIP weights in the hub cache {constants.HF_HUB_CACHE}, LPIPS backbone "
          f"{lpips_backbone_file(spec.lpips_net)}")


if __name__ == "__main__":
    main()
