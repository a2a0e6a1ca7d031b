"""Knowledge-guided rectification: exact removal of dead work (METHOD.md §4).

Backward liveness over the unrolled K×N graph, from the last step to the first and, within a
step, from the last unit to the first:

* needed(k, i): unit i's value at step k is read by a live direct consumer at step k, or by the
  model output, or (through the cache) at step k+1 where i is skipped and its value is needed;
* live(k, i) = M[k, i] and needed(k, i);  M'[k, i] = live(k, i).

Nested units (a transformer block around its branches): first, the cells of an inner unit under
a skipped enclosing unit are cleared (they never execute, :func:`blockmask.core.units.effective_mask`);
then the liveness pass runs on what really executes.

Pure function of (mask, graph): mask in, mask out. Samples with M' equal samples with M bit for bit.

Under ``reuse="forecast"`` (:mod:`blockmask.core.forecast`) a reused cell reads the unit's last two
computed values, so a computed value is also needed when a needed reuse lies between the next live
computation of the unit and the one after it (``carry2`` below); rectify with the mode the mask
runs under.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from blockmask.core.forecast import check_reuse
from blockmask.core.graph import ConsumerGraph
from blockmask.core.mask import validate_mask
from blockmask.core.units import effective_mask


@dataclasses.dataclass(frozen=True)
class Rectified:
    mask: np.ndarray  # (K, N) bool, the rectified mask
    removed: np.ndarray  # (K, N) bool, cells that were 1 and are now 0

    @property
    def cells_removed(self) -> int:
        return int(self.removed.sum())

    def macs_saved(self, unit_macs: np.ndarray) -> float:
        return float((self.removed * np.asarray(unit_macs)).sum())


def rectify(mask: np.ndarray, graph: ConsumerGraph, reuse: str = "hold") -> Rectified:
    """Remove every computed cell whose result nobody reads (under ``reuse``). Row 0 stays all ones."""
    forecast = check_reuse(reuse) == "forecast"
    m = validate_mask(mask, units=graph.num_units)
    if graph.parents:
        m_in, m = m, effective_mask(m, graph.parents)
    else:
        m_in = m
    k_steps, n = m.shape
    # Python ints (never NumPy's fixed-width ones) as bitsets over units: any N, K=1000 × N=60 in a few ms.
    cons_bits = [sum(1 << int(c) for c in cs) for cs in graph.consumers]
    feeds = [bool(f) for f in graph.feeds_output]
    rows = [sum(1 << int(i) for i in np.flatnonzero(r)) for r in m]
    live = np.zeros_like(m)
    carry = 0  # bit i: M[k+1, i] == 0 and needed(k+1, i)
    carry2 = 0  # forecast: bit i: a needed reuse of i after its next live computation, before the one after
    for k in range(k_steps - 1, -1, -1):
        row = rows[k]
        live_bits = needed_bits = 0
        for i in range(n - 1, -1, -1):
            bit = 1 << i
            if feeds[i] or carry & bit or cons_bits[i] & live_bits:
                needed_bits |= bit
                if row & bit:
                    live_bits |= bit
            elif row & carry2 & bit:  # read later as a forecast's older value (not by the reuses before it)
                needed_bits |= bit
                live_bits |= bit
        live[k] = [(live_bits >> i) & 1 for i in range(n)]
        if forecast:  # a live computation here: what the later reuses read as cache, earlier ones read as prev
            carry2 = (carry2 & ~live_bits) | (carry & live_bits)
        carry = needed_bits & ~row
    live[0] = True  # row 0 is enforced (and always live in any model whose units reach the output)
    return Rectified(live, m_in & ~live)


def rectify_eq12(mask: np.ndarray) -> np.ndarray:
    """The paper's Eq. 12 for a pure chain, applied in its stated order (last step to first,
    last block to first, in place): M[k, i] ← 0 if M[k, i+1] = 0 and M[k+1, i] = 1. After the last
    step no cache is read, so the row past the end counts as all ones. For reference and tests."""
    m = validate_mask(mask).copy()
    k_steps, n = m.shape
    for k in range(k_steps - 1, 0, -1):
        for i in range(n - 2, -1, -1):
            overwritten = k + 1 == k_steps or m[k + 1, i]
            if m[k, i] and not m[k, i + 1] and overwritten:
                m[k, i] = False
    return m
