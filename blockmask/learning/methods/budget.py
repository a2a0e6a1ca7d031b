"""Bring per-cell scores to a MAC budget, shared by the other methods' producers (issue 17).

Every producer in :mod:`blockmask.learning.methods` ends with a (K, N) score per cell ("how much computing
this cell is worth") and turns it into a mask the same way: compute the highest-scoring cells,
row 0 always, as many as the budget affords. The cost of a mask is its MAC ratio *after exact
rectification* (METHOD.md §4–5), the same number every other mask in blockmask is judged by, and
the result is within ±2% (relative) of the requested budget.
"""

from __future__ import annotations

import numpy as np

from blockmask.core.errors import BlockmaskError
from blockmask.learning.run import BUDGET_TOLERANCE, check_budget


def within(ratio: float, target: float, tol: float = BUDGET_TOLERANCE) -> bool:
    return abs(ratio / target - 1) <= tol


def mask_ratio(wb, mask: np.ndarray) -> float:
    return wb.macs.ratio(wb.rectify(mask).mask)


def fit_scores(wb, scores: np.ndarray, target: float, *, tol: float = BUDGET_TOLERANCE) -> np.ndarray:
    """The rectified (K, N) mask of the highest ``scores`` (rows 1..K−1) whose MAC ratio is within
    ``tol`` of ``target``: bisection on the number of computed cells, then single-cell moves
    (a cell under a reused block saves nothing, so the count alone is not always enough)."""
    scores = np.asarray(scores, float)
    k_steps, n = scores.shape
    check_budget(wb, k_steps, target)
    order = np.argsort(-scores[1:], axis=None, kind="stable")  # best first, over rows 1..K-1

    def mask_of(count: int) -> np.ndarray:
        m = np.zeros((k_steps, n), bool)
        m[0] = True
        m[1:].reshape(-1)[order[:count]] = True
        return m

    lo, hi = 0, len(order)  # ratio(mask_of(lo)) < target <= ratio(mask_of(hi)) (as far as monotone)
    if mask_ratio(wb, mask_of(hi)) <= target:
        return wb.rectify(mask_of(hi)).mask
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if mask_ratio(wb, mask_of(mid)) >= target:
            hi = mid
        else:
            lo = mid
    best = min((mask_of(c) for c in (lo, hi)), key=lambda m: abs(mask_ratio(wb, m) - target))
    return _walk(wb, best, scores, target, tol)


def _moves(wb, m: np.ndarray, scores: np.ndarray, add: bool, limit: int | None = 48) -> list[tuple[np.ndarray, float]]:
    """Single-cell moves (add the best reused cells, or drop the worst computed ones) with their ratios;
    ``limit``: only that many cells, in score order (None: every cell)."""
    if add:  # a cell nobody reads after it is added costs nothing and changes nothing: skip those
        m = wb.rectify(m).mask
    cand = np.argwhere(~m[1:] if add else m[1:])
    cand = cand[np.argsort(scores[1:][tuple(cand.T)] * (-1 if add else 1), kind="stable")][:limit]
    out = []
    for k, i in cand:
        c = m.copy()
        c[1 + k, i] = add
        out.append((c, mask_ratio(wb, c)))
    return out


def _walk(wb, mask: np.ndarray, scores: np.ndarray, target: float, tol: float) -> np.ndarray:
    """Moves towards the budget: the single-cell move (add when under, drop when over) that lands
    closest to ``target``; when none gets closer (one cell can free or need more work through
    rectification), a move past the target followed by one back."""
    m = mask.copy()
    ratio = mask_ratio(wb, m)
    for _ in range(4 * m.size):
        if within(ratio, target, tol):
            return wb.rectify(m).mask
        first = _moves(wb, m, scores, add=ratio < target)
        best = min(first, key=lambda c: abs(c[1] - target), default=None)
        if best is None or abs(best[1] - target) >= abs(ratio - target):  # the best-scored cells do not help:
            first = _moves(wb, m, scores, add=ratio < target, limit=None)  # any cell, still best-scored first
            best = min(first, key=lambda c: abs(c[1] - target), default=None)
        if best is None or abs(best[1] - target) >= abs(ratio - target):
            pairs = []
            for c, r in sorted(first, key=lambda c: abs(c[1] - target))[:8]:
                pairs += _moves(wb, c, scores, add=r < target, limit=16)
            best = min(pairs, key=lambda c: abs(c[1] - target), default=None)
            if best is None or abs(best[1] - target) >= abs(ratio - target):
                break
        m, ratio = best
    if not within(ratio, target, tol):
        raise BlockmaskError(f"could not reach the MAC budget {target:g} within ±{tol:.0%} (closest {ratio:.3f}); "
                             "try more steps or another budget")
    return wb.rectify(m).mask
