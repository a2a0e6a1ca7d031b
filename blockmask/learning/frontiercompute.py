"""A model's frontier computed in one call, in memory, with progress: what the apps run for a model
that ships none (issue 28: "computed with progress for others").

It is ``benchmarks/frontier.py --dense`` at small sizes: the same :class:`blockmask.learning.planner.Planner`,
the same shared sweep (:func:`blockmask.learning.sweep.sweep` over :func:`~blockmask.learning.sweep.frontier_budgets` and
the rule peers' own MAC points), the same peers (:func:`blockmask.learning.frontierfile.peer_points`) judged the
same way (:func:`peer_row`) on held-out test seeds. Small: a short reference run (``ref_steps``), a few
samples per seed group, no learning, no refinement, at most ``max_budgets`` budgets, so that it takes
seconds to a few minutes on a CPU for the bundled-size models. Its file says so (``meta["quick"]``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from blockmask.core.errors import BlockmaskError
from blockmask.learning.candidates import Candidate
from blockmask.learning.frontierfile import Frontier, peer_points
from blockmask.learning.planner import Planner, psnr_db
from blockmask.learning.planscore import Group
from blockmask.learning.sweep import frontier_budgets, sweep

TEST_SEED = 20_000  # as benchmarks/frontier.py: disjoint from the planner's calibration and validation seeds


def peer_row(pl: Planner, c, test: Group, plans: list[dict], *, valid: bool = True) -> dict:
    """A peer point's row: MACs, validation and test PSNR against the plain run, and ``met_by``: the first
    plan that matches it (fewer steps: PSNR ≥ at ≤ 1.02× its MACs) or beats it (rules: +0.5 dB at ≤ its
    MACs) on the test seeds, empty if none."""
    r = {"kind": "peer " + c.family, "name": c.name, "family": c.family, "steps": c.steps,
         "macs_ratio": pl.macs_ratio(c.steps, c.mask),
         "valid_psnr": psnr_db(pl.scorer.errors(pl.valid, c)) if valid else float("nan"),
         "test_psnr": psnr_db(pl.scorer.errors(test, c))}
    r["met_by"] = met_by(r, plans)
    return r


def met_by(peer: dict, plans: list[dict]) -> str:
    """The first plan that matches the peer row (fewer steps: test PSNR ≥ at ≤ 1.02× its MACs) or beats
    it (rules: +0.5 dB at ≤ its MACs); "" if none."""
    slack, margin = (1.02, 0.0) if peer["family"] == "fewer-steps" else (1.0, 0.5)
    win = [p for p in plans
           if p["macs_ratio"] <= slack * peer["macs_ratio"] + 1e-12 and p["test_psnr"] >= peer["test_psnr"] + margin]
    return win[0]["name"] if win else ""


class _Bar:
    """The planner's progress-bar interface (tqdm's ``set_description`` / ``set_postfix_str`` / ``update``)
    reported to ``progress(fraction, text)``: one tick per sampling run, the fraction from the budgets done."""

    def __init__(self, progress, total: int):
        self.progress, self.total, self.done, self.text, self.runs = progress, max(1, total), 0, "starting", 0

    def set_description(self, text: str) -> None:
        self.text = text
        self._say()

    def set_postfix_str(self, *_a, **_k) -> None:
        pass

    def update(self, n: int = 1) -> None:
        self.runs += n
        self._say()

    def step(self, text: str) -> None:
        self.done += 1
        self.text = text
        self._say()

    def _say(self) -> None:
        if self.progress is not None:
            self.progress(min(0.99, self.done / self.total), f"frontier: {self.text} ({self.runs} sampling runs)")

    def close(self) -> None:
        pass


def compute(wb, model: str, *, ref_steps: int = 20, samples: int = 4, max_budgets: int = 8, progress=None,
            meta: dict | None = None) -> Frontier:
    """The frontier of ``wb`` (named ``model``) at ``ref_steps``: planned points at up to ``max_budgets``
    budgets and every peer, judged on ``samples`` held-out test samples. ``progress(fraction, text)``."""
    t0 = time.perf_counter()
    n = max(2, int(samples))
    pl = Planner(wb, ref_steps=ref_steps, calib=n, valid=n, chunk=n, screen=n, learn=False, refine_top=0,
                 screen_keep=2, neighbours=0, validate_top=1, resamples=200, progress=False)
    test = Group("test", TEST_SEED, n, n)
    if set(test.seeds) & (set(pl.calib.seeds) | set(pl.valid.seeds)):
        raise BlockmaskError(f"test seeds {test.seeds[0]}.. overlap the planner's seeds")
    peers = peer_points(wb, pl.ref_steps)
    points = sorted({round(pl.macs_ratio(c.steps, c.mask), 12) for c in peers if c.family == "rule"})
    budgets = frontier_budgets(pl.ref_steps, extra=points)
    if len(budgets) > max_budgets:  # evenly thinned, the smallest and the largest kept
        last = len(budgets) - 1
        budgets = [budgets[round(j * last / max(1, max_budgets - 1))] for j in range(max_budgets)]
    bar = _Bar(progress, len(budgets) + len(peers))
    pl.bar = pl.scorer.bar = bar
    rows, masks = [], {}
    for b, s in zip(budgets, sweep(pl, budgets)):
        name = f"{model}-{pl.ref_steps:03d}ref-b{b * 100:05.2f}-plan".replace(".", "p", 1)
        c = s.provenance
        rows.append({"kind": "plan", "name": name, "family": s.family, "provenance": c["name"], "budget": b,
                     "steps": s.steps, "macs_ratio": s.macs_ratio, "valid_psnr": s.validation["psnr"],
                     "test_psnr": psnr_db(pl.scorer.errors(test, _held_out(s))), "met_by": None})
        masks[name] = None if s.mask.all() else s.mask
        bar.step(f"budget {100 * b:.0f} % planned")
    plans = list(rows)
    for c in peers:
        rows.append(peer_row(pl, c, test, plans))
        masks[c.name] = c.mask
        bar.step(f"peer {c.name} judged")
    info = {"quick": True, "device": str(wb.device), "test_seed": TEST_SEED, "test_samples": n,
            "calibration_seeds": pl.calib.seeds, "validation_seeds": pl.valid.seeds,
            "seconds": round(time.perf_counter() - t0, 1), **(meta or {})}
    return Frontier(model, pl.ref_steps, list(wb.unit_names), pd.DataFrame(rows), masks, info)


def _held_out(s):
    return Candidate("held-out", s.family, s.steps, None if s.mask.all() else s.mask, s.cost)


def cache_path(folder, model: str, ref_steps: int) -> Path:
    """Where a computed frontier of ``model`` is kept (found by the apps like the shipped ones)."""
    return Path(folder) / f"{model}-{ref_steps:03d}ref-frontier.json"
