"""A seconds cost model of a schedule on the current device (the planner's ``unit="seconds"``).

    seconds(K, mask) = fixed + K · masked_step + Σ_cells executed(k, i) · unit[i]
    seconds(K, None) = fixed + K · plain_step            (the plain model: no hooks at all)

* ``fixed``: per run (initial noise, scheduler set-up, Python around the loop);
* ``plain_step``: one step of the plain model;
* ``masked_step``: one masked step in which every unit reuses its cache (the always-run
  remainder plus the hooks' own work);
* ``unit[i]``: what unit i adds when it runs (its own work: for a transformer block, the block
  without its attn/ff, as MACs are split, :mod:`blockmask.hooks.costs`).

:func:`measure_latency` times short sampling runs, interleaved over ``repeats`` rounds, medians:
the plain model at two step counts (fixed and per-step cost), masked runs with every unit
reused after step 0 or every unit run, and one run per unit with only that unit (and the units
around it) running. The unit costs are then scaled so that they add up to the measured cost of
an all-ones masked step. Rectified masks are costed as they run (``MacProfile.executed``).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from blockmask.core.validate import check_int


@dataclasses.dataclass(frozen=True)
class LatencyModel:
    fixed: float
    plain_step: float
    masked_step: float
    unit: np.ndarray  # (N,)
    profile: object  # blockmask.hooks.costs.MacProfile: which cells really run (nested units)
    batch: int = 1
    device: str = "cpu"

    def seconds(self, steps: int, mask: np.ndarray | None = None) -> float:
        if mask is None:
            return float(self.fixed + steps * self.plain_step)
        ex = self.profile.executed(np.asarray(mask, bool))
        return float(self.fixed + ex.shape[0] * self.masked_step + (ex * self.unit).sum())

    def row(self, row: np.ndarray) -> float:
        """Seconds of one masked step with ``row``."""
        ex = self.profile.executed(np.asarray(row, bool)[None])[0]
        return float(self.masked_step + (ex * self.unit).sum())

    def to_json(self) -> dict:
        return {"fixed_s": self.fixed, "plain_step_s": self.plain_step, "masked_step_s": self.masked_step,
                "unit_s": self.unit.tolist(), "batch": self.batch, "device": self.device}


def _ancestors(parents, i: int) -> list[int]:
    out = []
    while parents and parents[i] >= 0:
        i = parents[i]
        out.append(i)
    return out


def measure_latency(wb, *, batch: int = 1, steps: int = 4, repeats: int = 3, condition=None) -> LatencyModel:
    """Time the probes described in the module doc on ``wb``'s device (``repeats`` interleaved
    rounds, medians) and return the fitted :class:`LatencyModel`."""
    batch = check_int("latency probe batch", batch, low=1, high=4096)
    steps = check_int("latency probe steps", steps, low=2, high=1000)
    repeats = check_int("latency probe repeats", repeats, low=1, high=1000)
    p = wb.macs
    n = len(wb.units)
    parents = list(p.parents) if p.parents else [-1] * n
    sync = torch.cuda.synchronize if wb.device.type == "cuda" else (lambda: None)

    def masked(rows_on: np.ndarray) -> np.ndarray:
        m = np.tile(rows_on, (steps, 1))
        m[0] = True
        return m

    probes: dict[str, tuple[int, np.ndarray | None]] = {
        "plain1": (1, None), "plainK": (steps, None),
        "ones": (steps, np.ones((steps, n), bool)), "zeros": (steps, masked(np.zeros(n, bool)))}
    for i in range(n):
        on = np.zeros(n, bool)
        on[[i, *_ancestors(parents, i)]] = True
        probes[f"unit{i}"] = (steps, masked(on))

    def run(k, m):
        sync()
        t0 = time.perf_counter()
        wb.generate(m, steps=k, seed=0, num_images=batch, condition=condition)
        sync()
        return time.perf_counter() - t0

    for k, m in probes.values():  # warm-up
        run(k, m)
    times: dict[str, list[float]] = {name: [] for name in probes}
    for _ in range(repeats):
        for name, (k, m) in probes.items():
            times[name].append(run(k, m))
    med = {name: float(np.median(v)) for name, v in times.items()}
    plain_step = max((med["plainK"] - med["plain1"]) / (steps - 1), 0.0)
    fixed = max(med["plain1"] - plain_step, 0.0)
    ones_step = max((med["ones"] - fixed) / steps, 0.0)
    zero_step = max((med["zeros"] - fixed - ones_step) / (steps - 1), 0.0)
    single = np.array([max((med[f"unit{i}"] - fixed - ones_step) / (steps - 1) - zero_step, 0.0) for i in range(n)])
    own = single.copy()
    for i in sorted(range(n), key=lambda j: len(_ancestors(parents, j))):  # outer units first
        # a unit's own cost: its probe minus the units around it that had to run too
        own[i] = max(single[i] - sum(own[a] for a in _ancestors(parents, i)), 0.0)
    target = max(ones_step - zero_step, 0.0)
    if own.sum() > 0:
        own *= target / own.sum()
    else:  # too fast to resolve: split by MACs
        own = target * p.unit_macs / max(float(p.unit_macs.sum()), 1e-30)
    return LatencyModel(fixed=fixed, plain_step=plain_step, masked_step=zero_step, unit=own, profile=p, batch=batch,
                        device=str(wb.device))
