"""The planner's candidate schedules (:mod:`blockmask.learning.planner`): a step count K and a K×N mask, each
with the family it comes from and what it costs.

Families, simplest first (the planner prefers the simpler one unless a richer one wins by more
than its bootstrap interval): ``fewer-steps`` (the plain model at K' steps, no mask), ``rule``
(DeepCache at every branch and interval, FORA, block caching, uniform, each at the largest K that
fits the budget and its neighbours), ``refined`` (local search from a candidate,
:func:`blockmask.learning.refine.refine`) and ``learned`` (the per-step trainer, ours and the paper's
recipe, brought to the budget by its scores).

Costs are in the plan's unit: a ``cost(steps, mask)`` callable (``mask=None``: the plain model)
on the rectified mask — MACs (``MacProfile.total``/``baseline``) or predicted seconds
(:class:`blockmask.learning.latency.LatencyModel`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import numpy as np

from blockmask.core.errors import BlockmaskError
from blockmask.learning.run import train_once
from blockmask.learning.train import TrainConfig

FAMILIES = ("fewer-steps", "rule", "refined", "learned")  # simplest first
RULE_INTERVALS = {"deepcache": (2, 3, 5), "fora": (2, 3), "blocks": (2, 3), "uniform": (2, 3)}

Cost = Callable[[int, "np.ndarray | None"], float]
TOL = 1e-9  # relative: a cost within float noise of the cap fits it


def fits(cost: float, cap: float) -> bool:
    return cost <= cap * (1 + TOL)


@dataclasses.dataclass(eq=False)
class Candidate:
    name: str
    family: str
    steps: int
    mask: np.ndarray | None  # rectified (K, N) bool; None: the plain model (fewer steps)
    cost: float  # in the plan's unit
    params: dict = dataclasses.field(default_factory=dict)

    @property
    def rank(self) -> int:
        return FAMILIES.index(self.family)

    @property
    def reuse(self) -> str:
        """What its reused units return: "hold" (the last value) or "forecast" (:mod:`blockmask.core.forecast`)."""
        return self.params.get("reuse", "hold")

    @property
    def key(self) -> tuple:
        return (self.steps, None if self.mask is None else np.asarray(self.mask, bool).tobytes(), self.reuse)


def unique(pool: list[Candidate]) -> list[Candidate]:
    seen, out = set(), []
    for c in pool:
        if c.key not in seen:
            seen.add(c.key)
            out.append(c)
    return out


def largest_fitting(cost_at: Callable[[int], float], cap: float, k_max: int, k_min: int = 1) -> int | None:
    """The largest K in [k_min, k_max] with ``cost_at(K) <= cap`` (costs grow about linearly in K:
    start from the linear estimate, then step down or up); None when even ``k_min`` does not fit."""
    top = cost_at(k_max)
    if fits(top, cap):
        return k_max
    k = min(k_max, max(k_min, int(k_max * cap / max(top, 1e-30)) + 1))
    while k >= k_min and not fits(cost_at(k), cap):
        k -= 1
    if k < k_min:
        return None
    while k + 1 <= k_max and fits(cost_at(k + 1), cap):
        k += 1
    return k


def fewer_steps(cost: Cost, cap: float, ref_steps: int) -> Candidate | None:
    """The plain model at the largest K' <= ``ref_steps`` within ``cap`` (K' = floor(B·K_ref) for a
    MAC budget B, also when B·K_ref is not an integer)."""
    k = largest_fitting(lambda s: cost(s, None), cap, ref_steps)
    if k is None:
        return None
    return Candidate(f"DDIM {k} steps", "fewer-steps", k, None, cost(k, None), {"steps": k})


def rule_specs(wb) -> list[tuple[str, dict]]:
    """(name, baseline arguments) of every rule the planner tries on this model."""
    out = []
    unet = type(wb.model).__name__.startswith("UNet")
    if unet:
        for iv in RULE_INTERVALS["deepcache"]:
            br = 0
            while True:  # every branch id the U-Net has
                try:
                    wb.baseline("deepcache", steps=2, interval=iv, branch=br)
                except BlockmaskError:
                    break
                out.append((f"deepcache b{br} N={iv}", {"kind": "deepcache", "interval": iv, "branch": br}))
                br += 1
    for iv in RULE_INTERVALS["fora"]:
        out.append((f"fora N={iv}", {"kind": "fora", "interval": iv}))
    if any(u.residual for u in wb.units):
        for iv in RULE_INTERVALS["blocks"]:
            out.append((f"blocks N={iv}", {"kind": "blocks", "interval": iv}))
    for ev in RULE_INTERVALS["uniform"]:
        out.append((f"uniform every {ev}", {"kind": "uniform", "every": ev}))
    return out


def rule_mask(wb, params: dict, steps: int) -> np.ndarray:
    kw = {k: v for k, v in params.items() if k in ("interval", "branch", "every")}
    return wb.rectify(wb.baseline(params["kind"], steps=steps, **kw)).mask


def rule_candidates(wb, cost: Cost, cap: float, ref_steps: int, *, neighbours: int = 0,
                    specs: list[tuple[str, dict]] | None = None) -> list[Candidate]:
    """Each rule at the largest K <= ``ref_steps`` (and above its interval) whose rectified mask fits
    ``cap``, plus ``neighbours`` step counts below it."""
    out = []
    for name, params in specs if specs is not None else rule_specs(wb):
        low = params.get("interval", params.get("every", 1)) + 1
        masks: dict[int, np.ndarray] = {}

        def at(k, params=params, masks=masks):
            if k not in masks:
                masks[k] = rule_mask(wb, params, k)
            return cost(k, masks[k])

        k = largest_fitting(at, cap, ref_steps, k_min=low)
        if k is None:
            continue
        for kk in range(k, max(low, k - neighbours) - 1, -1):
            at(kk)
            out.append(Candidate(f"{name} K={kk}", "rule", kk, masks[kk], cost(kk, masks[kk]),
                                 {**params, "steps": kk}))
    return out


def forecast_variant(wb, c: Candidate, cost: Cost) -> Candidate | None:
    """``c`` with its reused units forecast from their last two values instead of held
    (:mod:`blockmask.core.forecast`): the same mask, rectified under forecast, so the same or a few more
    MACs; None for a plain fewer-steps candidate or one that already forecasts."""
    if c.mask is None or c.reuse == "forecast":
        return None
    m = wb.rectify(c.mask, reuse="forecast").mask
    return Candidate(f"{c.name} + forecast", c.family, c.steps, m, cost(c.steps, m), {**c.params, "reuse": "forecast"})


def fit_scores(wb, scores: np.ndarray, cost: Cost, cap: float) -> np.ndarray | None:
    """The rectified mask ``scores > t`` (row 0 all ones) for the lowest threshold t that fits
    ``cap`` (bisection over the distinct scores); None when even row 0 alone does not fit."""
    sc = np.asarray(scores, float)
    k = sc.shape[0]

    def mask(t):
        m = sc > t
        m[0] = True
        return wb.rectify(m).mask

    levels = np.unique(np.concatenate([sc[1:].ravel(), [np.inf]]))
    lo, hi = 0, len(levels) - 1  # levels[hi] = inf: only row 0
    if not fits(cost(k, mask(levels[hi])), cap):
        return None
    if fits(cost(k, mask(-np.inf)), cap):
        return mask(-np.inf)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(cost(k, mask(levels[mid])), cap):
            hi = mid
        else:
            lo = mid
    return mask(levels[hi])


def learn_scores(wb, cfg: TrainConfig, *, progress: bool = False) -> tuple[np.ndarray, dict]:
    """The per-step trainer's (K, N) scores (:func:`blockmask.learning.run.train_once` with ``cfg``, e.g.
    ``TrainConfig.for_recipe("paper", steps=K, ...)``) and what made them; :func:`learned_from_scores`
    brings them to any budget, so one training serves every budget at this K."""
    t0 = time.perf_counter()
    state = train_once(wb, cfg, progress=progress)
    return np.array(state.scores, float), {"recipe": cfg.recipe, "steps": cfg.steps, "iters": cfg.iters,
                                           "batch": cfg.batch, "train_seconds": time.perf_counter() - t0}


def learned_from_scores(wb, scores: np.ndarray, params: dict, cost: Cost, cap: float) -> Candidate | None:
    """The learned mask ``scores > t`` fitted to ``cap`` (:func:`fit_scores`) as a candidate."""
    steps = scores.shape[0]
    m = fit_scores(wb, scores, cost, cap)
    if m is None:
        return None
    return Candidate(f"learned ({params['recipe']}) K={steps}", "learned", steps, m, cost(steps, m), dict(params))


def learned_candidate(wb, cfg: TrainConfig, cost: Cost, cap: float, *, progress: bool = False) -> Candidate | None:
    """The per-step learned mask (trained with ``cfg``), brought to ``cap`` by its scores and rectified exactly."""
    scores, params = learn_scores(wb, cfg, progress=progress)
    return learned_from_scores(wb, scores, params, cost, cap)
