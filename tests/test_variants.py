import pytest

from imagic_steps.variants import PRESETS, VariantError, resolve_variant


def test_presets_carry_their_documented_settings():
    original = resolve_variant("original")
    assert (original.embed.steps, original.embed.lr) == (500, 1e-3)
    assert (original.finetune.steps, original.finetune.lr, original.finetune.mode) == (1000, 2e-6, "full")
    assert (original.sample.scheduler, original.sample.steps, original.sample.guidance_scale) == ("DDIMScheduler", 50, 7.5)
    assert original.alphas == (1.2,)
    modified = resolve_variant("modified")
    assert (modified.embed.steps, modified.embed.lr, modified.finetune.lr) == (1000, 5e-4, 1e-7)
    assert modified.sample.scheduler == "EulerDiscreteScheduler" and modified.sample.steps == 20
    assert modified.sample.init_timestep_rate > 0
    paper = resolve_variant("paper")
    assert (paper.embed.steps, paper.embed.lr, paper.finetune.steps, paper.finetune.lr) == (1000, 2e-3, 1500, 5e-7)
    pinkney = resolve_variant("pinkney")
    assert (pinkney.sample.steps, pinkney.sample.guidance_scale, pinkney.finetune.lr) == (45, 3.0, 1e-6)
    assert min(pinkney.alphas) == 0.8 and max(pinkney.alphas) == 1.1


def test_user_variant_overrides_a_preset_field_and_keeps_the_rest():
    variant = resolve_variant("quick", {"preset": "paper", "embed": {"steps": 20}, "finetune": {"mode": "lora", "lr": "1e-4"}})
    assert variant.name == "quick"
    assert variant.embed.steps == 20 and variant.embed.lr == 2e-3
    assert variant.finetune.mode == "lora" and variant.finetune.lr == 1e-4
    assert variant.finetune.steps == 1500
    assert PRESETS["paper"]["embed"]["steps"] == 1000  # presets are not mutated


@pytest.mark.parametrize(
    "spec,words",
    [
        ({"preset": "nope"}, "unknown preset"),
        ({"embed": {"stepz": 3}}, "(embed): unknown field"),
        ({"sampler": {}}, "unknown field"),
        ({"embed": {"lr": 0}}, "embed.lr"),
        ({"finetune": {"steps": -1}}, "finetune.steps"),
        ({"embed": {"steps": 2.5}}, "embed.steps"),
        ({"sample": {"scheduler": "FooScheduler"}}, "sample.scheduler"),
        ({"sample": {"guidance_scale": -1}}, "sample.guidance_scale"),
        ({"sample": {"init_timestep_rate": 1.5}}, "sample.init_timestep_rate"),
        ({"sample": {"steps": 0}}, "sample.steps"),
        ({"alphas": []}, "alphas"),
        ({"finetune": {"mode": "half"}}, "finetune.mode"),
        ({"resolution": 100}, "resolution"),
        ({"embed": {"lr": float("nan")}}, "(embed.lr): nan is invalid; use a finite number"),
        ({"sample": {"guidance_scale": float("inf")}}, "(sample.guidance_scale): inf"),
        ({"finetune": {"lora_alpha": float("nan")}}, "(finetune.lora_alpha)"),
        ({"finetune": {"steps": 10**12}}, "(finetune.steps): 1000000000000 is invalid; use at most"),
        ({"embed": {"seed": 2**70}}, "(embed.seed)"),
        ({"alphas": [0.0, float("nan")]}, "(alphas): nan"),
        ({"alphas": [1e16]}, "(alphas)"),
    ],
)
def test_bad_variant_fields_name_the_variant_and_field(spec, words):
    with pytest.raises(VariantError) as info:
        resolve_variant("mine", {"preset": "original", **spec})
    assert "mine" in str(info.value) and words in str(info.value)
