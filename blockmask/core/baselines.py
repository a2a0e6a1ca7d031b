"""Baseline masks expressible in the K×N form (METHOD.md §6). Every function returns (K, N) bool
with row 0 all ones.

* ``ones``: the plain model.
* ``deepcache``: every ``interval`` steps run everything; in between run only the shallow
  branch ``cache_branch_id`` and reuse the deeper units (DeepCache, exactly).
* ``fora``: every ``interval`` steps run every unit, reuse all in between (FORA).
* ``uniform``: each unit runs every ``every`` steps, phases staggered over units so that each
  step costs about the same.
* ``random_mask``: seeded random skipping at a target skip fraction or MAC ratio.
"""

from __future__ import annotations

import re

import numpy as np

from blockmask.core.errors import BlockmaskError
from blockmask.core.units import Unit

BASELINES = ("ones", "deepcache", "fora", "blocks", "uniform", "random")


def _check(steps: int, **positive) -> None:
    if steps < 1:
        raise BlockmaskError(f"steps must be >= 1, got {steps}")
    for name, v in positive.items():
        if v is not None and v < 1:
            raise BlockmaskError(f"{name} must be >= 1, got {v}")


def ones(steps: int, n: int) -> np.ndarray:
    _check(steps)
    return np.ones((steps, n), dtype=bool)


def deepcache_runs(unit: Unit, branch: int, layers: dict[tuple[str, int], int], num_up: int) -> bool:
    """Whether DeepCache (``DeepCacheSDHelper``, PyPI ``DeepCache``) runs ``unit`` on a cached step
    for ``cache_branch_id=branch``: its ``is_skip_step`` rule, stated on our unit names.

    DeepCache numbers the up blocks and their layers from the output end, and splits the branch id
    as ``layer = branch % 3``, ``block = branch // 3``. ``layers[("down"|"up", i)]`` is the number
    of resnets of block i (a downsampler is layer ``len(resnets)``, an upsampler layer 0).
    """
    layer_id, block_id = branch % 3, branch // 3
    m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)$", unit.name)
    if m is None:
        return False  # the mid block is always reused
    side, i, what, j = m.group(1), int(m.group(2)), m.group(3), int(m.group(4))
    if side == "down":
        block, layer = i, (layers[("down", i)] if what == "downsamplers" else j)
    else:
        block = num_up - i - 1
        layer = 0 if what == "upsamplers" else layers[("up", i)] - j - 1
    if block != block_id:
        return block < block_id
    return layer < layer_id if side == "down" else layer <= layer_id


def deepcache(units: list[Unit], steps: int, *, interval: int = 3, branch: int = 0) -> np.ndarray:
    """DeepCache: every ``interval`` steps (from step 0) run everything; in between run only the
    shallow branch ``cache_branch_id=branch`` (0 = the shallowest, DeepCache's default) and reuse
    the rest. Same images as the real DeepCache on a diffusers pipeline, bit for bit (tested)."""
    _check(steps, interval=interval)
    if branch < 0:
        raise BlockmaskError(f"DeepCache branch id must be >= 0, got {branch}")
    if any(not (u.name.startswith(("down_blocks", "up_blocks", "mid_block"))) for u in units):
        raise BlockmaskError("DeepCache applies to U-Nets (down/mid/up blocks); use fora for transformers")
    layers: dict[tuple[str, int], int] = {}
    for u in units:
        if (m := re.match(r"(down|up)_blocks\.(\d+)\.resnets\.\d+$", u.name)):
            key = (m.group(1), int(m.group(2)))
            layers[key] = layers.get(key, 0) + 1
    num_up = 1 + max(i for side, i in layers if side == "up")
    limit = 3 * num_up
    if branch >= limit:
        raise BlockmaskError(f"DeepCache branch id must be < {limit} for this U-Net ({num_up} up blocks), got {branch}")
    shallow = np.array([deepcache_runs(u, branch, layers, num_up) for u in units])
    m = np.zeros((steps, len(units)), dtype=bool)
    m[:] = shallow
    m[::interval] = True
    return m


def fora(steps: int, n: int, *, interval: int = 2, keep: np.ndarray | None = None) -> np.ndarray:
    """FORA: run every unit every ``interval`` steps, reuse all in between. ``keep`` (N,) bool: units
    that run at every step anyway — the whole-block units of a transformer, so that, as in FORA,
    only the attention and MLP outputs are reused while each block's norms and modulation run."""
    _check(steps, interval=interval)
    m = np.zeros((steps, n), dtype=bool)
    if keep is not None:
        m[:] = np.asarray(keep, bool)
    m[::interval] = True
    return m


def block_cache(steps: int, n: int, *, interval: int = 2) -> np.ndarray:
    """Every ``interval`` steps run everything; in between every unit reuses its cache — for a
    transformer the whole blocks too, so a block returns its input plus its cached residual."""
    return fora(steps, n, interval=interval)


def uniform(steps: int, n: int, *, every: int = 2, keep: np.ndarray | None = None) -> np.ndarray:
    """Each unit runs every ``every`` steps, unit i with phase i mod every. ``keep`` (N,) bool: units
    that run at every step (a transformer's whole blocks, so that their branches follow the rule)."""
    _check(steps, every=every)
    k = np.arange(steps)[:, None]
    i = np.arange(n)[None, :]
    m = (k + i) % every == 0
    if keep is not None:
        m[:, np.asarray(keep, bool)] = True
    m[0] = True
    return m


def random_mask(steps: int, n: int, *, seed: int = 0, skip: float | None = None, macs_ratio: float | None = None,
                unit_macs: np.ndarray | None = None, remainder: float = 0.0,
                eligible: np.ndarray | None = None) -> np.ndarray:
    """Random skipping among rows 1..K-1: a fraction ``skip`` of those cells, or as many cells as
    needed (random order) to bring the MAC ratio down to ``macs_ratio`` (needs ``unit_macs``).
    ``eligible`` (N,) bool: the units that may be skipped (default all); the API passes the units
    with no unit inside them, so that every skipped cell saves exactly its own MACs."""
    _check(steps)
    if (skip is None) == (macs_ratio is None):
        raise BlockmaskError("random mask needs exactly one of a skip fraction or a MAC ratio")
    rng = np.random.default_rng(seed)
    m = np.ones((steps, n), dtype=bool)
    ok = np.tile(np.ones(n, bool) if eligible is None else np.asarray(eligible, bool), steps - 1)
    cells = rng.permutation(np.flatnonzero(ok))
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
    kept = 0.0 if eligible is None else float(np.sum(np.asarray(unit_macs)[~np.asarray(eligible, bool)]))
    floor = (remainder * steps + float(np.sum(unit_macs)) + kept * (steps - 1)) / full
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
