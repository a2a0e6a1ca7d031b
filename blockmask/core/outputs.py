"""Unit outputs of any structure (a tensor, a tuple, a diffusers ``BaseOutput``), tensor by tensor."""

from __future__ import annotations

from typing import Any, Callable

import torch


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
