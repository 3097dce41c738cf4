"""Model families: what differs between Stable Diffusion (1.x / 2.x), SDXL and DeepFloyd IF, in one place per family.

A family says
  (a) prompt -> conditioning: `encode` and `unconditional` (classifier-free guidance's negative), returning the
      family's `Conditioning` dataclass of batch-first fp32 tensors;
  (b) how the UNet is called with that conditioning: `Conditioning.unet_inputs`;
  (c) image <-> UNet space: `to_unet_space` / `from_unet_space` and `space_factor` (SD, SDXL: VAE latents x the
      VAE's `scaling_factor`, 8 pixels per latent; IF stage I: the image itself in [-1, 1], factor 1);
plus the components it loads (`load_text`, `load_vae`) and the diffusers pipelines the baselines run: img2img for
SDEdit (`img2img_pipeline`), LEDITS++ for the sd and sdxl families only (`ledits_pipeline`,
`model_folder.LEDITS_FAMILIES`). The stages (embed, finetune, sample, previews, SDEdit) call these hooks and contain no
family-specific branch. How a UNet's output becomes the training target and the sampler's input is not a family
property but the UNet's: a UNet with twice the input channels (IF's `learned_range` variance) predicts
(eps or v, variance), see `imagic_steps.diffusion.split_prediction`.

Imagic's interpolation e(a) = a * e_tgt + (1 - a) * e_opt applies to every field a conditioning class lists in
`INTERPOLATED` (those are also what stage A optimises); `FIXED` fields (SDXL's time ids) are copied.

SDXL follows diffusers' StableDiffusionXLPipeline (`encode_prompt`, `_get_add_time_ids`): the penultimate hidden
states of both text encoders concatenated (B, 77, 768 + 1280 for the real model), the pooled projection of encoder
2 (B, 1280), and time ids (original size, crop top-left, target size) = (H, W, 0, 0, H, W) of the image; the
negative prompt is all zeros when the model sets `force_zeros_for_empty_prompt` (SDXL base does), with the same
time ids.

IF follows diffusers' IFPipeline (`encode_prompt` with `clean_caption=False`, i.e. the prompt lower-cased and
stripped): the T5 encoder's last hidden states (B, 77, 4096 for T5-v1.1-XXL) under the tokens' attention mask;
the negative is the empty prompt encoded. Only stage I (64 px) is edited, as Imagic edited Imagen's base model;
its super-resolution stages are applied to the result unchanged (`imagic_steps.upscale`), so a stage II folder
(`IFSuperResolutionPipeline`) is refused as a model to edit.

The prompt encoding belongs to the text encoder, not the family (`TEXT_ENCODERS`): CLIP's is Stable Diffusion's
(padded to 77 tokens, no attention mask), T5's IF's (lower-cased, under the attention mask). An SD or IF folder
may hold the other family's text encoder (model_index.json's `text_encoder` class, the family's
`text_encoder_class`): the coloured-digits models that separate the space from the text encoder
(`imagic_steps.colour_digits.train`, `--text-encoder`) are a latent UNet on T5 and a pixel UNet on CLIP. The stages
encode through the family and so see the encoding the model was trained with. diffusers' pipelines encode prompts
their own way (SD's: T5 without its attention mask; IF's: CLIP under one): SDEdit hands its img2img pipeline the
family's embeddings instead (`img2img_prompt`), and LEDITS++, whose inversion encodes the source prompt inside the
pipeline, is refused on such a model rather than run on embeddings it never saw.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Sequence

import torch

from .errors import PlanError
from .model_folder import (CLIP_ENCODER, FAMILY_TEXT_ENCODERS, LEDITS_FAMILIES, T5_ENCODER, family_name,
                           index_text_encoder, read_model_index)

if TYPE_CHECKING:  # the hooks only need the components at call time: no diffusers / transformers at import
    from .components import SDComponents

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# Conditioning
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Conditioning:
    """A family's prompt conditioning: named tensors with the batch first. Subclasses list their fields in
    `INTERPOLATED` (optimised by stage A, interpolated by stage C) and `FIXED`, and name them in the embed
    artefact with `ARTEFACT_SUFFIXES` (`{prefix}{suffix}`, e.g. `target_embedding`)."""

    INTERPOLATED: ClassVar[tuple[str, ...]] = ()
    FIXED: ClassVar[tuple[str, ...]] = ()
    ARTEFACT_SUFFIXES: ClassVar[dict[str, str]] = {}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def map(self, fn) -> "Conditioning":
        """The same conditioning with `fn` applied to every tensor."""
        return dataclasses.replace(self, **{name: fn(t) for name, t in self.tensors().items()})

    # every family's conditioning has a field `embeds`: token embeddings (B, 77, D)

    @property
    def batch(self) -> int:
        return self.embeds.shape[0]

    @property
    def device(self) -> torch.device:
        return self.embeds.device

    def to(self, device=None, dtype=None) -> "Conditioning":
        return self.map(lambda t: t.to(device=device, dtype=dtype))

    def expand(self, count: int) -> "Conditioning":
        return self.map(lambda t: t.expand(count, *t.shape[1:]))

    def select(self, rows) -> "Conditioning":
        return self.map(lambda t: t[rows])

    def __getitem__(self, rows) -> "Conditioning":
        return self.select(rows)

    def detach(self) -> "Conditioning":
        return self.map(torch.Tensor.detach)

    def optimisable(self) -> "Conditioning":
        """A copy whose INTERPOLATED fields are fresh fp32 leaves that require grad (stage A's parameters)."""
        return dataclasses.replace(self, **{name: getattr(self, name).clone().requires_grad_(True)
                                            for name in self.INTERPOLATED})

    def optimised_tensors(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self.INTERPOLATED]

    @staticmethod
    def cat(items: Sequence["Conditioning"]) -> "Conditioning":
        first = items[0]
        return dataclasses.replace(first, **{name: torch.cat([getattr(item, name) for item in items])
                                             for name in first.tensors()})

    def unet_inputs(self, dtype: torch.dtype) -> dict:
        """The UNet's keyword arguments for this conditioning, cast to the UNet's `dtype`."""
        raise NotImplementedError

    @classmethod
    def artefact_name(cls, name: str, prefix: str) -> str:
        """A field's tensor name in the embed artefact: `{prefix}{suffix}`; FIXED fields, which e_tgt and e_opt
        share, once without the prefix."""
        suffix = cls.ARTEFACT_SUFFIXES[name]
        return suffix.lstrip("_") if name in cls.FIXED else f"{prefix}{suffix}"

    def artefact_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {self.artefact_name(name, prefix): t for name, t in self.tensors().items()}

    @classmethod
    def from_artefact(cls, tensors: dict[str, torch.Tensor], prefix: str) -> "Conditioning":
        return cls(**{name: tensors[cls.artefact_name(name, prefix)] for name in cls.ARTEFACT_SUFFIXES})


@dataclass(frozen=True)
class TokenConditioning(Conditioning):
    """Stable Diffusion 1.x / 2.x: the text encoder's token embeddings (B, 77, D), cross-attended by the UNet."""

    embeds: torch.Tensor

    INTERPOLATED: ClassVar[tuple[str, ...]] = ("embeds",)
    ARTEFACT_SUFFIXES: ClassVar[dict[str, str]] = {"embeds": "_embedding"}

    def unet_inputs(self, dtype: torch.dtype) -> dict:
        return {"encoder_hidden_states": self.embeds.to(dtype)}


@dataclass(frozen=True)
class SDXLConditioning(Conditioning):
    """SDXL: token embeddings (B, 77, D1 + D2), encoder 2's pooled projection (B, P) and the time ids (B, 6)."""

    embeds: torch.Tensor
    pooled: torch.Tensor
    time_ids: torch.Tensor

    INTERPOLATED: ClassVar[tuple[str, ...]] = ("embeds", "pooled")
    FIXED: ClassVar[tuple[str, ...]] = ("time_ids",)
    ARTEFACT_SUFFIXES: ClassVar[dict[str, str]] = {"embeds": "_embedding", "pooled": "_pooled_embedding",
                                                   "time_ids": "_time_ids"}

    def unet_inputs(self, dtype: torch.dtype) -> dict:
        return {"encoder_hidden_states": self.embeds.to(dtype),
                "added_cond_kwargs": {"text_embeds": self.pooled.to(dtype), "time_ids": self.time_ids.to(dtype)}}


CONDITIONING_CLASSES: tuple[type[Conditioning], ...] = (SDXLConditioning, TokenConditioning)  # most fields first


def as_conditioning(value: Conditioning | torch.Tensor) -> Conditioning:
    """A conditioning; a bare tensor is Stable Diffusion's token embeddings (what callers passed before families)."""
    return value if isinstance(value, Conditioning) else TokenConditioning(value)


def conditioning_from_artefact(tensors: dict[str, torch.Tensor], prefix: str) -> Conditioning:
    """The conditioning stored under `prefix` in an embed artefact, its class told by the tensor names present."""
    for cls in CONDITIONING_CLASSES:
        if all(cls.artefact_name(name, prefix) in tensors for name in cls.ARTEFACT_SUFFIXES):
            return cls.from_artefact(tensors, prefix)
    raise KeyError(f"no conditioning named '{prefix}_*' in the artefact ({sorted(tensors)[:6]})")


def interpolate_conditioning(target: Conditioning, optimized: Conditioning, alphas: Sequence[float]) -> Conditioning:
    """e(a) = a * e_tgt + (1 - a) * e_opt for each alpha and every INTERPOLATED field (A rows from two of one row);
    FIXED fields are the target's, repeated. Exact at the ends: e(0) == e_opt and e(1) == e_tgt bit for bit."""
    fields = {}
    for name, t in target.tensors().items():
        o = getattr(optimized, name)
        if name in target.INTERPOLATED:
            a = torch.tensor(list(alphas), dtype=t.dtype, device=t.device).view(-1, *([1] * (t.ndim - 1)))
            fields[name] = a * t + (1 - a) * o
        else:
            if not torch.equal(t, o.to(t.device)):
                raise ValueError(f"the fixed conditioning '{name}' differs between e_tgt and e_opt")
            fields[name] = t.expand(len(alphas), *t.shape[1:])
    return dataclasses.replace(target, **fields)


# --------------------------------------------------------------------------------------------------
# Families
# --------------------------------------------------------------------------------------------------


def tokenize(tokenizer, prompts: list[str]) -> torch.Tensor:
    """Token ids (B, model_max_length), padded and truncated as Stable Diffusion does."""
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids


T5_CONTEXT_TOKENS = 77  # IFPipeline.encode_prompt's max_length: IF's T5 was trained on 77 tokens


@torch.no_grad()
def clip_token_states(components: SDComponents, prompts: list[str]) -> torch.Tensor:
    """Stable Diffusion's prompt encoding: CLIP's last hidden states (B, 77, D) fp32, no attention mask."""
    ids = tokenize(components.tokenizer, prompts).to(components.device)
    return components.text_encoder(ids)[0].float()


@torch.no_grad()
def t5_token_states(components: SDComponents, prompts: list[str]) -> torch.Tensor:
    """IFPipeline's prompt encoding: T5's last hidden states (B, 77, D) fp32 of the prompts lower-cased and stripped,
    under their attention mask."""
    tokens = components.tokenizer([p.lower().strip() for p in prompts], padding="max_length",
                                  max_length=T5_CONTEXT_TOKENS, truncation=True, add_special_tokens=True,
                                  return_tensors="pt").to(components.device)
    return components.text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0].float()


@dataclass(frozen=True)
class TextEncoder:
    """A text encoder an SD or IF folder may hold: its transformers tokenizer and encoder classes, and how prompts
    become token states (B, 77, D) with it."""

    tokenizer_class: str
    encoder_class: str
    token_states: Callable[[SDComponents, list[str]], torch.Tensor]

    def load(self, path: str, torch_dtype: torch.dtype, **kwargs) -> dict:
        """The tokenizer and text encoder of a diffusers folder or hub id (SDComponents field -> module)."""
        import transformers

        return {"tokenizer": getattr(transformers, self.tokenizer_class).from_pretrained(
                    path, subfolder="tokenizer", **kwargs),
                "text_encoder": getattr(transformers, self.encoder_class).from_pretrained(
                    path, subfolder="text_encoder", torch_dtype=torch_dtype, **kwargs)}


# model_index.json's text encoder class -> the text encoder (CLIP_ENCODER: SD's, T5_ENCODER: IF's)
TEXT_ENCODERS = {CLIP_ENCODER: TextEncoder("CLIPTokenizer", CLIP_ENCODER, clip_token_states),
                 T5_ENCODER: TextEncoder("T5Tokenizer", T5_ENCODER, t5_token_states)}


def pipeline_prompt(family: "ModelFamily", components: SDComponents, prompt: str) -> dict:
    """A diffusers pipeline's prompt arguments: `prompt` itself when the family holds its own text encoder
    (`FAMILY_TEXT_ENCODERS`: the pipeline encodes it as the family does), else the family's token states (1, 77, D)
    of it and of the negative (`prompt_embeds`, `negative_prompt_embeds`), which the pipeline would encode its own
    way (module docstring)."""
    if family.text_encoder_class == FAMILY_TEXT_ENCODERS[family.name]:
        return {"prompt": prompt}
    target = family.encode(components, [prompt])
    return {"prompt_embeds": target.embeds, "negative_prompt_embeds": family.unconditional(components, target).embeds}


def refuse_foreign_text_encoder(family: "ModelFamily", pipeline: str) -> None:
    """PlanError when `family` holds another family's text encoder than its own (`FAMILY_TEXT_ENCODERS`): diffusers'
    `pipeline` would encode prompts its own way, not as the model was trained (module docstring)."""
    native = FAMILY_TEXT_ENCODERS[family.name]
    if family.text_encoder_class != native:
        raise PlanError(f"diffusers' {pipeline} encodes prompts for a {native} and this '{family.name}' model has a "
                        f"{family.text_encoder_class}: its prompts would be encoded unlike in training; leave the "
                        "ledits baseline out for it")


@dataclass(frozen=True)
class ModelFamily:
    """The hooks every family has; see the module docstring."""

    name: ClassVar[str] = ""

    def load_text(self, path: str, torch_dtype: torch.dtype, **kwargs) -> dict:
        """The tokenizer(s) and text encoder(s) from a diffusers folder or hub id (SDComponents field -> module);
        the UNet and scheduler every family loads alike."""
        raise NotImplementedError

    def load_vae(self, path: str, torch_dtype: torch.dtype, **kwargs) -> torch.nn.Module | None:
        """The VAE (None in pixel space)."""
        raise NotImplementedError

    def finish_loading(self, components: SDComponents) -> None:
        """Adjust the loaded, frozen components (nothing for Stable Diffusion)."""

    def space_factor(self, components: SDComponents) -> int:
        """Image pixels per UNet-space cell along a side."""
        raise NotImplementedError

    def img2img_kwargs(self) -> dict:
        """Extra arguments of the family's img2img pipeline call (SDEdit)."""
        return {}

    def img2img_prompt(self, components: SDComponents, prompt: str) -> dict:
        """The prompt arguments of the family's img2img pipeline call (SDEdit): the prompt, which it encodes."""
        return {"prompt": prompt}

    def ledits_pipeline(self, components: SDComponents, scheduler):
        """diffusers' LEDITS++ pipeline of the family on the loaded components (no copy, no safety checker); the
        families of `model_folder.LEDITS_FAMILIES` have one, the others refuse with a PlanError."""
        raise PlanError(f"LEDITS++ has no diffusers pipeline for the '{self.name}' model family (only "
                        f"{', '.join(LEDITS_FAMILIES)}); leave the ledits baseline out for model "
                        f"'{components.model_id}'")


@dataclass(frozen=True)
class LatentFamily(ModelFamily):
    """What the latent-diffusion families share: image <-> UNet space through the VAE."""

    def load_text(self, path: str, torch_dtype: torch.dtype, **kwargs) -> dict:
        from transformers import CLIPTextModel, CLIPTokenizer

        return {"tokenizer": CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", **kwargs),
                "text_encoder": CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=torch_dtype,
                                                              **kwargs)}

    def load_vae(self, path: str, torch_dtype: torch.dtype, **kwargs) -> torch.nn.Module:
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=torch_dtype, **kwargs)

    def space_factor(self, components: SDComponents) -> int:
        """The VAE's down-sampling: 2 per down-sampling block (8 for SD's four blocks)."""
        return 2 ** (len(components.vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def to_unet_space(self, components: SDComponents, image: torch.Tensor, mode: str,
                      generator: torch.Generator) -> torch.Tensor:
        """VAE latents (1, C, H/f, W/f) of `image` (1, 3, H, W) in [-1, 1], times the VAE's scaling_factor;
        `mode` "sample" draws from the posterior with `generator`, "mean" takes its mean."""
        vae = components.vae
        posterior = vae.encode(image.to(components.device, vae.dtype)).latent_dist
        latents = posterior.sample(generator=generator) if mode == "sample" else posterior.mean
        return latents.float() * vae.config.scaling_factor

    @torch.no_grad()
    def from_unet_space(self, components: SDComponents, latents: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1] from scaled latents (B, C, h, w)."""
        vae = components.vae
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return images.float().clamp(-1, 1)


@dataclass(frozen=True)
class StableDiffusionFamily(LatentFamily):
    """SD 1.x / 2.x: one CLIP text encoder's last hidden states (B, 77, D) (or a T5's: `text_encoder_class`)."""

    # a key of TEXT_ENCODERS: the family's own (CLIP), or T5 for a latent model on T5
    text_encoder_class: str = FAMILY_TEXT_ENCODERS["sd"]

    name: ClassVar[str] = "sd"

    def load_text(self, path: str, torch_dtype: torch.dtype, **kwargs) -> dict:
        return TEXT_ENCODERS[self.text_encoder_class].load(path, torch_dtype, **kwargs)

    def encode(self, components: SDComponents, prompts: list[str], size: tuple[int, int] | None = None
               ) -> TokenConditioning:
        """The text encoder's token states (B, 77, D) (`TEXT_ENCODERS`)."""
        return TokenConditioning(TEXT_ENCODERS[self.text_encoder_class].token_states(components, prompts))

    def unconditional(self, components: SDComponents, like: Conditioning) -> TokenConditioning:
        """The empty prompt's conditioning (1 row)."""
        return self.encode(components, [""])

    def img2img_pipeline(self, components: SDComponents, scheduler):
        from diffusers import StableDiffusionImg2ImgPipeline

        return StableDiffusionImg2ImgPipeline(
            vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
            unet=components.unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)

    def img2img_prompt(self, components: SDComponents, prompt: str) -> dict:
        """The prompt for CLIP; a T5's embeddings of it and of the empty prompt (`pipeline_prompt`)."""
        return pipeline_prompt(self, components, prompt)

    def ledits_pipeline(self, components: SDComponents, scheduler):
        from diffusers import LEditsPPPipelineStableDiffusion

        refuse_foreign_text_encoder(self, "LEditsPPPipelineStableDiffusion")
        return LEditsPPPipelineStableDiffusion(
            vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
            unet=components.unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False)


@dataclass(frozen=True)
class StableDiffusionXLFamily(LatentFamily):
    """SDXL: two CLIP text encoders (penultimate states concatenated), encoder 2's pooled projection, time ids."""

    force_zeros_for_empty_prompt: bool = True

    name: ClassVar[str] = "sdxl"

    def load_text(self, path: str, torch_dtype: torch.dtype, **kwargs) -> dict:
        from transformers import CLIPTextModelWithProjection, CLIPTokenizer

        return {**super().load_text(path, torch_dtype, **kwargs),
                "tokenizer_2": CLIPTokenizer.from_pretrained(path, subfolder="tokenizer_2", **kwargs),
                "text_encoder_2": CLIPTextModelWithProjection.from_pretrained(
                    path, subfolder="text_encoder_2", torch_dtype=torch_dtype, **kwargs)}

    def finish_loading(self, components: SDComponents) -> None:
        """SDXL's VAE overflows in fp16 (its config sets `force_upcast`): as diffusers' SDXL pipelines do, it runs in
        fp32 (SDXL base: 0.17 GB more than fp16); the other components keep the load dtype."""
        vae = components.vae
        if vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            logger.info("SDXL: the VAE runs in fp32 (force_upcast: it overflows in fp16)")
            torch.nn.Module.to(vae, torch.float32)

    def time_ids(self, components: SDComponents, size: tuple[int, int], pooled_dim: int) -> torch.Tensor:
        """(1, 6): original size, crop top-left (0, 0), target size, all the image's (H, W); checked against the
        UNet's added embedding as diffusers' `_get_add_time_ids` does."""
        ids = [*size, 0, 0, *size]
        unet = components.unet
        expected = unet.add_embedding.linear_1.in_features
        if unet.config.addition_time_embed_dim * len(ids) + pooled_dim != expected:
            raise ValueError(f"the UNet expects an added embedding of {expected} features, the text encoder and time "
                             f"ids give {unet.config.addition_time_embed_dim * len(ids) + pooled_dim}")
        return torch.tensor([ids], dtype=torch.float32, device=components.device)

    @torch.no_grad()
    def encode(self, components: SDComponents, prompts: list[str], size: tuple[int, int] | None = None
               ) -> SDXLConditioning:
        size = size or (components.resolution, components.resolution)
        hidden, pooled = [], None
        for tokenizer, encoder in ((components.tokenizer, components.text_encoder),
                                   (components.tokenizer_2, components.text_encoder_2)):
            output = encoder(tokenize(tokenizer, prompts).to(components.device), output_hidden_states=True)
            if pooled is None and output[0].ndim == 2:  # the projection of the encoder that has one (encoder 2)
                pooled = output[0]
            hidden.append(output.hidden_states[-2])
        embeds = torch.cat(hidden, dim=-1).float()
        time_ids = self.time_ids(components, size, pooled.shape[-1]).expand(len(prompts), -1)
        return SDXLConditioning(embeds, pooled.float(), time_ids)

    def unconditional(self, components: SDComponents, like: Conditioning) -> SDXLConditioning:
        """The negative conditioning (1 row): zeros if the model forces them for an empty prompt, else the empty
        prompt encoded; always `like`'s time ids."""
        time_ids = like.time_ids[:1]
        if self.force_zeros_for_empty_prompt:
            return SDXLConditioning(torch.zeros_like(like.embeds[:1]), torch.zeros_like(like.pooled[:1]), time_ids)
        empty = self.encode(components, [""])
        return SDXLConditioning(empty.embeds, empty.pooled, time_ids)

    def img2img_pipeline(self, components: SDComponents, scheduler):
        from diffusers import StableDiffusionXLImg2ImgPipeline

        return StableDiffusionXLImg2ImgPipeline(
            vae=components.vae, text_encoder=components.text_encoder, text_encoder_2=components.text_encoder_2,
            tokenizer=components.tokenizer, tokenizer_2=components.tokenizer_2, unet=components.unet,
            scheduler=scheduler, requires_aesthetics_score=False,
            force_zeros_for_empty_prompt=self.force_zeros_for_empty_prompt, add_watermarker=False)

    def ledits_pipeline(self, components: SDComponents, scheduler):
        from diffusers import LEditsPPPipelineStableDiffusionXL

        return LEditsPPPipelineStableDiffusionXL(
            vae=components.vae, text_encoder=components.text_encoder, text_encoder_2=components.text_encoder_2,
            tokenizer=components.tokenizer, tokenizer_2=components.tokenizer_2, unet=components.unet,
            scheduler=scheduler, image_encoder=None, feature_extractor=None,
            force_zeros_for_empty_prompt=self.force_zeros_for_empty_prompt, add_watermarker=False)


@dataclass(frozen=True)
class DeepFloydIFFamily(ModelFamily):
    """DeepFloyd IF stage I: a pixel-space UNet (64 px) conditioned on T5 encoder states (or a CLIP's:
    `text_encoder_class`); no VAE."""

    # a key of TEXT_ENCODERS: the family's own (T5), or CLIP for a pixel model on CLIP
    text_encoder_class: str = FAMILY_TEXT_ENCODERS["if"]

    name: ClassVar[str] = "if"
    CONTEXT_TOKENS: ClassVar[int] = T5_CONTEXT_TOKENS

    def load_text(self, path: str, torch_dtype: torch.dtype, **kwargs) -> dict:
        return TEXT_ENCODERS[self.text_encoder_class].load(path, torch_dtype, **kwargs)

    def load_vae(self, path: str, torch_dtype: torch.dtype, **kwargs) -> None:
        return None

    def finish_loading(self, components: SDComponents) -> None:
        """IF's tokenizer config allows T5's 512 tokens; IF truncates at 77, so the truncation warning must too."""
        if components.tokenizer is not None:
            components.tokenizer.model_max_length = self.CONTEXT_TOKENS

    def space_factor(self, components: SDComponents) -> int:
        return 1

    def to_unet_space(self, components: SDComponents, image: torch.Tensor, mode: str,
                      generator: torch.Generator) -> torch.Tensor:
        """The image (1, 3, H, W) in [-1, 1] itself, fp32 on the device (no posterior: `mode`, `generator` unused)."""
        return image.to(components.device, torch.float32)

    def from_unet_space(self, components: SDComponents, images: torch.Tensor) -> torch.Tensor:
        return images.float().clamp(-1, 1)

    def encode(self, components: SDComponents, prompts: list[str], size: tuple[int, int] | None = None
               ) -> TokenConditioning:
        """The text encoder's token states (B, 77, D) (`TEXT_ENCODERS`; IF's T5: IFPipeline's encoding)."""
        return TokenConditioning(TEXT_ENCODERS[self.text_encoder_class].token_states(components, prompts))

    def unconditional(self, components: SDComponents, like: Conditioning) -> TokenConditioning:
        """The empty prompt's conditioning (1 row), IFPipeline's negative."""
        return self.encode(components, [""])

    def img2img_pipeline(self, components: SDComponents, scheduler):
        from diffusers import IFImg2ImgPipeline

        return IFImg2ImgPipeline(tokenizer=components.tokenizer, text_encoder=components.text_encoder,
                                 unet=components.unet, scheduler=scheduler, safety_checker=None,
                                 feature_extractor=None, watermarker=None, requires_safety_checker=False)

    def img2img_kwargs(self) -> dict:
        """IF's caption cleaning needs bs4 and ftfy and changes prompts beyond `encode`'s lower-casing: off."""
        return {"clean_caption": False}

    def img2img_prompt(self, components: SDComponents, prompt: str) -> dict:
        """The prompt for T5; a CLIP's embeddings of it and of the empty prompt (`pipeline_prompt`)."""
        return pipeline_prompt(self, components, prompt)


SD = StableDiffusionFamily()


def family_from_model_index(index: dict, model: str = "this model") -> ModelFamily:
    """The family of a diffusers folder from its model_index.json (`model_folder.family_name`: an IF
    super-resolution stage is refused with a PlanError naming `model`)."""
    name = family_name(index, model)
    if name == StableDiffusionXLFamily.name:
        return StableDiffusionXLFamily(force_zeros_for_empty_prompt=bool(index.get("force_zeros_for_empty_prompt",
                                                                                    True)))
    encoder = index_text_encoder(index)
    encoder = encoder if encoder in TEXT_ENCODERS else None  # unlisted or unknown: the family's own
    if name == DeepFloydIFFamily.name:
        return DeepFloydIFFamily(encoder or FAMILY_TEXT_ENCODERS["if"])
    return SD if encoder in (None, FAMILY_TEXT_ENCODERS["sd"]) else StableDiffusionFamily(encoder)


def detect_family(path: str, model: str | None = None, **kwargs) -> ModelFamily:
    """The family of a model folder or (cached) hub id `path` (`model`: the reference it was resolved from, for
    messages); Stable Diffusion when its model_index.json is not found (the component loading then says what is
    missing)."""
    model = model or path
    if Path(path).is_dir():
        return family_from_model_index(read_model_index(path), model)
    try:
        from huggingface_hub import hf_hub_download

        index_file = hf_hub_download(path, "model_index.json", **kwargs)
    except Exception:  # noqa: BLE001 - offline or unknown: the component loading reports it
        return SD
    return family_from_model_index(read_model_index(Path(index_file).parent), model)
