"""User-facing errors: each message is one line naming the pair, field or file, and the fix.

Kept free of heavy imports so light jobs (tables, figures) can recognise them without loading torch.
"""

import os


class ImageError(ValueError):
    """An input image that cannot be used; names the file and the fix."""


class VariantError(ValueError):
    """A variant definition that cannot be used; names the variant, the field and the fix."""


class PlanError(ValueError):
    """A sheet or config problem found before any job runs; names the pair / field and the fix."""


class ModelNotAvailableError(RuntimeError):
    """A model reference that cannot be resolved; says how to fix it."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or inf loss; says at which step."""


USER_ERRORS = (ImageError, VariantError, PlanError, ModelNotAvailableError, NonFiniteLossError)


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set (as huggingface_hub reads it: any value but empty or 0), read now, so that
    the words of a "not available" message follow the job's environment."""
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


def first_line(error: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none): what a one-line error quotes."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
