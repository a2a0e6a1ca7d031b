"""One validator for numeric options (CLI flags, API arguments, config fields): finite, in range,
integer where it must be. Every failure is a :class:`BlockmaskError` naming the option."""

from __future__ import annotations

import math
import numbers

from .errors import BlockmaskError


def check_int(name: str, value, *, low: int | None = None, high: int | None = None) -> int:
    """``value`` as an int (bools, floats and strings refused), within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise BlockmaskError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if low is not None and v < low:
        raise BlockmaskError(f"{name} must be >= {low}, got {v}")
    if high is not None and v > high:
        raise BlockmaskError(f"{name} must be <= {high}, got {v}")
    return v


def check_float(name: str, value, *, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float within the given bounds (open or closed)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise BlockmaskError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise BlockmaskError(f"{name} must be a finite number, got {v}")
    if low is not None and (v <= low if low_open else v < low):
        raise BlockmaskError(f"{name} must be {'>' if low_open else '>='} {low:g}, got {v:g}")
    if high is not None and (v >= high if high_open else v > high):
        raise BlockmaskError(f"{name} must be {'<' if high_open else '<='} {high:g}, got {v:g}")
    return v
