"""The dense frontier: many budgets planned from one candidate pool, scored once.

:meth:`blockmask.learning.planner.Planner.plan` builds and scores its candidates per budget. A frontier of
dozens of budgets (every K'/K_ref, and every peer's own MAC point) shares almost all of that work,
so :func:`sweep` does it once:

1. **Pool.** Plain fewer steps at the largest K' under each budget; every rule
   (:func:`blockmask.learning.candidates.rule_specs`) at the largest K under each budget (so a rule at
   K_ref sits at its own MAC point, and "fewer steps + rule" fills the budgets below it); the
   per-step learned scores (ours and the paper's recipe) trained **once** at K_ref and thresholded
   to each budget (:func:`blockmask.learning.candidates.fit_scores`: calibrate once, fit any budget).
2. **Screen** every candidate on the first calibration chunk (cached per run, as everywhere in the
   planner).
3. **Per budget:** the ``screen_keep`` best screened candidates that fit it go on to every
   calibration seed; at the budgets in ``refine_at`` the best ``refine_top`` of them are refined
   (:meth:`Planner.refined`, local search on the calibration chunk under that budget). The choice is
   :meth:`Planner.select`'s: validated on disjoint seeds, the simpler candidate unless a richer one
   wins by more than its bootstrap interval, never below plain fewer steps at that budget.

Every choice is made on calibration and validation seeds only; ``benchmarks/frontier.py`` judges
the result on test seeds no choice saw.
"""

from __future__ import annotations

import time

from blockmask.core.errors import OptionError
from blockmask.learning import candidates as cd
from blockmask.learning.candidates import Candidate


def _tag(c: Candidate, what: str) -> Candidate:
    c.name = f"{c.name} ({what})"
    return c


def pool(pl, caps: list[tuple[float, float]], *, learn: bool, masked: set | None = None) -> list[Candidate]:
    """Every candidate of the sweep (module doc, 1), unique by (steps, mask). ``masked``: the budgets
    at which rules and learned masks are fitted (None: every budget); fewer steps is at every one."""
    out: list[Candidate] = []
    specs = cd.rule_specs(pl.wb)
    fitted = [(b, cap) for b, cap in caps if masked is None or b in masked]
    for _, cap in caps:
        f = cd.fewer_steps(pl.cost, cap, pl.ref_steps)
        if f is not None:
            out.append(f)
    for _, cap in fitted:
        rules = cd.rule_candidates(pl.wb, pl.cost, cap, pl.ref_steps, specs=specs)
        out.extend(rules)
        if pl.config.forecast:  # the same rules with forecast reuse (blockmask.core.forecast)
            out.extend(pl.forecasts(rules, cap))
    if learn:
        for recipe in pl.config.recipes:
            pl.stage(f"learning ({recipe}) at K={pl.ref_steps}")
            scores, params = cd.learn_scores(pl.wb, pl.train_config(recipe, pl.ref_steps))
            for _, cap in fitted:
                c = cd.learned_from_scores(pl.wb, scores, params, pl.cost, cap)
                if c is not None:
                    out.append(_tag(c, f"{pl.macs_ratio(c.steps, c.mask):.1%} MACs"))
                    if pl.config.forecast:
                        out.extend(pl.forecasts([c], cap))
    return cd.unique(out)


def sweep(pl, budgets, *, refine_at=(), learn: bool | None = None, mask_every: int = 1):
    """Yield one :class:`blockmask.learning.planner.Schedule` per budget, in order, each as soon as it is
    chosen (module doc). ``refine_at``: the budgets
    (of ``budgets``) at which the best candidates are also refined; ``learn``: the planner's
    ``learn`` when None; ``mask_every``: fit rules and learned masks at every ``mask_every``-th
    budget (and at the ``refine_at`` ones and the largest), to bound the pool — a budget between
    them still sees every candidate that fits it."""
    caps = [(b, pl.check(b)) for b in budgets]  # every budget checked before any work
    refine_at = {float(b) for b in refine_at}
    if mask_every < 1:
        raise OptionError(f"mask_every must be at least 1, got {mask_every}")
    pl.start_bar()
    t_pool = time.perf_counter()
    masked = {b for b, _ in caps[::mask_every]} | refine_at | {caps[-1][0]}
    cands = pool(pl, caps, learn=pl.config.learn if learn is None else learn, masked=masked)
    pl.stage(f"screening {len(cands)} candidates")
    screen = {c.key: pl.calib_psnr(c, chunks=1) for c in cands if c.family != "fewer-steps"}
    shared = time.perf_counter() - t_pool
    refined: list[Candidate] = []
    chosen_before: list[Candidate] = []
    for b, cap in caps:
        t0 = time.perf_counter()
        runs0, work0 = pl.scorer.runs, pl.scorer.sample_steps
        fewer = cd.fewer_steps(pl.cost, cap, pl.ref_steps)
        fits = [c for c in cands + refined if c.family != "fewer-steps" and cd.fits(c.cost, cap)]
        top = sorted((c for c in fits if c.key in screen), key=lambda c: -screen[c.key])[: pl.config.screen_keep]
        # what was refined or chosen at smaller budgets fits this one too
        top += [c for c in refined + chosen_before if cd.fits(c.cost, cap)]
        short = cd.unique([fewer, *top])
        short.sort(key=lambda c: -pl.calib_psnr(c))
        if float(b) in refine_at:
            pl.stage(f"B={b:g}: refining")
            for start in [c for c in short if c.family != "fewer-steps"][: pl.config.refine_top]:
                r = pl.refined(start, cap)
                if r is not None:
                    refined.append(_tag(r, f"under {pl.macs_ratio(r.steps, r.mask):.1%} MACs"))
                    short.append(r)
            short = cd.unique(short)
            short.sort(key=lambda c: -pl.calib_psnr(c))
        pl.stage(f"B={b:g}: validation")
        chosen, val = pl.select(short, fewer)
        if chosen.family != "fewer-steps":
            chosen_before.append(chosen)
        s = pl.schedule(b, chosen, val, short, t0=t0, runs0=runs0, work0=work0)
        s.work["shared_pool_seconds"] = shared  # the pool and its screening, made once for every budget
        s.work["pool_size"] = len(cands)
        yield s


def frontier_budgets(ref_steps: int, *, extra=(), k_min: int | None = None, k_max: int | None = None) -> list[float]:
    """Every K'/K_ref from ``k_min`` (13 at K_ref = 50, scaled) to ``k_max`` (45, scaled), plus
    ``extra`` (the peers' own MAC points, a grid), sorted and unique."""
    lo = k_min if k_min is not None else max(1, round(13 * ref_steps / 50))
    hi = k_max if k_max is not None else max(lo, round(45 * ref_steps / 50))
    vals = {round(k / ref_steps, 12) for k in range(lo, hi + 1)} | {round(float(e), 12) for e in extra}
    return sorted(v for v in vals if 0 < v <= 1)


