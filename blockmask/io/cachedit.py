"""Export to and import from cache-dit's ``steps_mask`` (DBCache with a static step mask).

cache-dit (``cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(...))``) decides per *step*
only: a step marked 1 in ``steps_computation_mask`` runs every transformer block; a step marked 0
runs the first ``Fn_compute_blocks`` and the last ``Bn_compute_blocks`` blocks and replaces the
blocks in between by their cached residual (``steps_computation_policy="static"``: always, without
its residual-difference test). In blockmask terms that is a mask over whole-block units
(:attr:`blockmask.core.units.Unit.residual`) where every row is either all ones or the same
"first F and last B blocks run, the middle is reused" row, with every unit inside a running block
running. A blockmask mask expresses this exactly (a reused middle block returns its input plus its
cached residual; a chain of them adds the same residuals).

What cache-dit cannot express, and :func:`to_cachedit` refuses with the row and the reason: masks on
models without whole-block units (U-Nets), rows that skip an inner unit (attention or feed-forward)
of a running block, rows whose reused blocks are not one contiguous middle range, and two cached
rows with different F or B.
"""

from __future__ import annotations

import numpy as np

from blockmask.core.errors import MaskError
from blockmask.core.units import Unit, effective_mask


def _blocks(units: list[Unit]) -> list[Unit]:
    blocks = [u for u in units if u.residual and u.parent < 0]
    if not blocks:
        raise MaskError("cache-dit's steps_mask caches whole transformer blocks; this model has no block units "
                        "(U-Nets cannot be expressed)")
    return blocks  # execution order = block order


def to_cachedit(mask: np.ndarray, units: list[Unit]) -> dict:
    """The DBCacheConfig fields reproducing ``mask`` (K, N): ``steps_computation_mask``,
    ``steps_computation_policy``, ``Fn_compute_blocks``, ``Bn_compute_blocks``, ``max_warmup_steps``.
    Raises MaskError naming the first row cache-dit cannot express."""
    m = effective_mask(np.asarray(mask, bool), [u.parent for u in units])
    blocks = _blocks(units)
    nb = len(blocks)
    steps, fb = [], None
    for k, row in enumerate(m):
        if row.all():
            steps.append(1)
            continue
        runs = [bool(row[b.index]) for b in blocks]
        for u in units:  # inside a running block everything runs
            if u.parent >= 0 and row[u.parent] and not row[u.index]:
                raise MaskError(f"row {k}: unit {u.name} is reused inside a running block; cache-dit caches "
                                "whole blocks only")
        f = next(i for i, r in enumerate(runs) if not r)
        b = nb - 1 - max(i for i, r in enumerate(runs) if not r)
        if any(runs[f: nb - b]):
            raise MaskError(f"row {k}: the reused blocks are not one contiguous middle range; cache-dit reuses "
                            "blocks Fn..L-Bn-1 only")
        if fb is not None and fb != (f, b):
            raise MaskError(f"row {k}: reuses blocks {f}..{nb - b - 1}, an earlier row {fb[0]}..{nb - fb[1] - 1}; "
                            "cache-dit uses one Fn/Bn for every cached step")
        fb = (f, b)
        steps.append(0)
    f, b = fb if fb is not None else (1, 0)
    return {"steps_computation_mask": steps, "steps_computation_policy": "static", "Fn_compute_blocks": f,
            "Bn_compute_blocks": b, "max_warmup_steps": 0}


def from_cachedit(config: dict, units: list[Unit]) -> np.ndarray:
    """The (K, N) blockmask mask of a cache-dit config with ``steps_computation_mask`` (static policy):
    1-steps run everything, 0-steps run the first Fn and last Bn blocks (with their inner units)."""
    if not isinstance(config, dict):
        raise MaskError(f"a cache-dit config is a JSON object, got {type(config).__name__}")
    steps = config.get("steps_computation_mask")
    if (not isinstance(steps, (list, tuple)) or not steps or len(steps) > 10_000
            or any(type(v) is not int or v not in (0, 1) for v in steps)):
        raise MaskError("cache-dit config needs steps_computation_mask: a non-empty list of 0/1 (at most 10000)")
    blocks = _blocks(units)
    nb = len(blocks)
    f, b = config.get("Fn_compute_blocks", 8), config.get("Bn_compute_blocks", 0)
    for name, v in (("Fn_compute_blocks", f), ("Bn_compute_blocks", b)):
        if type(v) is not int:
            raise MaskError(f"cache-dit config: {name} must be an integer, got {v!r}"[:200])
    if f < 0 or b < 0 or f + b > nb:
        raise MaskError(f"Fn_compute_blocks={f} + Bn_compute_blocks={b} does not fit the model's {nb} blocks")
    cached = np.ones(len(units), bool)
    for j, blk in enumerate(blocks):
        if f <= j < nb - b:
            cached[blk.index] = False
            cached[[u.index for u in units if u.parent == blk.index]] = False
    mask = np.array([np.ones(len(units), bool) if s else cached for s in steps])
    if not mask[0].all():
        raise MaskError("cache-dit's steps_computation_mask must start with 1 (nothing is cached before the first step)")
    return mask
