"""MACs, measured on the real modules (METHOD.md §5).

One forward at batch 1 (no CFG doubling) under ``FlopCounterMode``; each unit's MACs come from
the counter's per-module totals, the remainder (everything that always runs) is the rest.
Convention: MACs = FLOPs / 2, attention matmuls (QKᵀ and AV) counted — on CPU too: torch's
counter has no formula for ``_scaled_dot_product_flash_attention_for_cpu``, so we add one.
With CFG every number doubles (two samples per forward).

Nested units (a transformer block around its attn1/ff): the enclosing unit's MACs are its own
work only (norms, modulation, …, its total minus the units inside it), and a mask is costed by
the cells that really execute (:func:`blockmask.units.effective_mask`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .units import Unit, discover_units, effective_mask, example_call, parents_of


def _sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_sdpa_formula():
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {} if op is None else {op: _sdpa_cpu}


@dataclasses.dataclass(frozen=True)
class MacProfile:
    """MACs of one forward pass for one sample: per unit (N,), and the always-run remainder."""

    unit_macs: np.ndarray  # (N,)
    remainder: float
    parents: tuple[int, ...] = ()  # enclosing unit of each unit (-1: none); () = no nesting

    @property
    def full_step(self) -> float:
        return float(self.remainder + self.unit_macs.sum())

    def executed(self, mask: np.ndarray) -> np.ndarray:
        """(K, N) bool: the cells that run (inner units only where their enclosing unit runs)."""
        m = np.asarray(mask, bool)
        if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] != len(self.unit_macs):
            from .errors import MaskError  # wrong N, no rows, not 2-D: one line, not a NumPy error

            raise MaskError(f"mask of shape {m.shape} does not fit: expected (K >= 1 steps, {len(self.unit_macs)} units)")
        return effective_mask(m, self.parents) if any(p >= 0 for p in self.parents) else m

    def per_step(self, mask: np.ndarray) -> np.ndarray:
        """(K,) MACs of each step under ``mask``."""
        return self.remainder + self.executed(mask) @ self.unit_macs

    def total(self, mask: np.ndarray) -> float:
        """remainder × K + Σ executed cells (METHOD.md §5)."""
        m = self.executed(mask)
        return float(self.remainder * m.shape[0] + (m * self.unit_macs).sum())

    def baseline(self, steps: int) -> float:
        return self.full_step * steps

    def ratio(self, mask: np.ndarray) -> float:
        """Masked MACs / all-ones MACs (< 1 is cheaper)."""
        return self.total(mask) / self.baseline(np.asarray(mask).shape[0])

    def to_json(self) -> dict:
        return {"unit_macs": self.unit_macs.tolist(), "remainder": self.remainder, "full_step": self.full_step,
                "parents": list(self.parents)}


@torch.no_grad()
def measure_macs(model: torch.nn.Module, units: list[Unit] | None = None) -> MacProfile:
    """Count MACs of one forward (batch 1) and split them over units. Cached on the model."""
    cached = getattr(model, "_blockmask_macs", None)
    if cached is not None:
        return cached
    units = units or discover_units(model)
    run = example_call(model)
    with FlopCounterMode(display=False, custom_mapping=_cpu_sdpa_formula()) as fc:
        run()
    counts = fc.get_flop_counts()
    root = type(model).__name__
    total = sum(counts["Global"].values()) / 2
    inclusive = np.array([sum(counts.get(f"{root}.{u.name}", {}).values()) / 2 for u in units], dtype=float)
    per_unit = inclusive.copy()
    for u in units:  # an enclosing unit's own work: its total minus its direct inner units' totals
        if u.parent >= 0:
            per_unit[u.parent] -= inclusive[u.index]
    prof = MacProfile(per_unit, float(total - per_unit.sum()), parents_of(units))
    model._blockmask_macs = prof
    return prof


def count_macs(fn) -> tuple[float, object]:
    """(MACs, result) of running ``fn()`` under ``FlopCounterMode`` with blockmask's convention
    (FLOPs / 2, CPU attention counted): the one way every method's whole run is counted, ours
    and the peers' (DeepCache, cache-dit) alike."""
    with FlopCounterMode(display=False, custom_mapping=_cpu_sdpa_formula()) as fc:
        out = fn()
    return fc.get_total_flops() / 2, out


def format_macs(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"
