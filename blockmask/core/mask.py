"""The K×N binary mask: its checks and content hash, METHOD.md §1. Its JSON file (format
``blockmask/1``) is :class:`blockmask.io.maskfile.MaskFile`.

``M[k, i] = 1``: unit i runs at sampling step k (k = 0 is the noisiest step) and refreshes its
cache; ``0``: it returns the cached output. Row 0 is all ones: there is no cache yet.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from blockmask.core.errors import MaskError


def validate_mask(mask: Any, *, units: int | None = None, steps: int | None = None) -> np.ndarray:
    """Check and convert to a (K, N) bool array; raises MaskError naming the first problem."""
    try:
        raw = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask)
    except (TypeError, ValueError, RecursionError):
        raise MaskError("mask must be a K×N array of 0/1 values (found ragged or non-numeric rows)") from None
    if raw.dtype.kind not in "biuf":  # strings ("1"), objects, None: refused, not coerced
        raise MaskError(f"mask must be a K×N array of 0/1 numbers, got {raw.dtype.kind!r}-kind values "
                        f"({'ragged rows or ' if raw.dtype == object else ''}non-numeric)")
    arr = raw.astype(float)
    if arr.ndim != 2:
        raise MaskError(f"mask must be 2-D (K steps × N units), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise MaskError(f"mask is empty (shape {arr.shape})")
    if np.isnan(arr).any():
        k, i = np.argwhere(np.isnan(arr))[0]
        raise MaskError(f"mask has NaN at step {k}, unit {i}")
    bad = (arr != 0) & (arr != 1)
    if bad.any():
        k, i = np.argwhere(bad)[0]
        raise MaskError(f"mask values must be 0 or 1; found {arr[k, i]:g} at step {k}, unit {i}")
    if steps is not None and arr.shape[0] != steps:
        raise MaskError(f"mask has {arr.shape[0]} steps (rows), expected {steps}")
    if units is not None and arr.shape[1] != units:
        raise MaskError(f"mask has {arr.shape[1]} units (columns), the model has {units}")
    if not arr[0].all():
        off = np.flatnonzero(arr[0] == 0)[:5].tolist()
        raise MaskError(f"row 0 must be all ones (no cache exists before the first step); units {off} are 0")
    return arr.astype(bool)


def mask_hash(mask: np.ndarray) -> str:
    """Content hash of a mask (shape + bits), 16 hex digits."""
    m = np.ascontiguousarray(np.asarray(mask, dtype=bool))
    h = hashlib.sha256(f"{m.shape}".encode())
    h.update(np.packbits(m).tobytes())
    return h.hexdigest()[:16]
