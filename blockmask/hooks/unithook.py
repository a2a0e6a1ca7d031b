"""One unit's masked forward as a diffusers hook (:class:`UnitHook`); the execution that drives them all
is :class:`blockmask.hooks.execution.MaskedExecution`."""

from __future__ import annotations

from typing import Any, Callable

from diffusers.hooks import ModelHook

from blockmask.adapters.contracts import BoundContract
from blockmask.core.errors import MaskError
from blockmask.core.forecast import predict, record, terms
from blockmask.core.modes import compiled_body
from blockmask.core.outputs import map_tensors
from blockmask.hooks.branchstates import BranchStates


class UnitHook(ModelHook):
    """The masked forward of one unit (Eq. 3; Eq. 4 under soft gates). Run, store and return; or
    return the branch's cache (``x + cache`` for a residual unit)."""

    _is_stateful = True

    def __init__(self, execution, index: int):
        super().__init__()
        self.execution = execution
        self.index = index
        self.residual = execution.units[index].residual
        # which input/output is which token stream (tuple-output blocks: Flux, SD3, ...)
        self.streams = BoundContract.of(execution.modules[index]) if self.residual else None
        self.states = BranchStates(execution)
        self._body: Callable | None = None
        self.outcome: bool | None = None  # ran (True) or reused (False) in compiled code, until collected

    def body(self, module) -> Callable:
        if self._body is None:
            orig = self.fn_ref.original_forward
            mode = self.execution.mode
            self._body = orig if mode in ("eager", "rowgraph") else compiled_body(module, orig, mode)
        return self._body

    def new_forward(self, module, *args, **kwargs):
        ex, i = self.execution, self.index
        g = ex.gate(i)
        x = self.streams.inputs(args, kwargs) if self.residual else None
        if g is True:
            out = self.body(module)(*args, **kwargs)
            if ex.trace is not None:  # completion order, checked on a pipeline's first call
                ex.trace.append(i)
            if ex.chain is not None and ex.chain.owns(i):  # (blockmask.hooks.chaincache)
                x = ex.chain.take(i, x, out)  # the chain's inputs at its last block; else None, no cache
                keep = x is not None
            else:  # a summed value goes into the reuse steps' sums instead (blockmask.hooks.runsums)
                keep = not (ex.sums is not None and ex.sums.take(i, out)) and ex.stores(i)
            if keep:
                st = self.states.get_state()
                # the buffer to recycle: with a forecast, the value record() drops
                old = (st.cache if st.k_last == ex.step else st.prev) if ex.forecast else st.cache
                # a residual is written straight into the buffer where the execution recycles it
                value = self.streams.residual(out, x, into=ex.recyclable(old)) if self.residual else out
                kept = ex.store(old, value)
                if ex.forecast:
                    record(st, kept, ex.step)
                else:
                    st.cache = kept
            self.tally(True)
            return out
        if g is False:
            return ex.chain.serve(i, x) if ex.chain is not None and ex.chain.owns(i) else self.reused(x)
        cache = self.cached(x)
        fresh = self.body(module)(*args, **kwargs)  # Eq. 4: m * b(x) + (1 - m) * C
        self.tally(True)
        return map_tensors(lambda f, c: g.to(f.dtype) * f + (1 - g.to(f.dtype)) * c, fresh, cache)

    def cached(self, x=None) -> Any:
        """This unit's reused value at the current step in the current branch: its cache (its forecast
        under ``reuse="forecast"``; ``x + cache`` for a residual unit with input x)."""
        ex = self.execution
        st = self.filled_state()
        cache = predict(st, ex.step) if ex.forecast else st.cache
        return self.streams.reuse(cache, x) if self.residual else cache

    def reused(self, x=None) -> Any:
        """:meth:`cached`, counted as a reused call (a hard gate 0; :mod:`blockmask.hooks.shortcuts`)."""
        out = self.cached(x)
        self.tally(False)
        if self.execution.returned is not None:  # a container learning its pattern (blockmask.hooks.containers)
            self.execution.returned.append((self.index, out))
        return out

    def reused_terms(self) -> list[tuple[float, Any]]:
        """A non-residual unit's reused value as a weighted sum ``[(c, value), ...]`` of cached values
        (:func:`blockmask.core.forecast.terms`: the cache alone, or a forecast's two), counted as a
        reused call like :meth:`reused`; for consumers that fold the sum into their own passes."""
        ex = self.execution
        st = self.filled_state()
        out = terms(st, ex.step) if ex.forecast else [(1.0, st.cache)]
        self.tally(False)
        return out

    def filled_state(self):
        """The current branch's state, which must hold a cache (a reuse before any run is an error)."""
        st = self.states.get_state()
        if st.cache is None:
            ex = self.execution
            raise MaskError(f"unit {ex.units[self.index].name} is reused at step {ex.step} but never ran before")
        return st

    def tally(self, ran: bool) -> None:
        """Count this call: :meth:`blockmask.hooks.execution.MaskedExecution.count`."""
        self.execution.count(self, ran)

    def reset_state(self, module):
        if not self.execution.static:  # row graphs hold static cache buffers (see reset())
            self.states.reset()
        return module
