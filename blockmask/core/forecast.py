"""What a reused unit returns: its last computed value (``hold``, METHOD.md Eq. 3) or a first-order
forecast from its last two computed values (``forecast``, METHOD.md §3.1, TaylorSeer-style).

With the unit computed at steps k0 < k1 (values F0, F1) and reused at step k > k1::

    F(k) ≈ F1 + (k − k1) / (k1 − k0) · (F1 − F0)

The forecast changes no MAC count (the extrapolation is elementwise, a few additions per cached
value) and needs one more cached value per unit and CFG branch. Before a unit has been computed
twice, it holds. Steps are mask rows: a unit computed twice within one row (Heun's two calls)
replaces its value without moving ``prev``. The all-ones mask never reuses, so it is the plain
model under either mode. Rectification keeps every value a forecast reads
(:func:`blockmask.core.rectify.rectify` with ``reuse="forecast"``).
"""

from __future__ import annotations

from typing import Any

import torch

from blockmask.core.errors import OptionError
from blockmask.core.outputs import map_tensors

REUSE = ("hold", "forecast")


def check_reuse(reuse: Any) -> str:
    if not isinstance(reuse, str) or reuse not in REUSE:
        raise OptionError(f"reuse must be one of {', '.join(REUSE)}, got {reuse!r}")
    return reuse


def record(state, value: Any, step: int) -> None:
    """Store ``value`` computed at ``step`` as the unit's cache; the previous one becomes ``prev``
    (unless it came from the same step)."""
    if state.k_last is not None and state.k_last != step:
        state.prev, state.k_prev = state.cache, state.k_last
    state.cache, state.k_last = value, step


def reach(state, step: int) -> float | None:
    """How far past the last computed value the forecast at ``step`` goes, in units of the last gap:
    ``s = (step − k1) / (k1 − k0)``; None when it cannot extrapolate (it holds)."""
    if state.prev is None or state.k_prev is None or state.k_last is None or not state.k_prev < state.k_last < step:
        return None
    return (step - state.k_last) / (state.k_last - state.k_prev)


def terms(state, step: int) -> list[tuple[float, Any]]:
    """The forecast at ``step`` as a weighted sum ``Σ c·value`` of the cached values: ``[(1, F1)]``
    when it holds, ``[(1 + s, F1), (−s, F0)]`` when it extrapolates. A consumer that multiplies and adds
    anyway (:mod:`blockmask.hooks.shortcuts`) folds them into its own fused passes; equal to
    :func:`predict` up to float rounding."""
    s = reach(state, step)
    return [(1.0, state.cache)] if s is None else [(1.0 + s, state.cache), (-s, state.prev)]


def predict(state, step: int) -> Any:
    """The forecast of the unit's value at ``step`` (the cache itself when it cannot extrapolate)."""
    s = reach(state, step)
    if s is None:
        return state.cache
    # F1 + s·(F1 − F0) as one fused pass (lerp from F0 towards F1 by 1 + s): a third of the memory
    # traffic of sub, mul and add (issue 26: time saved per MAC saved), equal to float rounding
    return map_tensors(lambda a, b: torch.lerp(b, a, 1.0 + s), state.cache, state.prev)
