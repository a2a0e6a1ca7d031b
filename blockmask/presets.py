"""What a pipeline's mask is made from when its step count K is known: a preset rule (deepcache, fora,
blocks, uniform, ones) built at any K, or a fixed mask (resampled onto the run's noise levels when
asked), and the scheduler facts both need (each row's noise level, the row of each model call).
Used by :func:`blockmask.enable` (:mod:`blockmask.enable`), its budgets (:mod:`blockmask.hooks.budget`) and
its step source (:mod:`blockmask.hooks.pipesteps`)."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from blockmask.core import baselines
from blockmask.core.errors import MaskError
from blockmask.core.resample import even_levels, resample_mask
from blockmask.core.schedulers import call_rows, scheduler_rows
from blockmask.core.units import Unit

PRESETS = {"ones": (), "deepcache": ("interval", "branch"), "fora": ("interval",), "blocks": ("interval",),
           "uniform": ("every",)}
DEFAULTS = {"deepcache": {"interval": 3, "branch": 0}, "fora": {"interval": 2}, "blocks": {"interval": 2},
            "uniform": {"every": 2}}
PRESET_HELP = "ones, deepcache:INTERVAL[:BRANCH], fora:INTERVAL, blocks:INTERVAL, uniform:EVERY"


# --- what to run: a preset rule or a fixed mask ----------------------------------------------------------
@dataclasses.dataclass
class Preset:
    name: str
    params: dict

    def __str__(self):
        return ":".join([self.name, *(str(self.params[p]) for p in PRESETS[self.name])])

    def build(self, units: list[Unit], k: int, *_context) -> np.ndarray:
        return self.mask(units, k)

    def mask(self, units: list[Unit], k: int) -> np.ndarray:
        """(K, N) bool for these units at K steps (baselines.py's rules)."""
        n, p = len(units), self.params
        outer = np.zeros(n, bool)  # units that hold other units run at every step under fora / uniform
        outer[[u.parent for u in units if u.parent >= 0]] = True
        if self.name == "ones":
            return baselines.ones(k, n)
        if self.name == "deepcache":
            return baselines.deepcache(units, k, interval=p["interval"], branch=p["branch"])
        if self.name == "fora":
            return baselines.fora(k, n, interval=p["interval"], keep=outer)
        if self.name == "blocks":
            return baselines.block_cache(k, n, interval=p["interval"])
        return baselines.uniform(k, n, every=p["every"], keep=outer)


@dataclasses.dataclass
class FixedMask:
    mask: np.ndarray  # (K0, N)
    levels: np.ndarray | None  # (K0,) noise levels it was made at, when the file records them
    resample: bool
    label: str

    def __str__(self):
        return self.label

    def build(self, units, k: int, levels, scheduler, *_costs) -> np.ndarray:
        return self.at(k, levels, scheduler)

    def at(self, k: int, dst_levels: np.ndarray, scheduler) -> np.ndarray:
        k0 = self.mask.shape[0]
        if k == k0:
            return self.mask
        if not self.resample:
            raise MaskError(f"the pipeline runs {k} steps but the mask has {k0} rows; pass resample=True to align "
                            f"its rows on noise levels, or run num_inference_steps={k0}")
        src = self.levels if self.levels is not None and len(self.levels) == k0 else _levels_at(scheduler, k0, dst_levels)
        return resample_mask(self.mask, src, dst_levels)


def _levels_at(scheduler, k: int, dst_levels: np.ndarray) -> np.ndarray:
    """The row levels a fresh copy of the scheduler visits at K steps; evenly spaced over the current
    run's range when the scheduler cannot set K steps on its own (Flux's dynamic shifting needs ``mu``)."""
    try:
        fresh = type(scheduler).from_config(scheduler.config)
        fresh.set_timesteps(k)
        return row_levels(fresh, rows_of_calls(fresh))
    except Exception:  # noqa: BLE001  (any scheduler refusal: fall back to even spacing)
        return even_levels(k, dst_levels[0], dst_levels[-1])


def row_levels(scheduler, rows: list[int] | None = None) -> np.ndarray:
    """(K,) noise level (timestep) of the first model call of each row of the scheduler's current run;
    ``rows``: the row of each call (:func:`blockmask.core.schedulers.call_rows`), None when unknown."""
    ts = scheduler.timesteps.detach().cpu().double().numpy()
    if rows:
        return ts[[rows.index(r) for r in range(max(rows) + 1)]]
    return ts[:: max(1, int(getattr(scheduler, "order", 1)))][: scheduler_rows(scheduler)]


def rows_of_calls(scheduler) -> list[int] | None:
    """The row of each model call of the current run, or None for a scheduler that cannot be stepped on zeros."""
    try:
        return call_rows(plain_copy(scheduler))
    except Exception:  # noqa: BLE001  (no alignment then: rows follow completed steps)
        return None


def plain_copy(scheduler):
    """A deep copy without blockmask's instance wrappers (they would step the original)."""
    c = copy.deepcopy(scheduler)
    for name in ("set_timesteps", "step"):
        c.__dict__.pop(name, None)
    return c
