"""Masks at any step count: a (K, N) mask made for one schedule, resampled to another schedule's K′ rows
by aligning rows on *noise levels* (the scheduler's timesteps or sigmas), never on call order.

Row j of the new schedule, at noise level ``ℓ′_j``, takes the row of the source schedule that was in
force at that level: the last source row whose level is ``≥ ℓ′_j`` (the nearest earlier-or-equal
noise level; a run goes from high noise to low). Levels above the source's first take row 0. Row 0
of the result is all ones: a run starts with empty caches.

Consequences (tested): K → K on the same schedule is the identity; a schedule that starts late
(img2img with ``strength < 1``) gets the rows of the noise levels it really visits.
Pure functions: arrays in, arrays out.
"""

from __future__ import annotations

import numpy as np

from blockmask.core.errors import MaskError
from blockmask.core.mask import validate_mask


def check_levels(levels, name: str = "levels") -> np.ndarray:
    """(K,) float noise levels of a run's rows, non-increasing (high noise first)."""
    lv = np.asarray(levels, dtype=float).reshape(-1)
    if lv.size == 0 or not np.isfinite(lv).all():
        raise MaskError(f"{name} must be a non-empty list of finite noise levels")
    if (np.diff(lv) > 0).any():
        raise MaskError(f"{name} must go from high noise to low (non-increasing), got {lv.tolist()[:6]}...")
    return lv


def align_rows(src_levels, dst_levels) -> np.ndarray:
    """(K′,) int: for each destination row, the source row in force at its noise level."""
    src = check_levels(src_levels, "source levels")
    dst = check_levels(dst_levels, "target levels")
    # last i with src[i] >= dst[j]: on the ascending -src, the rightmost position with -src[i] <= -dst[j]
    idx = np.searchsorted(-src, -dst, side="right") - 1
    return np.clip(idx, 0, len(src) - 1)


def resample_mask(mask, src_levels, dst_levels) -> np.ndarray:
    """The (K, N) ``mask`` made at ``src_levels`` (K,) as a (K′, N) mask for ``dst_levels`` (K′,)."""
    m = validate_mask(mask)
    if len(np.asarray(src_levels).reshape(-1)) != m.shape[0]:
        raise MaskError(f"mask has {m.shape[0]} rows but {len(np.asarray(src_levels).reshape(-1))} source levels")
    out = m[align_rows(src_levels, dst_levels)].copy()
    out[0] = True  # the first call of a run has nothing cached
    return out


def even_levels(k: int, high: float, low: float) -> np.ndarray:
    """K evenly spaced levels from ``high`` to ``low``: the rows of a mask that records no schedule."""
    return np.linspace(float(high), float(low), int(k))
