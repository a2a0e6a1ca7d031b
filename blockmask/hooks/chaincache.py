"""Chain caches: a run of transformer blocks reused together is reused as one residual (issue 26: time
saved per MAC saved on the DiT, block caching).

Where a DiT's blocks are called as a chain (each block's output the next block's input) and the mask
reuses all of them at the same steps (block caching), the chain's output at a reuse step is its input
plus the sum of the blocks' reused residuals. Every block ran at the same computed steps, so each
block's reused residual is the same weighted sum of its values at those steps (its cache under
``hold``; a forecast's two, :func:`blockmask.core.forecast.terms`), and the residuals of a chain add
up (telescope) to the chain's: ``Σ_b (out_b − in_b) = out_last − in_first``. So the chain keeps one
residual, ``out_last − in_first``, in its last block's cache, and at a reuse step the first block
returns its input plus that residual's reused value (one fused pass per term) and the others pass
on what the one before returned. Per block and step that saves a store at computed steps and a
``lerp`` and an addition at reuse steps. The output is the per-block one up to float rounding
(another order of additions; tests/test_chaincache.py).

Planned on entry (:func:`plan`) only where all of it holds, else the blocks cache as before:

* a whole run under hard gates (:meth:`blockmask.hooks.execution.MaskedExecution.whole_mask`) in eager
  mode with recycled caches;
* the model's class is declared to call its blocks as a chain (:data:`blockmask.hooks.runsums.CHAINS`),
  every block of the chain is a unit with a single output stream and no torch forward hook;
* at every mask row either every block of the chain runs or none does, and some row reuses them.

A chain not called as one (a block's input is not the block before's output) raises
:class:`blockmask.core.errors.MaskError` (no such call in blockmask's own sampling loop).
"""

from __future__ import annotations

import torch

from blockmask.core.errors import MaskError
from blockmask.core.forecast import terms
from blockmask.core.outputs import same_layout
from blockmask.hooks.runsums import CHAINS


def plan(execution) -> "ChainCache | None":
    """The run's :class:`ChainCache` where every condition of the module docstring holds; else None."""
    m, attr = execution.whole_mask(), CHAINS.get(type(execution.model).__name__)
    if m is None or attr is None or not execution.recycle or execution.static or execution.mode != "eager":
        return None
    chain = list(getattr(execution.model, attr, None) or ())
    index = {id(mod): i for i, mod in enumerate(execution.modules)}
    units = [index.get(id(b)) for b in chain]
    if len(chain) < 2 or None in units or any(b._forward_hooks or b._forward_pre_hooks for b in chain):
        return None
    hooks = [execution.hooks[i] for i in units]
    if not all(h.residual and not h.streams.contract.tuple_output for h in hooks):
        return None
    cols = m[:, units]
    if not (cols.all(axis=1) | ~cols.any(axis=1)).all() or cols.all():
        return None
    return ChainCache(execution, units)


class ChainCache:
    """One run's chain: :meth:`take` at computed steps, :meth:`serve` at reuse steps."""

    def __init__(self, execution, units: list[int]):
        self.execution, self.units = execution, units
        self.position = {i: b for b, i in enumerate(units)}
        self.inputs: dict = {}  # CFG branch key → a copy of the chain's input at the current computed step
        self.spare: dict = {}  # CFG branch key → that copy's buffer, kept for the run
        self.last: tuple | None = None  # (chain position, what it returned or was given) within a call

    def owns(self, i: int) -> bool:
        return i in self.position

    def follow(self, b: int, hidden) -> None:
        """Check that block ``b`` gets what block ``b − 1`` gave (the chain property)."""
        if b > 0 and (self.last is None or self.last[0] != b - 1 or hidden is not self.last[1]):
            raise MaskError("chain cache: the blocks were not called as a chain (each block's output the next's input)")

    def take(self, i: int, inputs, out) -> tuple | None:
        """At a computed step, block ``i`` ran on ``inputs`` ((hidden, encoder)) and returned ``out``:
        the inputs its cache's residual is taken against (the chain's for its last block), or None
        where it keeps no cache (the others: nothing reads theirs)."""
        b, key = self.position[i], self.execution.hooks[i].states.key()
        self.follow(b, inputs[0])
        self.last = (b, out)
        if b == 0:  # a copy in a buffer of the run, not the model's tensor held through the call (the
            # allocator would hand its memory back and fault it in again: docs/PERFORMANCE.md, "Allocator churn")
            x, buf = inputs[0], self.spare.get(key)
            if torch.is_grad_enabled():  # (no in-place write under autograd: the tensor itself)
                self.inputs[key] = x
            else:
                self.inputs[key] = self.spare[key] = buf.copy_(x) if same_layout(buf, x) else x.clone()
        if b < len(self.units) - 1:
            return None
        self.last = None
        return (self.inputs.pop(key), inputs[1])

    def serve(self, i: int, inputs) -> torch.Tensor:
        """At a reuse step, block ``i``'s output: for the first, its input plus the chain's reused
        residual (kept by the last block); for the others, their input (the one before's output)."""
        ex, b = self.execution, self.position[i]
        hidden = inputs[0]
        self.follow(b, hidden)
        if b == 0:
            st = ex.hooks[self.units[-1]].filled_state()
            for c, value in (terms(st, ex.step) if ex.forecast else [(1.0, st.cache)]):
                hidden = torch.add(hidden, value, alpha=c) if hidden is inputs[0] else hidden.add_(value, alpha=c)
        self.last = (b, hidden) if b < len(self.units) - 1 else None
        ex.hooks[i].tally(False)
        return hidden

