"""Feature-change block caching (Wimbauer et al., "Cache Me if You Can", CVPR 2024) as a mask producer.

1. One unmasked sampling run from Gaussian noise measures, for every unit i and step k ≥ 1, the
   relative L1 change of the unit's output (a whole transformer block: its residual, what
   blockmask caches) since the previous step: ``c[k, i] = |F_i^k − F_i^{k−1}|₁ / |F_i^{k−1}|₁``.
2. A unit's cache is refreshed at step k when the change accumulated since its last refresh
   reaches its threshold ``δ_i`` — and at least ``min_interval`` steps have passed since then:
   ``M[k, i] = 1`` iff ``Σ_{j = last+1..k} c[j, i] ≥ δ_i`` and ``k − last ≥ min_interval``.
3. ``δ_i = δ · scale_i`` (per-unit thresholds: ``shared`` = 1 for all, ``macs`` ∝ the unit's share
   of the MACs, so costly units refresh less, or explicit ``unit_scales``); δ is searched
   (bisection in log δ) until the rectified MAC ratio meets the budget, within ±2%; where the
   schedule's steps are too coarse, single cells are moved by their accumulated change.

Needs no data and no training: one forward-only run of ``batch`` noise seeds.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from blockmask.core.errors import BlockmaskError
from blockmask.core.outputs import first_tensor
from blockmask.core.validate import check_float, check_int
from blockmask.hooks.discover import discover_units, unit_modules
from blockmask.hooks.registry import wrap_forwards
from blockmask.learning.methods.budget import fit_scores, mask_ratio, within
from blockmask.learning.methods.progress import step_callback
from blockmask.learning.run import check_budget
from blockmask.sampling.sample import Condition, SampleOptions, sample

PER_UNIT = ("shared", "macs")


@dataclasses.dataclass(frozen=True)
class FeatureChangeConfig:
    """Options of the feature-change producer (names follow the original method)."""

    batch: int = dataclasses.field(default=4, metadata={"help": "noise seeds in the measuring run"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the measuring run's noise"})
    min_interval: int = dataclasses.field(default=1, metadata={"help": "a unit refreshes at most every N steps"})
    per_unit: str = dataclasses.field(default="shared", metadata={
        "help": "per-unit thresholds: shared (one δ) or macs (δ scaled by the unit's MAC share)",
        "choices": PER_UNIT})
    unit_scales: tuple[float, ...] | None = dataclasses.field(default=None, metadata={
        "help": "explicit per-unit threshold scales (one per unit, comma-separated; overrides --per-unit)"})

    def __post_init__(self):
        check_int("batch", self.batch, low=1)
        check_int("seed", self.seed, low=0)
        check_int("min_interval", self.min_interval, low=1)
        if self.per_unit not in PER_UNIT:
            raise BlockmaskError(f"per_unit must be one of {', '.join(PER_UNIT)}, got {self.per_unit!r}")
        for v in self.unit_scales or ():
            check_float("unit scale", v, low=0, low_open=True)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["unit_scales"] = None if self.unit_scales is None else list(self.unit_scales)
        return d


@torch.no_grad()
def unit_changes(model, scheduler, *, steps: int, seed: int = 0, batch: int = 4,
                 condition: Condition | None = None, progress: bool = False) -> np.ndarray:
    """(K, N) relative L1 change of every unit's output (residual for whole blocks) from step k−1
    to k on one unmasked run; row 0 is 0 (no previous step). The run is :func:`blockmask.sampling.sample.sample`
    itself (any scheduler); a row's output is its first evaluation's (Heun: at σ_k, as Δ_k)."""
    units = discover_units(model)
    prev: list[torch.Tensor | None] = [None] * len(units)
    seen = [-1] * len(units)  # the last row each unit was recorded at
    change = np.zeros((steps, len(units)))
    row = [0]

    def make(i, orig):
        residual = units[i].residual

        def fwd(*a, **kw):
            out = orig(*a, **kw)
            if seen[i] == row[0]:  # a row's second evaluation (Heun): not a new step
                return out
            seen[i] = row[0]
            v = first_tensor(out).float()
            if residual:
                v = v - first_tensor(a[0] if a else kw["hidden_states"]).float()
            if prev[i] is not None:
                change[row[0], i] = float((v - prev[i]).abs().sum() / prev[i].abs().sum().clamp_min(1e-12))
            prev[i] = v
            return out

        return fwd

    def advance(done: int, _total: int) -> None:  # after each completed row
        row[0] = done

    with wrap_forwards(unit_modules(model, units), make):
        sample(model, num_steps=steps, scheduler=scheduler, seed=seed, batch=batch, condition=condition,
               options=SampleOptions(progress=progress is True,
                                     callback=step_callback(progress, "measuring feature change", advance)))
    return change


def schedule(change: np.ndarray, thresholds: np.ndarray, min_interval: int = 1) -> np.ndarray:
    """(K, N) mask: unit i refreshes when its change accumulated since the last refresh reaches
    ``thresholds[i]`` and at least ``min_interval`` steps have passed (row 0 all ones)."""
    k_steps, n = change.shape
    m = np.zeros((k_steps, n), bool)
    m[0] = True
    acc = np.zeros(n)
    last = np.zeros(n, int)
    for k in range(1, k_steps):
        acc += change[k]
        fire = (acc >= thresholds) & (k - last >= min_interval)
        m[k] = fire
        acc[fire] = 0.0
        last[fire] = k
    return m


def _accumulated(change: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(K, N) change accumulated since the unit's last refresh under ``mask``: the cell score."""
    acc = np.zeros_like(change)
    run = np.zeros(change.shape[1])
    for k in range(1, change.shape[0]):
        run = run + change[k]
        acc[k] = run
        run = np.where(mask[k], 0.0, run)
    return acc


def unit_scales(wb, cfg: FeatureChangeConfig) -> np.ndarray:
    n = len(wb.units)
    if cfg.unit_scales is not None:
        if len(cfg.unit_scales) != n:
            raise BlockmaskError(f"unit_scales has {len(cfg.unit_scales)} values, the model has {n} units")
        return np.asarray(cfg.unit_scales, float)
    if cfg.per_unit == "macs":
        c = np.asarray(wb.macs.unit_macs, float)
        return np.maximum(c / max(c.mean(), 1e-30), 1e-3)
    return np.ones(n)


def make_mask(wb, steps: int, target: float, cfg: FeatureChangeConfig | None = None, *,
              condition: Condition | None = None, progress: bool = False) -> tuple[np.ndarray, dict]:
    """The feature-change mask at MAC budget ``target``; returns (rectified mask, meta)."""
    cfg = cfg or FeatureChangeConfig()

    check_budget(wb, steps, target)
    scales = unit_scales(wb, cfg)  # checked before the measuring run
    t0 = time.perf_counter()
    change = unit_changes(wb.model, wb.scheduler(), steps=steps, seed=cfg.seed, batch=cfg.batch,
                          condition=condition, progress=progress)
    measured = time.perf_counter() - t0
    lo, hi = 1e-6, max(float(change.sum(0).max()), 1e-6) * 2  # δ = hi: no refresh at all
    best = None
    for _ in range(60):  # bisection in log δ: larger δ, fewer refreshes
        mid = math.sqrt(lo * hi)
        m = schedule(change, mid * scales, cfg.min_interval)
        r = mask_ratio(wb, m)
        if best is None or abs(r - target) < abs(best[2] - target):
            best = (mid, m, r)
        if within(r, target) or hi / lo < 1 + 1e-6:
            break
        lo, hi = (mid, hi) if r > target else (lo, mid)
    delta, mask, ratio = best
    moved = not within(ratio, target)
    if moved:  # the schedule's steps are too coarse here: move single cells by accumulated change
        mask = fit_scores(wb, _accumulated(change, mask) / scales + mask * 1e9, target)
    else:
        mask = wb.rectify(mask).mask
    meta = {"method": "feature-change", "config": cfg.to_json(), "threshold": delta, "cells_moved_to_budget": moved,
            "change": change.tolist(), "train_seconds": time.perf_counter() - t0, "measure_seconds": measured,
            "needs": {"data": "none (Gaussian noise)", "training": "none: one unmasked run"}}
    return mask, meta
