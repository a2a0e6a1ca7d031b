"""Input checks of the Gradio handlers (app/gradio_handlers.py): each raises ``gr.Error`` with one
line naming the field, the range and the value received; nothing is changed before they pass."""

from __future__ import annotations

import math

import gradio as gr

from blockmask.viz import Message


def whole(value, what: str, lo: int, hi: int) -> int:
    """An integer in lo..hi from a widget or API value (1.5, 'abc', None, nan are refused)."""
    try:
        f = float(str(value).strip()) if isinstance(value, str) else float(value)
        ok = math.isfinite(f) and f == int(f) and not isinstance(value, bool)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or not lo <= int(f) <= hi:
        raise gr.Error(f"{what} must be a whole number in {lo}..{hi}, got {value!r}.")
    return int(f)


def number(value, what: str, lo: float, hi: float) -> float:
    try:
        f = float(value)
        ok = math.isfinite(f) and lo <= f <= hi and not isinstance(value, bool)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise gr.Error(f"{what} must be a number in {lo:g}..{hi:g}, got {value!r}.")
    return f


def choice(value, what: str, options) -> str:
    if value not in options:
        raise gr.Error(f"{what} must be one of {', '.join(map(str, options))}; got {value!r}.")
    return value


def apply(msgs: list[Message]) -> None:
    """Editor messages: an error means nothing changed and becomes gr.Error; the rest are toasts."""
    for m in msgs:
        if m.level == "error":
            raise gr.Error(m.text)
    for m in msgs:
        (gr.Warning if m.level == "warning" else gr.Info)(m.text)
