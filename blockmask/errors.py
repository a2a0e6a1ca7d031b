"""User-facing errors: one clear line, no traceback (the CLI and apps print ``str(err)``)."""


class BlockmaskError(Exception):
    """A problem with the user's input (model spec, mask file, option); the message is one line."""


class MaskError(BlockmaskError):
    """A mask (array or file) that is malformed or does not fit the model / schedule."""


class UnsupportedModelError(BlockmaskError):
    """A model class no adapter knows."""
