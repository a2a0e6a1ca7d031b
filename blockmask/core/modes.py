"""Execution modes of a masked denoiser (:class:`blockmask.hooks.execution.MaskedExecution`): which modes
exist, the fallback where one cannot run, and the compiled unit bodies of ``compiled`` / ``graph``."""

from __future__ import annotations

import warnings
from typing import Callable

import torch

from blockmask.core.errors import MaskError


MODES = ("eager", "compiled", "graph", "rowgraph")


def resolve_mode(mode: str, device: torch.device, *, replay_factory=None) -> str:
    """eager (always correct), compiled (torch.compile of each unit body), graph (compiled with CUDA
    graphs, CUDA only), rowgraph (one CUDA graph of the whole forward per distinct mask row,
    :mod:`blockmask.hooks.rowgraph`; CUDA only, or a replay factory in tests). Unsupported combinations
    fall back to eager with a warning."""
    if mode not in MODES:
        raise MaskError(f"unknown execution mode {mode!r}; choose from {', '.join(MODES)}")
    if mode in ("graph", "rowgraph") and device.type != "cuda" and replay_factory is None:
        warnings.warn(f"execution mode {mode!r} needs CUDA; falling back to eager", stacklevel=3)
        return "eager"
    return mode


def compiled_body(module: torch.nn.Module, orig: Callable, mode: str) -> Callable:
    """torch.compile of a unit's own forward, kept on the module and reused across runs.

    The mask decision stays outside the compiled code, so the number of compilations is bounded by
    the number of units (and input shapes), never by the mask: a learned mask with K distinct rows
    costs no recompilation. The remainder of the model stays eager. A body is reused only while the
    forward it compiled is still the one beneath the hook (another hook added or removed under
    blockmask's changes it, and the body is compiled anew).
    """
    store = module.__dict__.setdefault("_blockmask_compiled", {})
    target = getattr(orig, "__func__", orig)  # a bound method is made anew on each access: key its function
    kept = store.get(mode)
    if kept is None or kept[0] is not target:
        kept = (target, torch.compile(orig, mode="reduce-overhead" if mode == "graph" else "default", dynamic=False))
        store[mode] = kept
    return kept[1]
