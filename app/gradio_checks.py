"""Input checks of the Gradio handlers (app/gradio_handlers.py): each raises ``gr.Error`` with one
line naming the field, the range and the value received; nothing is changed before they pass."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import gradio as gr

from blockmask.viz import Message
from blockmask.viz.access import MAX_UPLOAD_BYTES, check_upload_size

LOG = logging.getLogger("blockmask.app")


class Refused(gr.Error):
    """``gr.Error`` for a refused input: the visitor sees the message; the server logs one line
    (``refused: …``), never a traceback (any visitor could grow the log)."""

    def __init__(self, message: str, **kw):
        kw.setdefault("print_exception", False)
        super().__init__(message, **kw)
        LOG.warning("refused: %s", " ".join(str(message).split())[:300])


def read_upload(path: Path) -> bytes:
    """An uploaded file's bytes: a regular file within the upload limit (a FIFO or /dev/zero is
    refused unopened); raises BlockmaskError."""
    from blockmask.core.validate import read_bytes

    check_upload_size(path.stat().st_size, path.name)
    return read_bytes(path, "upload", max_bytes=MAX_UPLOAD_BYTES)


def whole(value, what: str, lo: int, hi: int) -> int:
    """An integer in lo..hi from a widget or API value (1.5, 'abc', None, nan are refused)."""
    try:
        f = float(str(value).strip()) if isinstance(value, str) else float(value)
        ok = math.isfinite(f) and f == int(f) and not isinstance(value, bool)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or not lo <= int(f) <= hi:
        raise Refused(f"{what} must be a whole number in {lo}..{hi}, got {value!r}.")
    return int(f)


def number(value, what: str, lo: float, hi: float) -> float:
    try:
        f = float(value)
        ok = math.isfinite(f) and lo <= f <= hi and not isinstance(value, bool)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise Refused(f"{what} must be a number in {lo:g}..{hi:g}, got {value!r}.")
    return f


def choice(value, what: str, options) -> str:
    if value not in options:
        raise Refused(f"{what} must be one of {', '.join(map(str, options))}; got {value!r}.")
    return value


def apply(msgs: list[Message]) -> None:
    """Editor messages: an error means nothing changed and becomes gr.Error; the rest are toasts."""
    for m in msgs:
        if m.level == "error":
            raise Refused(m.text)
    for m in msgs:
        (gr.Warning if m.level == "warning" else gr.Info)(m.text)
