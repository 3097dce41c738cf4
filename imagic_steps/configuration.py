"""The workflow config: command-line values typed by the schema, and schema errors as one line.

`snakemake --config alphas=[0,0.5,1]` hands the workflow `["0", "0.5", "1"]`: Snakemake parses `--config` values
with YAML's base loader, which keeps every scalar inside a list or mapping a string. `coerce_to_schema` turns such
strings into the number, integer, boolean or null the schema asks for at that place, and leaves everything else as
it is, so the schema still rejects what is really wrong. `config_error` turns the first schema violation into one
line that names the key, the value and the expected form, instead of jsonschema's dump of the whole config.
Import-light (no torch): the workflow plans with it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

FIX = "set it in your config file or once with --config KEY=VALUE (config/README.md lists every key)"


@dataclass(frozen=True)
class ModelSpec:
    """Which model to load and how: the config's `model:` block (the same keys) and the CLI's model options.

    The one home of the block's defaults: the schema checks the block's form and leaves the defaults to this class.
    """

    id: str = "tiny"  # a preset (locations.MODEL_PRESETS), a local diffusers folder or a hub id
    revision: str | None = None
    dtype: str = "fp32"  # storage dtype of the frozen weights: fp32, fp16 or bf16
    device: str = "cpu"  # cpu, cuda, cuda:N, mps or auto
    channels_last: bool = False  # UNet weights in channels-last memory format (GPU convolution speed)
    compile: bool = False  # run every UNet forward through torch.compile

    @classmethod
    def from_config(cls, block: dict) -> "ModelSpec":
        """From a `model:` block (the schema allows no other keys); keys it leaves out take the defaults above. The
        block's `variants` (settings of the config's variants for this model) are the plan's, not the loader's."""
        return cls(**{key: value for key, value in block.items() if key != "variants"})

    def to_config(self) -> dict:
        """The block with every key filled in: what rules pass to their jobs and plan.json records."""
        return asdict(self)

    def load(self, text_encoders: bool = True):
        """The model's `SDComponents` (imagic_steps.components; imported here, since planning never loads a model);
        `text_encoders=False` leaves the tokenizers and text encoders out."""
        from .model_loading import load_components

        return load_components(self.id, revision=self.revision, device=self.device, dtype=self.dtype,
                               channels_last=self.channels_last, compile_unet=self.compile,
                               text_encoders=text_encoders)


def default_scorer(model_id: str) -> dict:
    """The scorer a config without `scorer:` gets: the digits classifier for the digits model (on the ink and with
    a palette colour estimate for the coloured-digits models), small offline
    random-weight scorers for the random-weight presets (real CLIP would need a download and score noise anyway),
    real CLIP + LPIPS otherwise."""
    from .locations import COLOUR_DIGITS_MODELS, DIGITS_PRESET, is_random_preset

    if model_id == DIGITS_PRESET:
        return {"kind": "digits"}
    if model_id in COLOUR_DIGITS_MODELS:
        return {"kind": "colour_digits"}
    if is_random_preset(model_id):
        return {"tiny": True}
    return {"kind": "clip"}


def dtype_device_problem(dtype: str, device: str, where: str) -> str | None:
    """fp16 weights on the CPU: PyTorch has no fast half-precision CPU kernels, so every stage crawls (an SD-1.5 UNet
    forward at 256 px took 90 s in fp16 against 2.2 s in fp32 and 1.0 s in bf16 on this project's 2-core CPU)."""
    if dtype == "fp16" and device == "cpu":
        return (f"{where}: fp16 weights on the CPU are ~40x slower than fp32 (no half-precision CPU kernels); "
                "use fp32 or bf16 on the CPU, fp16 on a GPU")
    return None


def load_schema(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text(encoding="utf-8"))


def _types(schema: dict) -> list[str]:
    kind = schema.get("type", [])
    return [kind] if isinstance(kind, str) else list(kind)


def _coerce_scalar(value: str, types: list[str]) -> Any:
    """`value` as the first schema type it parses as, or unchanged."""
    text = value.strip()
    for kind in types:
        if kind == "integer":
            try:
                return int(text)
            except ValueError:
                pass
        elif kind == "number":
            try:
                number = float(text)
            except ValueError:
                continue
            if math.isfinite(number):  # 'nan' and 'inf' stay strings, which the schema then refuses
                return number
        elif kind == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        elif kind == "null" and text.lower() in ("null", "none", "~"):
            return None
    return value


def coerce_to_schema(value: Any, schema: dict) -> Any:
    """A copy of `value` with strings converted where `schema` expects a number, integer, boolean or null."""
    if isinstance(value, str):
        types = [t for t in _types(schema) if t != "string"]
        return _coerce_scalar(value, types) if types and "string" not in _types(schema) else value
    if isinstance(value, list):
        items = schema.get("items", {})
        return [coerce_to_schema(item, items) for item in value]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", {})
        extra = extra if isinstance(extra, dict) else {}
        return {key: coerce_to_schema(item, properties.get(key, extra)) for key, item in value.items()}
    return value


def _where(path) -> str:
    where = ""
    for part in path:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    return where or "top level"


def _get(value: Any, path: tuple) -> Any:
    for key in path:
        value = value[key]
    return value


def _expected(error) -> str:
    """What the schema wanted at the failing place, in words."""
    validator, rule = error.validator, error.validator_value
    if validator == "type":
        kinds = [rule] if isinstance(rule, str) else rule
        return "a value of type " + " or ".join(kinds)
    if validator == "enum":
        return "one of " + ", ".join(map(str, rule))
    if validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[validator]
        return f"a value {sign} {rule}"
    if validator == "minProperties":
        return f"a mapping of at least {rule} entry(ies)"
    if validator == "minItems":
        return f"a list of at least {rule} item(s)"
    if validator == "uniqueItems":
        return "a list without repeated items"
    if validator == "minLength":
        return "a non-empty string"
    if validator == "multipleOf":
        return f"a multiple of {rule}"
    if validator == "pattern":
        return f"a string matching {rule}"
    return f"a value satisfying the schema's '{validator}' rule"


def _non_finite(value: Any, path: tuple = ()) -> tuple | None:
    """The path of the first NaN or infinite number in `value` (YAML's .nan / .inf pass a schema's `number`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _non_finite(item, (*path, key))
        if found is not None:
            return found
    return None


def config_error(config: dict, schema: dict) -> str | None:
    """One line for the first schema violation of `config`, or None when it is valid."""
    import jsonschema

    path = _non_finite(config)
    if path is not None:
        return f"error: config ({_where(path)}): {_get(config, path)} is not a finite number; {FIX}"

    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (list(e.absolute_path), e.validator))
    if not errors:
        return None
    error = jsonschema.exceptions.best_match(errors)
    where = _where(error.absolute_path)
    if error.validator == "oneOf" and not error.absolute_path:  # the pairs / tedbench choice
        both = "pairs" in config and "tedbench" in config
        what = "gives both 'pairs' and 'tedbench'" if both else "names no input pairs"
        return (f"error: config (pairs/tedbench): the config {what}; give exactly one: `pairs: SHEET.tsv` or "
                "`tedbench: {json: LIST.json, images: FOLDER}`")
    if error.validator == "required":
        missing = [key for key in error.validator_value if key not in error.instance]
        return f"error: config ({where}): missing key(s) {', '.join(missing)}; {FIX}"
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known)) if known else []
        if known and unknown:
            return (f"error: config ({where}): unknown key(s) {', '.join(unknown)}; known keys here: "
                    f"{', '.join(known)}")
        return f"error: config ({where}): {error.message}; {FIX}"
    value = error.instance
    shown = value if not isinstance(value, float) or math.isfinite(value) else str(value)
    return f"error: config ({where}): {shown!r} is not {_expected(error)}; {FIX}"
