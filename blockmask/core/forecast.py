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


def predict(state, step: int) -> Any:
    """The forecast of the unit's value at ``step`` (the cache itself when it cannot extrapolate)."""
    if state.prev is None or state.k_prev is None or state.k_last is None or not state.k_prev < state.k_last < step:
        return state.cache
    s = (step - state.k_last) / (state.k_last - state.k_prev)
    # F1 + s·(F1 − F0) as one fused pass (lerp from F0 towards F1 by 1 + s): a third of the memory
    # traffic of sub, mul and add (issue 26: time saved per MAC saved), equal to float rounding
    return map_tensors(lambda a, b: torch.lerp(b, a, 1.0 + s), state.cache, state.prev)
