"""Cached masked execution (METHOD.md Eq. 3 and, for training, Eq. 4).

One hook per unit replaces that module *instance's* ``forward``; all hooks share one
:class:`MaskedExecution`, which owns the step index, the CFG branch and the caches:

* ``M[k, i] = 1``: run the unit, store its output in the cache, return it;
* ``M[k, i] = 0``: return the cached output of the last step where the unit ran;
* soft gate ``m_i`` (training, Eq. 4): return ``m_i * fresh + (1 - m_i) * cache``.

A *residual* unit (a whole transformer block, :attr:`blockmask.units.Unit.residual`) caches its
residual ``out − x`` instead and, when reused, returns ``x + cache`` for its current input x.
Units nested inside a reused unit are not called at all (the outer unit's forward never runs).

Caches are reset on entry (``with MaskedExecution(...)``) and by :meth:`reset`, so a cancelled
run never leaks stale features into the next one.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import Any, Callable

import numpy as np
import torch

from .errors import MaskError
from .mask import validate_mask
from .units import Unit, discover_units, unit_modules, wrap_forwards


def map_tensors(fn: Callable[..., torch.Tensor], *outs: Any) -> Any:
    """Apply ``fn`` to corresponding tensors of same-structured unit outputs (tensor, tuple, BaseOutput)."""
    first = outs[0]
    if isinstance(first, torch.Tensor):
        return fn(*outs)
    if isinstance(first, tuple):
        parts = [map_tensors(fn, *p) for p in zip(*outs)]
        return type(first)(*parts) if hasattr(first, "_fields") else type(first)(parts)
    if isinstance(first, dict):  # diffusers BaseOutput is an OrderedDict
        return type(first)(**{k: map_tensors(fn, *(o[k] for o in outs)) for k in first})
    return first


def first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return first_tensor(out[0])
    if isinstance(out, dict):
        return first_tensor(next(iter(out.values())))
    raise TypeError(f"unit output of type {type(out).__name__} holds no tensor")


MODES = ("eager", "compiled", "graph")


def resolve_mode(mode: str, device: torch.device) -> str:
    """eager (always correct), compiled (torch.compile of each unit body), graph (compiled with CUDA
    graphs, CUDA only). Unsupported combinations fall back to eager with a warning."""
    if mode not in MODES:
        raise MaskError(f"unknown execution mode {mode!r}; choose from {', '.join(MODES)}")
    if mode == "graph" and device.type != "cuda":
        import warnings

        warnings.warn("execution mode 'graph' needs CUDA; falling back to eager", stacklevel=3)
        return "eager"
    return mode


def compiled_body(module: torch.nn.Module, orig: Callable, mode: str) -> Callable:
    """torch.compile of a unit's own forward, kept on the module and reused across runs.

    The mask decision stays outside the compiled code, so the number of compilations is bounded by
    the number of units (and input shapes), never by the mask: a learned mask with K distinct rows
    costs no recompilation. The remainder of the model stays eager.
    """
    store = module.__dict__.setdefault("_blockmask_compiled", {})
    if mode not in store:
        store[mode] = torch.compile(orig, mode="reduce-overhead" if mode == "graph" else "default", dynamic=False)
    return store[mode]


class MaskedExecution(contextlib.AbstractContextManager):
    """Drive ``model`` with a K×N mask during a sampling loop.

    Step control: explicit (``set_step(k)`` before each denoiser call: blockmask's own sampler and
    trainer) or ``auto_step=True`` (for diffusers pipelines: a new timestep value starts the next
    step; further calls at the same timestep are further CFG branches, each with its own cache).
    """

    def __init__(self, model: torch.nn.Module, mask: np.ndarray | None = None, *, auto_step: bool = False,
                 clone_cache: bool = False, mode: str = "eager"):
        self.model = model
        self.mode = resolve_mode(mode, next(model.parameters()).device)
        self.units: list[Unit] = discover_units(model)
        self.modules = unit_modules(model, self.units)
        self._residual = [u.residual for u in self.units]
        self.mask = None if mask is None else validate_mask(mask, units=len(self.units))
        self.auto_step = auto_step
        # CUDA-graph replays overwrite their static output buffers: cached outputs must be copies.
        self.clone_cache = clone_cache or self.mode == "graph"
        self.soft: torch.Tensor | None = None  # (N,) relaxed gates (Eq. 4), training only
        self.bypass = False  # True: every unit runs, caches untouched (the frozen reference)
        self.computed = 0  # unit calls that ran, since reset (for tests and readouts)
        self.skipped = 0
        self._stack: contextlib.ExitStack | None = None
        self.reset()

    # --- lifecycle ----------------------------------------------------------------------
    def reset(self) -> None:
        self.step = 0
        self.branch = 0
        self._last_t: float | None = None
        self._caches: dict[int, list[Any]] = {}
        self.computed = self.skipped = 0

    def __enter__(self) -> "MaskedExecution":
        self.reset()
        stack = contextlib.ExitStack()
        stack.enter_context(wrap_forwards(self.modules, self._make_hook))
        if self.auto_step:
            handle = self.model.register_forward_pre_hook(self._pre_forward, with_kwargs=True)
            stack.callback(handle.remove)
            self._sig = inspect.signature(self.model.forward)
        self._stack = stack
        return self

    def __exit__(self, *exc) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        self.reset()

    # --- step control -------------------------------------------------------------------
    def set_step(self, k: int, branch: int = 0) -> None:
        if self.mask is not None and not 0 <= k < self.mask.shape[0]:
            raise MaskError(f"step {k} is outside the mask's {self.mask.shape[0]} steps")
        self.step, self.branch = k, branch

    def _pre_forward(self, module, args, kwargs):
        bound = self._sig.bind_partial(*args, **kwargs)
        t = bound.arguments.get("timestep")
        tv = float(t.flatten()[0]) if isinstance(t, torch.Tensor) else float(t) if t is not None else None
        if self._last_t is None or (tv is not None and tv > self._last_t):
            # first call, or the timestep went back up: a new sampling run starts — fresh caches
            self._caches = {}
            self.step, self.branch = 0, 0
        elif tv != self._last_t:
            self.step, self.branch = self.step + 1, 0
        else:
            self.branch += 1
        self._last_t = tv
        if self.mask is not None and self.step >= self.mask.shape[0]:
            raise MaskError(f"sampling ran more steps than the mask's {self.mask.shape[0]} rows")

    def gate(self, i: int):
        """True (run), False (reuse) or a 0-d tensor (soft gate) for unit i at the current step."""
        if self.bypass:
            return True
        if self.soft is not None:
            return self.soft[i]
        if self.mask is None:
            return True
        return bool(self.mask[self.step, i])

    # --- the hook -----------------------------------------------------------------------
    def _make_hook(self, i: int, orig: Callable) -> Callable:
        if self.mode != "eager":
            orig = compiled_body(self.modules[i], orig, self.mode)

        residual = self._residual[i]

        def forward(*args, **kwargs):
            g = self.gate(i)
            x = (args[0] if args else kwargs["hidden_states"]) if residual else None
            if g is True:
                out = orig(*args, **kwargs)
                if not self.bypass:
                    self._store(i, out - x if residual else out)
                self.computed += 1
                return out
            cache = self._caches.get(self.branch, [None] * len(self.units))[i]
            if cache is None:
                raise MaskError(f"unit {self.units[i].name} is reused at step {self.step} but never ran before")
            if residual:
                cache = x + cache
            if g is False:
                self.skipped += 1
                return cache
            fresh = orig(*args, **kwargs)  # Eq. 4: m * b(x) + (1 - m) * C
            self.computed += 1
            return map_tensors(lambda f, c: g.to(f.dtype) * f + (1 - g.to(f.dtype)) * c, fresh, cache)

        return forward

    def _store(self, i: int, out: Any) -> None:
        caches = self._caches.setdefault(self.branch, [None] * len(self.units))
        if self.clone_cache or torch.is_grad_enabled():
            out = map_tensors(lambda t: t.detach().clone() if self.clone_cache else t.detach(), out)
        caches[i] = out

    # --- helpers for the trainer ----------------------------------------------------------
    @contextlib.contextmanager
    def reference(self):
        """Every unit runs and no cache changes: the frozen model on the same input (Eq. 5's F*)."""
        prev = self.bypass
        self.bypass = True
        try:
            yield
        finally:
            self.bypass = prev

    @contextlib.contextmanager
    def soft_gates(self, m: torch.Tensor):
        """Run with relaxed gates ``m`` (N,) instead of the mask row; caches are read, not written."""
        if m.shape != (len(self.units),):
            raise ValueError(f"soft gates must have shape ({len(self.units)},), got {tuple(m.shape)}")
        self.soft = m
        try:
            yield
        finally:
            self.soft = None

    def caches_state(self, branch: int = 0) -> list[Any]:
        return list(self._caches.get(branch, [None] * len(self.units)))

    def load_caches_state(self, caches: list[Any], branch: int = 0) -> None:
        self._caches[branch] = list(caches)
