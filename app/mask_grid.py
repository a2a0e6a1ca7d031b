"""The editable mask as a browser-side canvas (Streamlit custom component v2, no build step).

A click or a box drag changes the cells in the browser at once and reports the edit to Python
(trigger value ``edit``); Python applies it with :class:`blockmask.viz.MaskEditor`, the single source
of truth, and sends the mask back. The JavaScript and CSS live next to this file in ``components/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import streamlit as st

_DIR = Path(__file__).parent / "components"
_GRID = st.components.v2.component("blockmask_mask_grid", js=(_DIR / "mask_grid.js").read_text(),
                                   css=(_DIR / "mask_grid.css").read_text())
KEY = "mask_grid"
MODES = {None: "toggle", True: "on", False: "off"}  # editor value → the grid's mode name


def mask_grid(payload: dict, on_edit: Callable[[], None]):
    """Mount the grid (``payload`` from :func:`blockmask.viz.figures.grid_payload`)."""
    return _GRID(data=payload, key=KEY, on_edit_change=on_edit)


def pending_edit() -> dict | None:
    """The edit the browser just sent (inside the component's callback), or None."""
    v = st.session_state.get(KEY)
    if v is None:
        return None
    return v.get("edit") if isinstance(v, dict) else getattr(v, "edit", None)


def parse_edit(edit, shape: tuple[int, int]) -> tuple[int, int, int, int, bool | None, int] | None:
    """(k0, k1, i0, i1, value, seq) from the browser's edit, clipped to the mask; None when malformed."""
    try:
        k0, k1, i0, i1, seq = (int(edit[x]) for x in ("k0", "k1", "i0", "i1", "seq"))
        value = {"toggle": None, "on": True, "off": False}[edit.get("mode", "toggle")]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    k_steps, n = shape
    k0, k1 = sorted((max(0, min(k_steps - 1, k0)), max(0, min(k_steps - 1, k1))))
    i0, i1 = sorted((max(0, min(n - 1, i0)), max(0, min(n - 1, i1))))
    return k0, k1, i0, i1, value, seq
