"""User-facing errors: one clear line, no traceback (the CLI prints ``error: <message>`` and exits 2,
the apps show ``str(err)``).

Every problem caused by the user's input is a :class:`BlockmaskError`; the subclasses say which
kind of input it was. Messages name the file and the field (``mask.json: 'num_steps' must be an
integer, got null``), so one line is enough to fix it. Anything else escaping the library is a bug.
"""


class BlockmaskError(Exception):
    """A problem with the user's input (model spec, mask file, option); the message is one line."""

    def __init__(self, message: str = ""):
        super().__init__(" ".join(str(message).split()))  # one line, whatever the parts contained


class OptionError(BlockmaskError):
    """A bad option or argument value (CLI flag, API argument, config field): wrong type, not finite,
    out of range."""


class FileFormatError(BlockmaskError):
    """A file we read (mask, checkpoint, config, prompt embeddings, cache row) that is missing, not a
    regular file, too large, too deeply nested, or has a field of the wrong type or value."""

    def __init__(self, source, message: str, field: str | None = None):
        self.source, self.field = str(source), field
        where = f"{source}: " + (f"{field!r} " if field else "")
        super().__init__(where + message)


class MaskError(FileFormatError):
    """A mask (array or file) that is malformed or does not fit the model / schedule."""

    def __init__(self, message: str, source: str | None = None, field: str | None = None):
        if source is None and field is None:
            self.source, self.field = "", None
            BlockmaskError.__init__(self, message)
        else:
            super().__init__(source or "mask", message, field)


class CheckpointError(FileFormatError):
    """A training checkpoint that is corrupt, incomplete or made with other settings."""


class OutputError(BlockmaskError):
    """An output that cannot be written: missing folder, not writable, a folder where a file goes, or
    another run already writing it (lock file)."""


class CacheError(BlockmaskError):
    """An evaluation cache that cannot be used (not a folder, not writable)."""


class UnsupportedModelError(BlockmaskError):
    """A model class no adapter knows."""


class BlockmaskWarning(UserWarning):
    """A fallback that changes what the run means (a default scheduler, padded mask columns, cast
    weights): shown as one line ``warning: …`` by the CLI and as a warning box by the apps."""


def warn(message: str) -> None:
    """Issue a :class:`BlockmaskWarning` (one line)."""
    import warnings

    warnings.warn(" ".join(str(message).split()), BlockmaskWarning, stacklevel=3)
