"""Relaxed masked execution through a whole sampling run, with gradients through the caches
(for the DiP-GO-style global optimiser, :mod:`blockmask.learning.methods.global_opt`).

:class:`blockmask.hooks.execution.MaskedExecution` keeps one step's graph: its caches are detached and
soft gates never write them. Here every step writes the relaxed value back (Eq. 3 with m ∈ [0, 1]),

    F_i^k = m_ki · b_i(x_i^k) + (1 − m_ki) · C_i,      C_i ← F_i^k,

and nothing is detached, so the loss on the final sample reaches every step's gates through the
latents *and* the caches — which is what makes the memory grow with K.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch

from blockmask.core.outputs import map_tensors
from blockmask.hooks.discover import discover_units, unit_modules
from blockmask.hooks.registry import wrap_forwards


class SoftChain(contextlib.AbstractContextManager):
    """Hooks on every unit; ``gates`` (N,) tensor for the current step, or None (run all, as row 0)."""

    def __init__(self, model: torch.nn.Module):
        self.units = discover_units(model)
        self.modules = unit_modules(model, self.units)
        self.gates: torch.Tensor | None = None
        self.cache: list[Any] = [None] * len(self.units)
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> "SoftChain":
        self.reset()
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(wrap_forwards(self.modules, self._make))
        return self

    def __exit__(self, *exc) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        self.reset()

    def reset(self) -> None:
        self.gates = None
        self.cache = [None] * len(self.units)

    def _make(self, i: int, orig: Callable) -> Callable:
        residual = self.units[i].residual

        def forward(*args, **kwargs):
            x = (args[0] if args else kwargs["hidden_states"]) if residual else None
            out = orig(*args, **kwargs)
            val = out - x if residual else out
            g = None if self.gates is None else self.gates[i]
            if g is not None and self.cache[i] is not None:
                val = map_tensors(lambda f, c: g.to(f.dtype) * f + (1 - g.to(f.dtype)) * c, val, self.cache[i])
            self.cache[i] = val
            return x + val if residual else val

        return forward
