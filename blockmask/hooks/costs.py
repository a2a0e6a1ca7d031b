"""MACs, measured on the real modules (METHOD.md §5).

One forward at batch 1 (no CFG doubling) under ``FlopCounterMode``; each unit's MACs come from
the counter's per-module totals, the remainder (everything that always runs) is the rest.
Convention: MACs = FLOPs / 2, attention matmuls (QKᵀ and AV) counted — on CPU too: torch's
counter has no formula for ``_scaled_dot_product_flash_attention_for_cpu``, so we add one.
With CFG every number doubles (two samples per forward).

Counts are per model call (:class:`MacProfile`): a Heun step is two calls.

Nested units (a transformer block around its attn1/ff): the enclosing unit's MACs are its own
work only (norms, modulation, …, its total minus the units inside it), and a mask is costed by
the cells that really execute (:func:`blockmask.core.units.effective_mask`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from blockmask.core.errors import BlockmaskError, MaskError
from blockmask.core.units import Unit, effective_mask, parents_of
from blockmask.hooks.discover import discover_units, example_call


def _sdpa_cpu(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def cpu_sdpa_formula():
    """FlopCounterMode's custom mapping for the CPU flash-attention op (counted as SDPA)."""
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {} if op is None else {op: _sdpa_cpu}


CallsPerRow = Callable[[int], np.ndarray]  # K ↦ (K,) model calls of each mask row


@dataclasses.dataclass(frozen=True)
class MacProfile:
    """MACs of one forward pass for one sample: per unit (N,), and the always-run remainder.

    Every figure is per **model call**: a mask row runs ``calls[k]`` denoiser evaluations, each
    paying the remainder plus the row's executed units (METHOD.md §1: Heun, KDPM2 and EDM call the
    model twice per step, the last step once). ``calls`` is an explicit (K,) array, or the profile's
    ``calls_per_row`` (bound to a scheduler by :meth:`with_calls`), or one call per row.
    """

    unit_macs: np.ndarray  # (N,)
    remainder: float
    parents: tuple[int, ...] = ()  # enclosing unit of each unit (-1: none); () = no nesting
    calls_per_row: CallsPerRow | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def full_step(self) -> float:
        """MACs of one model call of the plain model."""
        return float(self.remainder + self.unit_macs.sum())

    def with_calls(self, calls_per_row: CallsPerRow | None) -> "MacProfile":
        """This profile counting ``calls_per_row(K)`` model calls per row (e.g.
        :func:`blockmask.core.schedulers.calls_counter` of a scheduler)."""
        return dataclasses.replace(self, calls_per_row=calls_per_row)

    def calls(self, steps: int, calls=None) -> np.ndarray:
        """(K,) model calls of each row: ``calls`` if given, else the bound ``calls_per_row``, else ones."""
        if calls is None:
            calls = self.calls_per_row(int(steps)) if self.calls_per_row is not None else np.ones(int(steps))
        c = np.asarray(calls, float).reshape(-1)
        if c.shape[0] != steps or (c < 0).any():
            raise BlockmaskError(f"calls must be {steps} non-negative counts, one per mask row, got {c.tolist()}")
        return c

    def model_calls(self, steps: int, calls=None) -> int:
        """Denoiser evaluations of a ``steps``-row run."""
        return int(round(self.calls(steps, calls).sum()))

    def executed(self, mask: np.ndarray) -> np.ndarray:
        """(K, N) bool: the cells that run (inner units only where their enclosing unit runs)."""
        m = np.asarray(mask, bool)
        if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] != len(self.unit_macs):
            raise MaskError(f"mask of shape {m.shape} does not fit: expected (K >= 1 steps, {len(self.unit_macs)} units)")
        return effective_mask(m, self.parents) if any(p >= 0 for p in self.parents) else m

    def per_call(self, mask: np.ndarray) -> np.ndarray:
        """(K,) MACs of one model call of each row under ``mask``."""
        return self.remainder + self.executed(mask) @ self.unit_macs

    def per_step(self, mask: np.ndarray, calls=None) -> np.ndarray:
        """(K,) MACs of each step (row) under ``mask``: its calls × one call's MACs."""
        per_call = self.per_call(mask)  # checks the mask's shape first (no scheduler asked about 0 rows)
        return self.calls(per_call.shape[0], calls) * per_call

    def total(self, mask: np.ndarray, calls=None) -> float:
        """Σ_k calls_k · (remainder + Σ_i executed[k, i] · macs_i) (METHOD.md §5)."""
        return float(self.per_step(mask, calls).sum())

    def baseline(self, steps: int, calls=None) -> float:
        """MACs of the plain model's ``steps``-row run."""
        return self.full_step * float(self.calls(steps, calls).sum())

    def ratio(self, mask: np.ndarray, calls=None) -> float:
        """Masked MACs / all-ones MACs (< 1 is cheaper), both counted per model call."""
        k = np.asarray(mask).shape[0]
        return self.total(mask, calls) / self.baseline(k, calls)

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
    with FlopCounterMode(display=False, custom_mapping=cpu_sdpa_formula()) as fc:
        run()
    prof = profile_from_counts(fc.get_flop_counts(), type(model).__name__, units)
    model._blockmask_macs = prof
    return prof


def profile_from_counts(counts: dict, root: str, units) -> MacProfile:
    """A :class:`MacProfile` from one call's ``FlopCounterMode.get_flop_counts()`` (every unit ran)."""
    total = sum(counts["Global"].values()) / 2
    inclusive = np.array([sum(counts.get(f"{root}.{u.name}", {}).values()) / 2 for u in units], dtype=float)
    per_unit = inclusive.copy()
    for u in units:  # an enclosing unit's own work: its total minus its direct inner units' totals
        if u.parent >= 0:
            per_unit[u.parent] -= inclusive[u.index]
    return MacProfile(per_unit, float(total - per_unit.sum()), parents_of(units))


def count_macs(fn) -> tuple[float, object]:
    """(MACs, result) of running ``fn()`` under ``FlopCounterMode`` with blockmask's convention
    (FLOPs / 2, CPU attention counted): the one way every method's whole run is counted, ours
    and the peers' (DeepCache, cache-dit) alike."""
    with FlopCounterMode(display=False, custom_mapping=cpu_sdpa_formula()) as fc:
        out = fn()
    return fc.get_total_flops() / 2, out


def format_macs(x: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"
