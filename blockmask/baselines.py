"""Baseline masks expressible in the K×N form (METHOD.md §6). Every function returns (K, N) bool
with row 0 all ones.

* ``ones``: the plain model.
* ``deepcache``: every ``interval`` steps run everything; in between run only the shallow
  branch (U-Net resolution levels < ``depth``) and reuse the deeper units (DeepCache).
* ``fora``: every ``interval`` steps run every unit, reuse all in between (FORA).
* ``uniform``: each unit runs every ``every`` steps, phases staggered over units so that each
  step costs about the same.
* ``random_mask``: seeded random skipping at a target skip fraction or MAC ratio.
"""

from __future__ import annotations

import re

import numpy as np

from .errors import BlockmaskError
from .units import Unit

BASELINES = ("ones", "deepcache", "fora", "uniform", "random")


def _check(steps: int, **positive) -> None:
    if steps < 1:
        raise BlockmaskError(f"steps must be >= 1, got {steps}")
    for name, v in positive.items():
        if v is not None and v < 1:
            raise BlockmaskError(f"{name} must be >= 1, got {v}")


def ones(steps: int, n: int) -> np.ndarray:
    _check(steps)
    return np.ones((steps, n), dtype=bool)


def unet_level(unit: Unit, num_levels: int) -> int:
    """Resolution level of a U-Net unit: 0 = outermost (full resolution); the mid block is deepest."""
    m = re.match(r"(down|up)_blocks\.(\d+)\.", unit.name)
    if m is None:
        return num_levels  # mid_block
    i = int(m.group(2))
    return i if m.group(1) == "down" else num_levels - 1 - i


def deepcache(units: list[Unit], steps: int, *, interval: int = 3, depth: int = 1) -> np.ndarray:
    """DeepCache: full steps every ``interval``; otherwise only levels < ``depth`` run."""
    _check(steps, interval=interval, depth=depth)
    if any(not (u.name.startswith(("down_blocks", "up_blocks", "mid_block"))) for u in units):
        raise BlockmaskError("DeepCache applies to U-Nets (down/mid/up blocks); use fora for transformers")
    levels = 1 + max(int(m.group(1)) for u in units if (m := re.match(r"down_blocks\.(\d+)\.", u.name)))
    shallow = np.array([unet_level(u, levels) < depth for u in units])
    m = np.zeros((steps, len(units)), dtype=bool)
    m[:] = shallow
    m[::interval] = True
    return m


def fora(steps: int, n: int, *, interval: int = 2) -> np.ndarray:
    """FORA: run every unit every ``interval`` steps, reuse all in between."""
    _check(steps, interval=interval)
    m = np.zeros((steps, n), dtype=bool)
    m[::interval] = True
    return m


def uniform(steps: int, n: int, *, every: int = 2) -> np.ndarray:
    """Each unit runs every ``every`` steps, unit i with phase i mod every."""
    _check(steps, every=every)
    k = np.arange(steps)[:, None]
    i = np.arange(n)[None, :]
    m = (k + i) % every == 0
    m[0] = True
    return m


def random_mask(steps: int, n: int, *, seed: int = 0, skip: float | None = None, macs_ratio: float | None = None,
                unit_macs: np.ndarray | None = None, remainder: float = 0.0) -> np.ndarray:
    """Random skipping among rows 1..K-1: a fraction ``skip`` of those cells, or as many cells as
    needed (random order) to bring the MAC ratio down to ``macs_ratio`` (needs ``unit_macs``)."""
    _check(steps)
    if (skip is None) == (macs_ratio is None):
        raise BlockmaskError("random mask needs exactly one of a skip fraction or a MAC ratio")
    rng = np.random.default_rng(seed)
    m = np.ones((steps, n), dtype=bool)
    cells = rng.permutation((steps - 1) * n)
    if skip is not None:
        if not 0 <= skip <= 1:
            raise BlockmaskError(f"skip fraction must be in [0, 1], got {skip}")
        off = cells[: int(round(skip * len(cells)))]
        flat = m[1:].reshape(-1)  # a view
        flat[off] = False
        return m
    if unit_macs is None:
        raise BlockmaskError("a MAC-ratio random mask needs the model's unit MACs")
    full = (remainder + float(np.sum(unit_macs))) * steps
    floor = (remainder * steps + float(np.sum(unit_macs))) / full
    if not floor - 1e-12 <= macs_ratio <= 1:
        raise BlockmaskError(f"MAC ratio must be in [{floor:.3f}, 1] for this model and step count, got {macs_ratio}")
    target = macs_ratio * full
    total = full
    flat = m[1:].reshape(-1)
    costs = np.tile(np.asarray(unit_macs, float), steps - 1)
    for c in cells:
        if total <= target:
            break
        if total - costs[c] >= target - 1e-9 * full or total - target > costs[c] / 2:
            flat[c] = False
            total -= costs[c]
    m[1:] = flat.reshape(steps - 1, n)
    return m
