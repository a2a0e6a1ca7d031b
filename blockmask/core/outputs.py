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


def same_layout(a: Any, b: Any) -> bool:
    """Whether two unit outputs have the same structure and each pair of tensors the same shape, dtype
    and device (so ``b`` can be copied into ``a`` in place)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and a.device == b.device)
    if isinstance(a, tuple) and isinstance(b, tuple):
        return len(a) == len(b) and all(same_layout(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_layout(a[k], b[k]) for k in a)
    return a is None and b is None

