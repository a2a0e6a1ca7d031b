"""Mask-edit handlers of the Gradio demo (app/gradio_demo.py): cell, region, row and column edits from
the browser grid or the form, undo/redo/reset, rectification and the click mode. Like
:mod:`gradio_handlers` they take the per-user :class:`~gradio_handlers.Session` plus widget values, check
every input first (one ``gr.Error`` line, nothing half-applied) and return :func:`quick_view` (state,
grid, readout, stale note): the app runs :func:`~gradio_handlers.after_edit` next for the plots and the
download, so the grid is redrawn without waiting for them.
"""

from __future__ import annotations

import json

import gradio as gr

from blockmask.core.errors import BlockmaskError
from blockmask.viz.presenter import REUSE_LABELS
from gradio_checks import Refused, apply, choice, whole
from gradio_handlers import ACTIONS, Session, quick_view


def _cell(s: Session, k, i) -> tuple[int, int]:
    kk, n = s.editor.shape
    return whole(k, "Step k", 0, kk - 1), whole(i, "Unit i", 0, n - 1)


def grid_edit(s: Session, grid: str):
    """An edit from the browser grid: the grid's value with ``edit = {seq, k0, k1, i0, i1, mode}``.
    Returns :func:`quick_view` (the app then runs :func:`after_edit` for the plots and download)."""
    try:
        e = json.loads(grid)["edit"]
        k0, k1, i0, i1, seq = (e[x] for x in ("k0", "k1", "i0", "i1", "seq"))
        mode = {"toggle": None, "on": True, "off": False}[e.get("mode", "toggle")]
    except (TypeError, ValueError, KeyError):
        raise Refused("The mask grid sent an edit this app cannot read; nothing changed.") from None
    k0, i0 = _cell(s, k0, i0)
    k1, i1 = _cell(s, k1, i1)
    seq = whole(seq, "Edit number", 0, 2**31)
    ed = s.editor
    msgs = ed.toggle(k0, i0) if (k0, i0) == (k1, i1) and mode is None else ed.set_region(k0, k1, i0, i1, mode)
    s.grid_ack = max(s.grid_ack, seq)
    apply(msgs)
    return quick_view(s)


def toggle_cell(s: Session, k, i):
    """Flip cell (step k, unit i)."""
    apply(s.editor.toggle(*_cell(s, k, i)))
    return quick_view(s)


def set_region(s: Session, k0, k1, i0, i1, action: str):
    """Steps k0..k1 × units i0..i1 (inclusive): Toggle, Set computed or Set reused."""
    k0, i0 = _cell(s, k0, i0)
    k1, i1 = _cell(s, k1, i1)
    apply(s.editor.set_region(k0, k1, i0, i1, ACTIONS[choice(action, "Action", list(ACTIONS))]))
    return quick_view(s)


def set_row(s: Session, k, on: bool):
    apply(s.editor.set_row(whole(k, "Step k", 0, s.editor.steps - 1), on))
    return quick_view(s)


def set_column(s: Session, i, on: bool):
    apply(s.editor.set_column(whole(i, "Unit i", 0, s.editor.shape[1] - 1), on))
    return quick_view(s)


def compute_step(s: Session, k):
    return set_row(s, k, True)


def reuse_step(s: Session, k):
    return set_row(s, k, False)


def compute_unit(s: Session, i):
    return set_column(s, i, True)


def reuse_unit(s: Session, i):
    return set_column(s, i, False)


def undo(s: Session):
    apply(s.editor.undo())
    return quick_view(s)


def redo(s: Session):
    apply(s.editor.redo())
    return quick_view(s)


def reset(s: Session):
    apply(s.editor.reset())
    return quick_view(s)


def rectify(s: Session):
    apply(s.editor.rectify(s.ctx))
    return quick_view(s)


def set_mode(s: Session, action: str):
    """What a click / drag on the grid does: Toggle, Set computed or Set reused."""
    s.mode = choice(action, "Action", list(ACTIONS))
    return quick_view(s)


def set_reuse(s: Session, reuse: str):
    """What reused cells return: "hold" (their last value) or "forecast" (first-order, from their last two
    computed values; no MACs). Anything else: one gr.Error line, the mode kept."""
    try:
        msgs = s.editor.set_reuse(reuse)
    except BlockmaskError as e:
        raise Refused(f"{str(e)[0].upper()}{str(e)[1:]}; the mode is kept.") from None
    apply(msgs)
    return quick_view(s)


def reuse_choices() -> list[tuple[str, str]]:
    """(label, mode) of the reuse control."""
    return [(label, mode) for mode, label in REUSE_LABELS.items()]


def reuse_value(s: Session):
    """The reuse control set to the editor's mode (after a mask or point is loaded, the file's)."""
    return gr.update(value=s.editor.reuse)


def show_pre(s: Session, flag: bool):
    s.show_pre = bool(flag)
    return quick_view(s)
