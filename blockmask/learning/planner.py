"""The budget planner: "I can afford B of the plain model's compute at K_ref steps (or S seconds):
what should I run?" → a :class:`Schedule` (step count, scheduler, mask, provenance, figures).

1. Candidates (:mod:`blockmask.learning.candidates`): plain fewer steps at the largest K' that fits, every
   rule at the largest K that fits (and its neighbours), the per-step learned mask (ours and the
   paper's recipe) and refinement of the best few.
2. Score: PSNR of the final images against the plain K_ref-step run from the same seeds. The
   rules are screened on the first calibration chunk; the best go on to every calibration seed.
3. Calibration seeds (generator seeds ``calib_seed``.., one per chunk: ``screen`` samples, then
   chunks of ``chunk``) and validation seeds (``valid_seed``..) are disjoint. The best few on calibration, and the best
   fewer-steps candidate always, are scored on validation. A richer candidate (fewer-steps <
   rule < refined < learned) is chosen over a simpler one only when the bootstrap interval of its
   validation gain over it lies above 0, so the chosen schedule is never below plain fewer steps
   on validation.

Every sampling run is cached for the planner's life (same seeds, same step count and mask → same
images), so :meth:`Planner.frontier` shares them across budgets; what a smaller budget chose is a
candidate at the larger ones.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from tqdm.auto import tqdm

from blockmask.core.errors import BlockmaskError, OptionError
from blockmask.core.validate import check_int, check_float
from blockmask.learning import candidates as cd, refine as rf
from blockmask.learning.candidates import Candidate
from blockmask.learning.latency import measure_latency
from blockmask.learning.planscore import Group, Scorer, bootstrap_gain, psnr_db  # noqa: F401  (re-exported)
from blockmask.learning.train import TrainConfig
from blockmask.sampling.sample import SamplingRun

UNITS = ("macs", "seconds")
MAX_SECONDS = 86_400.0  # a latency budget above a day is refused as absurd


@dataclasses.dataclass
class Schedule:
    """What to run for a budget: ``steps`` steps of ``scheduler`` with ``mask`` (all ones: the plain
    model), where it came from, and how it scored."""

    steps: int
    scheduler: str
    mask: np.ndarray
    provenance: dict
    budget: dict
    cost: float
    macs_ratio: float  # MACs / the plain model's at ref_steps
    calibration: dict
    validation: dict
    candidates: list[dict]
    plan_seconds: float
    work: dict = dataclasses.field(default_factory=dict)  # sampling runs and samples × steps this plan made
    reuse: str = "hold"  # what reused units return: their last value or a forecast (blockmask.core.forecast)
    workbench: object = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def family(self) -> str:
        return self.provenance["family"]

    def to_json(self) -> dict:
        return {"steps": self.steps, "scheduler": self.scheduler, "reuse": self.reuse, "provenance": self.provenance,
                "budget": self.budget, "cost": self.cost, "macs_ratio_vs_ref": self.macs_ratio,
                "calibration": self.calibration, "validation": self.validation, "candidates": self.candidates,
                "plan_seconds": self.plan_seconds, "work": self.work}

    def to_mask_file(self, path=None):
        """The schedule as a :class:`blockmask.io.maskfile.MaskFile` (metadata ``plan``: family, provenance,
        figures); written atomically to ``path`` when given."""
        if self.workbench is None:
            raise BlockmaskError("this schedule has no workbench to describe its model")
        mf = self.workbench.mask_file(self.mask, {"family": self.family, "reuse": self.reuse, "plan": self.to_json()})
        if path is not None:
            mf.save(path)
        return mf


@dataclasses.dataclass
class PlanConfig:
    """How the planner searches and scores (docs/METHOD.md §6). Samples: ``calib`` calibration samples
    from generator seed ``calib_seed`` (the first ``screen`` screen the rules), ``valid`` validation
    samples from ``valid_seed`` (disjoint), in chunks of ``chunk``. Candidates: the per-step learned
    mask with each of ``recipes`` when ``learn`` (``train_iters`` × ``train_batch`` per step),
    refinement of the ``refine_top`` best (``refine_seconds`` each), ``neighbours`` step counts around
    each rule's largest K that fits, forecast variants when ``forecast``. Selection: the
    ``screen_keep`` best rules go on past screening, the ``validate_top`` best on calibration to
    validation, with a ``resamples``-fold bootstrap. ``unit="seconds"`` plans against a latency model
    measured at batch ``latency_batch``."""

    ref_steps: int = 50
    unit: str = "macs"
    calib: int = 64
    valid: int = 128
    chunk: int = 64
    screen: int = 16
    calib_seed: int = 0
    valid_seed: int = 10_000
    learn: bool = True
    recipes: tuple[str, ...] = ("blockmask", "paper")
    train_iters: int = 6
    train_batch: int = 2
    refine_top: int = 2
    refine_seconds: float = 40.0
    screen_keep: int = 4
    neighbours: int = 1
    validate_top: int = 2
    resamples: int = 1000
    latency_batch: int = 1
    forecast: bool = True
    progress: bool = True

    @classmethod
    def of(cls, config: "PlanConfig | None" = None, **options) -> "PlanConfig":
        """``config`` (default: the defaults) with ``options`` replacing fields; an unknown option is one
        :class:`OptionError` naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise OptionError(f"unknown planner option(s) {', '.join(unknown)}; choose from {', '.join(sorted(names))}")
        cfg = dataclasses.replace(config or cls(), **options)
        return dataclasses.replace(cfg, recipes=tuple(cfg.recipes), forecast=bool(cfg.forecast))


class Planner:
    """Plans budgets for one model at one reference step count, sharing every sampling run.

    ``Planner(wb, PlanConfig(ref_steps=50, calib=64))`` or, the same, ``Planner(wb, ref_steps=50, calib=64)``
    (keywords replace fields of ``config``). ``latency``: a measured latency model to plan seconds with
    (else measured here when ``unit="seconds"``)."""

    def __init__(self, wb, config: PlanConfig | None = None, *, latency=None, **options):
        cfg = self.config = PlanConfig.of(config, **options)
        unit = cfg.unit
        if not isinstance(unit, str) or unit not in UNITS:
            raise OptionError(f"unknown budget unit {unit!r}; choose from {', '.join(UNITS)}")
        self.ref_steps = check_int("reference steps", cfg.ref_steps, low=2, high=10_000)
        wb.timesteps(self.ref_steps)  # the scheduler can run it
        calib, valid = check_int("calibration samples", cfg.calib, low=2), check_int("validation samples", cfg.valid, low=2)
        chunk = check_int("chunk", cfg.chunk, low=1, high=4096)
        screen = check_int("screening samples", cfg.screen, low=1, high=4096)
        calib_seed = check_int("calibration seed", cfg.calib_seed, low=0, high=2**62)
        valid_seed = check_int("validation seed", cfg.valid_seed, low=0, high=2**62)
        self.calib = Group("calibration", calib_seed, calib, chunk, first=screen)
        self.valid = Group("validation", valid_seed, valid, chunk)
        if set(self.calib.seeds) & set(self.valid.seeds):
            raise OptionError(f"calibration seeds {self.calib.seeds[0]}..{self.calib.seeds[-1]} and validation seeds "
                              f"{self.valid.seeds[0]}..{self.valid.seeds[-1]} overlap")
        self.wb, self.unit = wb, unit  # the search's other settings are read from self.config
        self.bar = None  # the progress bar: made by the first plan()
        self.scorer = Scorer(wb, self.ref_steps, guidance=wb.default_guidance)
        self.profile = wb.macs
        self.latency = latency
        if unit == "seconds" and latency is None:
            self.latency = measure_latency(wb, batch=cfg.latency_batch)
        self._chosen: list[Candidate] = []  # what earlier plan() calls chose (candidates for larger budgets)

    # --- costs ------------------------------------------------------------------------------
    def cost(self, steps: int, mask: np.ndarray | None) -> float:
        if self.unit == "seconds":
            return self.latency.seconds(steps, mask)
        return self.profile.baseline(steps) if mask is None else self.profile.total(mask)

    def train_config(self, recipe: str, steps: int) -> TrainConfig:
        """The per-step trainer's config for a learned candidate at ``steps`` (``recipe``'s choices)."""
        cfg = self.config
        return TrainConfig.for_recipe(recipe, steps=steps, iters=cfg.train_iters, batch=cfg.train_batch,
                                      guidance_scale=self.scorer.guidance)

    def macs_ratio(self, steps: int, mask: np.ndarray | None) -> float:
        total = self.profile.baseline(steps) if mask is None else self.profile.total(mask)
        return total / self.profile.baseline(self.ref_steps)

    def cap(self, budget) -> float:
        """The budget in the plan's unit (checked: a MAC fraction in (0, 1], or seconds in (0, a day])."""
        if self.unit == "macs":
            b = check_float("MAC budget", budget, low=0, high=1, low_open=True)
            return b * self.profile.baseline(self.ref_steps)

        return check_float("latency budget (seconds)", budget, low=0, high=MAX_SECONDS, low_open=True)

    def check(self, budget) -> float:
        """The cap for ``budget``, or one clear error when nothing fits it."""
        cap = self.cap(budget)
        cheapest = self.cost(1, None)
        if not cd.fits(cheapest, cap):
            what = (f"MAC budget {budget:g} is unreachable at {self.ref_steps} reference steps" if self.unit == "macs"
                    else f"latency budget {budget:g}s is unreachable on {self.wb.device}")
            raise BlockmaskError(f"{what}: the cheapest schedule (the plain model, 1 step) costs "
                                 + (f"{cheapest / self.profile.baseline(self.ref_steps):.3g}" if self.unit == "macs"
                                    else f"{cheapest:.3g}s"))
        return cap

    # --- planning ---------------------------------------------------------------------------
    def stage(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(f"planning {text}")

    def calib_psnr(self, c: Candidate, chunks: int | None = None) -> float:
        return psnr_db(self.scorer.errors(self.calib, c, chunks=chunks))

    def candidates(self, budget) -> tuple[list[Candidate], Candidate]:
        """Every candidate scored on all calibration seeds, and the fewer-steps one."""
        cap = self.check(budget)
        self.stage(f"B={budget:g}: rules")
        fewer = cd.fewer_steps(self.cost, cap, self.ref_steps)
        rules = cd.rule_candidates(self.wb, self.cost, cap, self.ref_steps)
        if self.config.forecast:  # every rule also with its reused units forecast (the same mask, rectified for it)
            rules += self.forecasts(rules, cap)
        screened = sorted(rules, key=lambda c: -self.calib_psnr(c, chunks=1))[: self.config.screen_keep]
        # the schedules chosen for smaller budgets fit this one too: a frontier never gets worse as B grows
        pool = [fewer, *screened, *(c for c in self._chosen if cd.fits(c.cost, cap))]
        for c in screened[:2]:  # neighbours: the same rule at fewer steps
            low = max(c.params.get("interval", c.params.get("every", 1)),
                      c.steps - 1 - self.config.neighbours)
            for k in range(c.steps - 1, low, -1):
                m = cd.rule_mask(self.wb, c.params, k)
                hold = {key: v for key, v in c.params.items() if key != "reuse"}
                n = Candidate(f"{c.name.rsplit(' K=', 1)[0]} K={k}", "rule", k, m, self.cost(k, m), {**hold, "steps": k})
                pool.append(n if c.reuse == "hold" else cd.forecast_variant(self.wb, n, self.cost))
        pool = cd.unique(pool)
        pool.sort(key=lambda c: -self.calib_psnr(c))
        if self.config.learn:
            self.stage(f"B={budget:g}: learning")
            best_rule = next((c for c in pool if c.family == "rule"), None)
            k = best_rule.steps if best_rule is not None else max(2, min(self.ref_steps, fewer.steps + 2))
            for recipe in self.config.recipes:
                lc = cd.learned_candidate(self.wb, self.train_config(recipe, k), self.cost, cap)
                if lc is not None:
                    pool.extend([lc, *self.forecasts([lc], cap)])
        pool = cd.unique(pool)
        pool.sort(key=lambda c: -self.calib_psnr(c))
        starts = [c for c in pool if c.family != "fewer-steps"][: self.config.refine_top]
        self.stage(f"B={budget:g}: refining")
        for c in starts:
            r = self.refined(c, cap)
            if r is not None:
                pool.append(r)
        pool = cd.unique(pool)
        pool.sort(key=lambda c: -self.calib_psnr(c))
        return pool, fewer

    def forecasts(self, pool: list[Candidate], cap: float) -> list[Candidate]:
        """The forecast variants (:func:`blockmask.learning.candidates.forecast_variant`) that fit ``cap``."""
        out = [cd.forecast_variant(self.wb, c, self.cost) for c in pool]
        return [c for c in out if c is not None and cd.fits(c.cost, cap)]

    def refined(self, start: Candidate, cap: float) -> Candidate | None:
        """Local search from ``start`` on the first calibration chunk (:func:`blockmask.learning.refine.refine`)."""

        k = start.steps
        seed, batch = self.calib.chunks[0]
        ref_lat = self.scorer.reference(seed, batch)[0]
        loop = SamplingRun(self.wb.model, num_steps=k, scheduler=self.wb.scheduler(), seed=seed, batch=batch,
                           condition=self.scorer.condition(batch))
        calib = rf.Calibration(loop, reference=ref_lat, decode=self.wb.images, reuse=start.reuse)
        rows = [r for _, p in cd.rule_specs(self.wb) for r in cd.rule_mask(self.wb, p, max(k, 6))]
        rows += [np.ones(len(self.wb.units), bool), np.zeros(len(self.wb.units), bool), *start.mask]
        cost = _StepCost(self, k, start.reuse)
        mask, rep = rf.refine(calib, start.mask, rows=rows, cost=cost, budget=cap * (1 + cd.TOL), passes=1,
                              time_limit=self.config.refine_seconds)
        if not rep.accepted:
            return None
        return Candidate(f"refined from {start.name}", "refined", k, mask, self.cost(k, mask),
                         {"refined_from": start.name, "start": start.params, "refine": rep.to_json(),
                          **({"reuse": start.reuse} if start.reuse != "hold" else {})})

    def select(self, pool: list[Candidate], fewer: Candidate) -> tuple[Candidate, dict]:
        """Validate the best few; the simplest candidate that no richer one beats by more than the
        bootstrap interval, never below ``fewer`` (module doc)."""
        short = [fewer] + [c for c in pool if c is not fewer][: self.config.validate_top]
        for fam in ("rule", "refined", "learned"):  # the best of each richer family is always validated
            best = next((c for c in pool if c.family == fam), None)
            if best is not None and all(best is not s for s in short):
                short.append(best)
        self.stage("validation")
        errs = {id(c): self.scorer.errors(self.valid, c) for c in short}
        vpsnr = {id(c): psnr_db(errs[id(c)]) for c in short}
        order = sorted(short, key=lambda c: -vpsnr[id(c)])
        chosen = fewer
        for c in order:
            if c is fewer:
                break
            simpler = [s for s in short if s.rank < c.rank]
            resamples = self.config.resamples
            if all(bootstrap_gain(errs[id(s)], errs[id(c)], resamples=resamples)[1] > 0 for s in simpler):
                chosen = c
                break
        gain, lo, hi = bootstrap_gain(errs[id(fewer)], errs[id(chosen)], resamples=self.config.resamples)
        nonlearned = [c for c in short if c.family in ("fewer-steps", "rule")]
        richer = [c for c in short if c.family in ("refined", "learned")]
        val = {"seeds": self.valid.seeds, "samples": self.valid.samples, "psnr": vpsnr[id(chosen)],
               "mse": float(errs[id(chosen)].mean()),
               "fewer_steps": {"steps": fewer.steps, "psnr": vpsnr[id(fewer)]},
               "gain_over_fewer_steps_db": gain, "interval_db": [lo, hi], "resamples": self.config.resamples,
               "scored": {c.name: vpsnr[id(c)] for c in order}}
        if richer and nonlearned:
            a = max(nonlearned, key=lambda c: vpsnr[id(c)])
            b = max(richer, key=lambda c: vpsnr[id(c)])
            g = bootstrap_gain(errs[id(a)], errs[id(b)], resamples=self.config.resamples)
            val["learning_gain_db"] = {"best_non_learned": a.name, "best_learned_or_refined": b.name,
                                       "gain_db": g[0], "interval_db": [g[1], g[2]]}
        return chosen, val

    def start_bar(self) -> None:
        if self.bar is None:
            self.bar = self.scorer.bar = tqdm(desc="planning (sampling runs)", unit="run",
                                              disable=not self.config.progress)

    def plan(self, budget) -> Schedule:
        t0 = time.perf_counter()
        runs0, work0 = self.scorer.runs, self.scorer.sample_steps
        self.start_bar()
        pool, fewer = self.candidates(budget)
        chosen, val = self.select(pool, fewer)
        if chosen.family != "fewer-steps":
            self._chosen.append(chosen)
        return self.schedule(budget, chosen, val, pool, t0=t0, runs0=runs0, work0=work0)

    def schedule(self, budget, chosen: Candidate, val: dict, pool: list[Candidate], *, t0: float, runs0: int,
                 work0: int) -> Schedule:
        """The :class:`Schedule` for ``chosen`` (validated by :meth:`select`) at ``budget``."""
        mask = np.ones((chosen.steps, len(self.wb.units)), bool) if chosen.mask is None else chosen.mask
        cal_err = self.scorer.errors(self.calib, chosen)
        prov = {"family": chosen.family, "name": chosen.name, "params": chosen.params,
                "learned": chosen.family == "learned" or "learned" in str(chosen.params.get("refined_from", "")),
                "refined": chosen.family == "refined"}
        table = [{"name": c.name, "family": c.family, "steps": c.steps, "cost": c.cost,
                  "macs_ratio": self.macs_ratio(c.steps, c.mask), "calibration_psnr": self.calib_psnr(c),
                  "validation_psnr": val["scored"].get(c.name)} for c in pool]
        return Schedule(steps=chosen.steps, scheduler=self.wb.scheduler_name, mask=mask, provenance=prov,
                        budget={"unit": self.unit, "value": budget, "ref_steps": self.ref_steps,
                                **({"latency_model": self.latency.to_json()} if self.unit == "seconds" else {})},
                        cost=chosen.cost, macs_ratio=self.macs_ratio(chosen.steps, chosen.mask),
                        calibration={"seeds": self.calib.seeds, "samples": self.calib.samples, "psnr": psnr_db(cal_err),
                                     "mse": float(cal_err.mean())},
                        validation=val, candidates=table, plan_seconds=time.perf_counter() - t0, workbench=self.wb,
                        reuse=chosen.reuse,
                        work={"sampling_runs": self.scorer.runs - runs0,
                              "sample_steps": self.scorer.sample_steps - work0})

    def frontier(self, budgets) -> list[Schedule]:
        for b in budgets:  # every budget is checked before any work
            self.check(b)
        return [self.plan(b) for b in budgets]

    def close(self):
        if self.bar is not None:
            self.bar.close()


class _StepCost:
    """:func:`blockmask.learning.refine.refine`'s cost interface in the plan's unit at a fixed K."""

    def __init__(self, planner: Planner, steps: int, reuse: str = "hold"):
        self.planner, self.steps, self.reuse = planner, steps, reuse

    def rectified(self, mask):
        return self.planner.wb.rectify(mask, reuse=self.reuse).mask

    def __call__(self, mask) -> float:
        return self.planner.cost(self.steps, self.rectified(mask))

    def row_macs(self, row) -> float:
        if self.planner.unit == "seconds":
            return self.planner.latency.row(row)
        return float(self.planner.profile.per_step(np.asarray(row, bool)[None])[0])


def plan(wb, budget, *, unit: str = "macs", ref_steps: int = 50, **options) -> Schedule:
    """One budget (:class:`Planner` options)."""
    p = Planner(wb, ref_steps=ref_steps, unit=unit, **options)
    try:
        p.check(budget)
        return p.plan(budget)
    finally:
        p.close()
