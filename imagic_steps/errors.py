"""User-facing errors: each message is one line naming the pair, field or file, and the fix.

Kept free of heavy imports so light jobs (tables, figures) can recognise them without loading torch.
"""


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
