"""Our maths against diffusers' own pipelines, on the tiny presets' loaded components (issue 33, items 2, 4, 5).

* Sampling: `sample.denoise` equals diffusers' text-to-image pipeline (StableDiffusionPipeline,
  StableDiffusionXLPipeline, IFPipeline) built on the same modules, with the same initial noise, conditioning,
  guidance, scheduler and per-step noise generators, compared on the latents (IF: the 64 px images) before the
  decode.
* Shared components: SDEdit, LEDITS++ and DDIM inversion leave every loaded module as they found it (an fp16 SDXL
  load, whose fp32 VAE diffusers' SDXL pipelines recast).
* Reconstruction: DDIM inversion and LEDITS++ with nothing to edit return their input within what the maths
  guarantees, measured; and why DDIM inversion runs the plain DDIM ODE both ways, with no x0 clipping (the inverse
  scheduler's, from IF's config) or thresholding (IF's regeneration) in either direction.

The measured figures are printed (pytest -s shows them).
"""

import dataclasses

import pytest
import torch
from conftest import PROMPT

from imagic_steps.diffusion import encode_conditioning, encode_image
from imagic_steps.locations import TINY_IF_PRESET, TINY_PRESET, TINY_SDXL_PRESET
from imagic_steps.sample import denoise, initial_noise, make_scheduler, step_noise_generators
from imagic_steps.variants import SampleParams

PROMPTS = [PROMPT, "a red car on the street"]
SEEDS = [0, 1]
# the default sampler (deterministic DDIM), DDIM with eta 1 and DDPM (the step noise; IF: the learned variance),
# DPM-Solver (multistep) and, on the latent families, Euler ancestral (init_noise_sigma != 1, scaled inputs). Not on
# IF: the sigma samplers (Euler, Euler ancestral, LMS) start at sigma 20,291 on its capped cosine schedule, and give
# NaN (Euler ancestral) or values of 1e5 on tiny-if, in diffusers' pipeline as in ours
SAMPLERS = [("DDIMScheduler", 0.0), ("DDIMScheduler", 1.0), ("DDPMScheduler", 0.0),
            ("DPMSolverMultistepScheduler", 0.0)]
LATENT_SAMPLERS = [("EulerAncestralDiscreteScheduler", 0.0)]
AGREEMENT_TOLERANCE = 1e-6  # max abs difference; measured 0.0 for every case (the same operations in the same order)


def text_to_image_pipeline(components, scheduler):
    """diffusers' text-to-image pipeline of the family on the loaded components (what tests/test_families.py builds)."""
    from diffusers import IFPipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    name = components.family.name
    if name == "sd":
        pipeline = StableDiffusionPipeline(vae=components.vae, text_encoder=components.text_encoder,
                                           tokenizer=components.tokenizer, unet=components.unet, scheduler=scheduler,
                                           safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    elif name == "sdxl":
        family = components.family
        pipeline = StableDiffusionXLPipeline(vae=components.vae, text_encoder=components.text_encoder,
                                             text_encoder_2=components.text_encoder_2, tokenizer=components.tokenizer,
                                             tokenizer_2=components.tokenizer_2, unet=components.unet,
                                             scheduler=scheduler, add_watermarker=False,
                                             force_zeros_for_empty_prompt=family.force_zeros_for_empty_prompt)
    else:
        pipeline = IFPipeline(tokenizer=components.tokenizer, text_encoder=components.text_encoder,
                              unet=components.unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                              watermarker=None, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def diffusers_sample(components, scheduler_name, noise, params):
    """The pipeline's denoised latents (IF: images) for PROMPTS from `noise`, the per-step noise drawn from our
    generators. IFPipeline takes no `latents`: its one method that draws them returns ours instead."""
    pipeline = text_to_image_pipeline(components, make_scheduler(scheduler_name, components.scheduler.config))
    kwargs = dict(num_inference_steps=params.steps, guidance_scale=params.guidance_scale, eta=params.eta,
                  generator=step_noise_generators(SEEDS))
    if components.family.name == "if":
        pipeline.prepare_intermediate_images = lambda *args, **_: noise * pipeline.scheduler.init_noise_sigma
        return pipeline(PROMPTS, output_type="pt", clean_caption=False, **kwargs).images
    return pipeline(PROMPTS, latents=noise, output_type="latent", **kwargs).images


@pytest.mark.parametrize("preset", [TINY_PRESET, TINY_SDXL_PRESET, TINY_IF_PRESET])
def test_our_sampling_equals_diffusers_text_to_image_pipeline(load, preset):
    components = load(preset)
    conditional = encode_conditioning(components, PROMPTS)
    unconditional = components.family.unconditional(components, conditional)
    shape = (1, components.unet.config.in_channels, components.unet.config.sample_size,
             components.unet.config.sample_size)
    noise = torch.cat([initial_noise(seed, shape) for seed in SEEDS])
    differences = {}
    for scheduler_name, eta in SAMPLERS + (LATENT_SAMPLERS if components.vae is not None else []):
        params = SampleParams(scheduler=scheduler_name, steps=4, guidance_scale=3.0, eta=eta)
        ours = denoise(components.unet, make_scheduler(scheduler_name, components.scheduler.config), conditional,
                       unconditional, noise, params, SEEDS)
        theirs = diffusers_sample(components, scheduler_name, noise, params)
        assert ours.shape == theirs.shape and torch.isfinite(ours).all() and ours.abs().max() > 0
        differences[f"{scheduler_name} eta {eta:g}"] = float((ours - theirs.float()).abs().max())
    print(f"\n{preset}: max |ours - diffusers| {differences}")
    assert all(difference <= AGREEMENT_TOLERANCE for difference in differences.values()), differences


# --------------------------------------------------------------------------------------------------
# Shared components: the baselines leave them as they found them (item 2)
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def half_sdxl(preset_cache):
    """tiny-sdxl loaded in fp16: its VAE stays fp32 (force_upcast), the SDXL pipelines' recasting case."""
    from imagic_steps.model_loading import load_components

    return load_components(TINY_SDXL_PRESET, dtype="fp16")


def snapshot(components) -> dict:
    """What later work in the process sees of the loaded modules: each parameter and buffer (the object, its dtype,
    device and values), the modules' training and requires_grad flags, the UNet's attention processors (objects)."""
    state = {}
    for field in ("text_encoder", "text_encoder_2", "vae", "unet"):
        module = getattr(components, field)
        if module is None:
            continue
        tensors = {**dict(module.named_parameters()), **dict(module.named_buffers())}
        state[field] = {
            "tensors": {name: (id(t), t.dtype, t.device, t.requires_grad, t.detach().clone())
                        for name, t in tensors.items()},
            "training": [m.training for m in module.modules()],
        }
    state["processors"] = {name: id(p) for name, p in components.unet.attn_processors.items()}
    return state


def assert_unchanged(before: dict, after: dict, what: str) -> None:
    assert before.keys() == after.keys()
    assert before["processors"] == after["processors"], f"{what} left other attention processors on the UNet"
    for field in before.keys() - {"processors"}:
        assert before[field]["training"] == after[field]["training"], f"{what}: {field}'s training flags"
        old, new = before[field]["tensors"], after[field]["tensors"]
        assert old.keys() == new.keys()
        changed = [name for name in old
                   if old[name][:4] != new[name][:4] or not torch.equal(old[name][4], new[name][4])]
        assert not changed, f"{what} changed {field}: {changed[:3]} ({new[changed[0]][1]}, was {old[changed[0]][1]})"


def test_the_baselines_leave_an_fp16_sdxl_models_components_as_they_found_them(half_sdxl, cat_image_path):
    """diffusers' SDXL img2img pipeline (SDEdit) ended each call with the shared fp32 VAE cast to fp16, and the
    SDXL LEDITS++ pipeline failed on it (fp16 pixels into fp32 weights); DDIM inversion is our own loop."""
    from imagic_steps.ddim_inversion import ddim_inversion_edits
    from imagic_steps.diffusion import decode_latents
    from imagic_steps.images import load_image, pil_to_tensor
    from imagic_steps.ledits import ledits_edits
    from imagic_steps.sdedit import sdedit
    from imagic_steps.variants import DdimInversionParams, LeditsParams, SdeditParams

    model, image = half_sdxl, load_image(cat_image_path, 64)
    assert model.vae.dtype == torch.float32 and model.unet.dtype == torch.float16
    latents = encode_image(model, pil_to_tensor(image), "mean", torch.Generator())
    decoded = decode_latents(model, latents)
    before = snapshot(model)
    sdedits = sdedit(model, image, PROMPT, 0.5, [0, 1], SdeditParams(steps=4))
    assert_unchanged(before, snapshot(model), "SDEdit")
    # each seed's sample is what it is alone: the seeds before it left the VAE as it was
    assert sdedit(model, image, PROMPT, 0.5, [1], SdeditParams(steps=4))[0].tobytes() == sdedits[1].tobytes()
    edits = ledits_edits(model, image, PROMPT, "", [0.0, 5.0], [0], LeditsParams(inversion_steps=4))
    assert edits[(0, 5.0)].size == (64, 64)
    assert_unchanged(before, snapshot(model), "LEDITS++")
    ddim_inversion_edits(model, image, PROMPT, None, [1.0, 3.0], DdimInversionParams(steps=4))
    assert_unchanged(before, snapshot(model), "DDIM inversion")
    assert torch.equal(decode_latents(model, latents), decoded)  # later work decodes as before, in fp32


def test_kept_weights_restores_the_very_tensors_of_a_module_cast_in_place():
    from imagic_steps.components import kept_weights

    module = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3))
    weight = module[0].weight
    before = {name: t.clone() for name, t in module.state_dict().items()}
    with kept_weights(module):
        module.half()
        module[0].weight.data.add_(1)
    assert module[0].weight is weight and weight.dtype == torch.float32
    assert all(torch.equal(before[name], t) for name, t in module.state_dict().items())


# --------------------------------------------------------------------------------------------------
# Reconstruction: DDIM inversion (items 4, 5)
# --------------------------------------------------------------------------------------------------


class TimeOnlyUNet(torch.nn.Module):
    """A UNet stand-in whose noise prediction depends on the timestep only, E sin(t / 37) + F (IF: and a variance
    half): the case where a DDIM inversion step and the regeneration step back see the same prediction, so that
    with exact arithmetic the round trip is the identity, unless x0 is clipped or thresholded on the way."""

    def __init__(self, unet, shape):
        super().__init__()
        self.config = unet.config
        generator = torch.Generator().manual_seed(0)
        self.e, self.f = (torch.randn((1, unet.config.out_channels, *shape), generator=generator) for _ in range(2))

    @property
    def dtype(self):
        return torch.float32

    def forward(self, sample, timestep, **_):
        prediction = self.e * torch.sin(torch.as_tensor(timestep, dtype=torch.float32) / 37) + self.f
        return type("Output", (), {"sample": prediction.expand(sample.shape[0], -1, -1, -1)})


def round_trip(components, pixels, conditioning, steps):
    """DDIM inversion under `conditioning`, then regeneration under it at guidance 1 (what `ddim_inversion_edits`
    does for the source prompt), in UNet space: (the latents back, the input's)."""
    from imagic_steps.ddim_inversion import invert, ode_scheduler_config
    from imagic_steps.variants import DdimInversionParams

    x_0 = encode_image(components, pixels, "mean", torch.Generator())
    x_T = invert(components, pixels, conditioning, DdimInversionParams(steps=steps))
    back = denoise(components.unet, make_scheduler("DDIMScheduler", ode_scheduler_config(components)), conditioning,
                   conditioning, x_T, SampleParams(steps=steps, guidance_scale=1.0), [0])
    return back, x_0


# float32 rounding, amplified by 1 / sqrt(alpha_bar) (up to 32 at IF's noisiest inverted step); measured max
# |x_0 - back|: tiny-sdxl 1.8e-06 (10 steps), 6.1e-06 (50); tiny-if 1.7e-06, 1.0e-05; tiny-if with its config's
# clip_sample (the code before issue 33): 1.15 (x0 leaves [-1, 1] on the way and is clipped)
EXACT_ROUND_TRIP = 1e-4


@pytest.mark.parametrize("preset", [TINY_SDXL_PRESET, TINY_IF_PRESET])
def test_ddim_inversion_round_trip_is_exact_when_the_prediction_does_not_depend_on_the_sample(load, preset,
                                                                                              cat_tensor, monkeypatch):
    from imagic_steps import ddim_inversion

    model = load(preset)
    conditioning = encode_conditioning(model, [PROMPT])
    latent_side = model.resolution // model.space_factor
    stub = dataclasses.replace(model, unet=TimeOnlyUNet(model.unet, (latent_side, latent_side)))
    errors = {}
    for steps in (10, 50):
        back, x_0 = round_trip(stub, cat_tensor, conditioning, steps)
        errors[steps] = float((back - x_0).abs().max())
    if preset == TINY_IF_PRESET:  # the model's own x0 processing (IF: clip_sample) breaks it
        monkeypatch.setattr(ddim_inversion, "ode_scheduler_config", lambda c: dict(c.scheduler.config))
        back, x_0 = round_trip(stub, cat_tensor, conditioning, 50)
        errors["clipped x0, 50"] = float((back - x_0).abs().max())
        assert errors["clipped x0, 50"] > 0.5
    print(f"\n{preset}: max |x_0 - round trip| with a time-only prediction, by steps: {errors}")
    assert errors[10] <= EXACT_ROUND_TRIP and errors[50] <= EXACT_ROUND_TRIP


# Random weights: the round trip is exact only where the prediction at x_t equals the one at x_{t-1}; a random UNet's
# changes along the trajectory at every step, so tiny-sdxl / tiny-if do not reconstruct (pixels would say nothing
# more: the random VAE alone loses the image, 0.14-0.36 mean pixel error). Stated instead, in UNet space: the round
# trip stays much closer to the input than the same regeneration from fresh noise does (the inversion carries the
# input), and its error is pinned at 1.5x the measured (mean |x_0 - back|, 10 steps, cat image): tiny-sdxl 0.67 vs
# 6.8 from noise (x_0's mean |value|: 0.037), tiny-if 1.04 vs 5.8 (x_0: 0.28). A trained model (the test after):
# 0.016 mean pixel error at 20 steps.
RANDOM_WEIGHTS_ROUND_TRIP = {TINY_SDXL_PRESET: 1.0, TINY_IF_PRESET: 1.6}


@pytest.mark.parametrize("preset", [TINY_SDXL_PRESET, TINY_IF_PRESET])
def test_ddim_inversion_round_trip_on_the_random_tiny_models(load, preset, cat_tensor):
    from imagic_steps.ddim_inversion import ode_scheduler_config

    model = load(preset)
    conditioning = encode_conditioning(model, [PROMPT])
    back, x_0 = round_trip(model, cat_tensor, conditioning, 10)
    fresh = denoise(model.unet, make_scheduler("DDIMScheduler", ode_scheduler_config(model)), conditioning,
                    conditioning, initial_noise(0, tuple(x_0.shape)), SampleParams(steps=10, guidance_scale=1.0), [0])
    error, from_noise = float((back - x_0).abs().mean()), float((fresh - x_0).abs().mean())
    print(f"\n{preset}: mean |x_0 - round trip| {error:.3f}, from fresh noise {from_noise:.3f}, "
          f"mean |x_0| {float(x_0.abs().mean()):.3f}")
    assert error <= RANDOM_WEIGHTS_ROUND_TRIP[preset] and error < from_noise / 4


# colour-digits-pixel (IF family, trained, shipped), red_3.png, 20 steps, mean |pixel error| in [0, 1] units, measured:
# the plain DDIM ODE both ways 0.016; the model's own sampler settings both ways (before issue 33: the inverse
# scheduler clipped x0 as its config says) 0.056; with IF stage I's dynamic thresholding in the config (the
# regeneration thresholds, the inverse scheduler, which has no thresholding, clips) 0.073. Over the four
# colour-digits images: 0.010-0.033, 0.049-0.075, 0.058-0.087 (50 steps: 0.006-0.011, 0.038-0.050, 0.049-0.27).
PLAIN_ODE_RECONSTRUCTION = 0.025
IF_THRESHOLDING = {"thresholding": True, "dynamic_thresholding_ratio": 0.95, "sample_max_value": 1.5}


def test_ddim_inversion_runs_the_plain_ode_both_ways_because_it_reconstructs_best(load, monkeypatch):
    """Item 4: the inversion and the regeneration process x0 alike, not at all (`ddim_inversion.ode_scheduler_config`):
    a trained pixel-space model reconstructs its input 3.5x closer than with its own sampler's clipping, 4.5x closer
    than with IF's thresholding in the regeneration and clipping in the inversion, as the code did before."""
    from diffusers import DDPMScheduler

    from imagic_steps import ddim_inversion
    from imagic_steps.images import load_image, pil_to_tensor
    from imagic_steps.variants import DdimInversionParams

    model = load("colour-digits-pixel")
    image = load_image("config/images/colour_digits/red_3.png", model.resolution)
    pixels, params = pil_to_tensor(image), DdimInversionParams(steps=20)
    source = encode_conditioning(model, ["a red three"])

    def error(components) -> float:
        x_T = ddim_inversion.invert(components, pixels, source, params)
        back = ddim_inversion.regenerate(components, x_T, source, source, 1.0, params)
        return float((back - pixels).abs().mean() / 2)

    plain = error(model)
    with monkeypatch.context() as patch:  # the model's own x0 processing in both directions
        patch.setattr(ddim_inversion, "ode_scheduler_config", lambda components: dict(components.scheduler.config))
        clipped = error(model)
        thresholded = error(dataclasses.replace(model, scheduler=DDPMScheduler.from_config(
            {**model.scheduler.config, **IF_THRESHOLDING})))
    print(f"\ncolour-digits-pixel DDIM round trip ({params.steps} steps), mean |pixel error|: plain ODE {plain:.4f}, "
          f"its own clipping {clipped:.4f}, IF's thresholding {thresholded:.4f}")
    assert plain <= PLAIN_ODE_RECONSTRUCTION and plain < clipped / 2 and plain < thresholded / 2


# --------------------------------------------------------------------------------------------------
# Reconstruction: LEDITS++ (item 5; SDXL: IF has no LEDITS++ pipeline, model_folder.LEDITS_FAMILIES is sd and sdxl,
# and tests/test_baselines.py::test_ledits_families_are_those_with_a_pipeline pins that it is refused)
# --------------------------------------------------------------------------------------------------

RETRACE_TOLERANCE = 1e-4  # float32 rounding over the retraced steps; measured 5.8e-06 (tiny-sdxl, 10 steps)
# mean |x_0 - output| in latent space, tiny-sdxl, cat image, 10 inversion steps: measured 0.98 (x_0's mean |value|
# 0.037), pinned at 1.5x: what the last three (deterministic) steps of a random UNet's denoising give
RANDOM_WEIGHTS_LEDITS = 1.5


def test_ledits_with_nothing_to_edit_retraces_its_inversion_then_denoises(load, cat_image_path, monkeypatch):
    """LEDITS++'s edit-friendly inversion stores, per step, the noise that makes the sampler (DPM-Solver++ SDE,
    order 2) land exactly on the inversion's latents when its noise prediction is the inversion's: with an empty
    source prompt and edit guidance 0 both are the unconditional prediction. So the edit call retraces the inversion
    to float rounding, except where the pipeline keeps no noise: diffusers' SDXL pipeline zeroes the last
    `num_zero_noise_steps` (3) noise maps, and the last step goes to sigma 0; there the model's own deterministic
    denoising takes over. That is the reconstruction guarantee, and on random weights it is a poor one (stated
    below); on the trained digits model (SD) LEDITS++ reconstructs within 0.021 mean pixel error of the input, the VAE
    alone 0.016 (tests/test_baselines.py)."""
    import diffusers.pipelines.ledits_pp.pipeline_leditspp_stable_diffusion_xl as ledits_xl

    from imagic_steps.images import load_image, pil_to_tensor
    from imagic_steps.ledits import intersect_mask, kept_attention_processors, ledits_pipeline
    from imagic_steps.components import kept_weights
    from imagic_steps.variants import LeditsParams

    model = load(TINY_SDXL_PRESET)
    image, params = load_image(cat_image_path, 64), LeditsParams(inversion_steps=10)
    pipeline = ledits_pipeline(model)
    inverted, retraced = [], []
    compute_noise = ledits_xl.compute_noise

    def recording(scheduler, previous, latents, timestep, prediction, eta):
        noise, corrected = compute_noise(scheduler, previous, latents, timestep, prediction, eta)
        inverted.append(corrected.clone())  # x_{t-1} as the inversion leaves it, noisiest first
        return noise, corrected

    def on_step(_pipeline, _index, _timestep, tensors):
        retraced.append(tensors["latents"].clone())
        return {}

    monkeypatch.setattr(ledits_xl, "compute_noise", recording)
    with torch.inference_mode(), kept_attention_processors(model.unet), kept_weights(*model.frozen_modules()):
        pipeline.invert(image=image, source_prompt="", source_guidance_scale=params.source_guidance_scale,
                        num_inversion_steps=params.inversion_steps, skip=params.skip,
                        generator=torch.Generator().manual_seed(0), height=64, width=64)
        output = pipeline(editing_prompt=[PROMPT], edit_guidance_scale=[0.0], edit_threshold=[params.edit_threshold],
                          edit_warmup_steps=[params.edit_warmup_steps], reverse_editing_direction=[False],
                          generator=torch.Generator().manual_seed(0), output_type="latent",
                          use_intersect_mask=intersect_mask(pipeline, warn=False), use_cross_attn_mask=False,
                          callback_on_step_end=on_step).images
    zero_noise_steps = 3  # LEditsPPPipelineStableDiffusionXL.invert's num_zero_noise_steps default
    assert len(inverted) == len(retraced) == params.inversion_steps
    kept = params.inversion_steps - zero_noise_steps
    retrace_error = max(float((a - b).abs().max()) for a, b in zip(inverted[:kept], retraced[:kept]))
    x_0 = encode_image(model, pil_to_tensor(image), "mean", torch.Generator())  # the pipeline encodes the mode
    error = float((output - x_0).abs().mean())
    print(f"\nLEDITS++ tiny-sdxl, nothing to edit: the first {kept} of {params.inversion_steps} steps retrace the "
          f"inversion to {retrace_error:.2g}; then |output - x_0| mean {error:.3f} "
          f"(x_0: {float(x_0.abs().mean()):.3f})")
    assert retrace_error <= RETRACE_TOLERANCE
    assert float((inverted[kept] - retraced[kept]).abs().max()) > 1e-2  # no noise map: the model denoises
    assert error <= RANDOM_WEIGHTS_LEDITS
