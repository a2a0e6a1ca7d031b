"""Two sampling runs timed step by step, their model calls interleaved (issue 26: time saved per MAC
saved, measured through a shared CPU's drift).

On this project's 2-core VM the speed of one and the same denoiser call drifts by tens of percent
within minutes. Interleaving whole runs (``frontier_speed.py --pace runs``: a 6 s plain run, then a
3 s schedule) leaves each run's ratio to that drift: per-round speedups of one schedule spread over
±13% and process medians by ±0.1 in time saved per MAC saved (docs/PERFORMANCE.md, "Paced timing"). Here the two runs advance together instead, one model call of each in turn
(spread by progress, so a 24-step schedule interleaves with a 50-step plain run), each on its own copy
of the model's modules sharing one set of weights (:func:`twin_of`): the plain run on a copy that
carries no hook at all, the schedule under its
:class:`blockmask.hooks.execution.MaskedExecution` as :func:`blockmask.sampling.sample.sample` runs it.
Each run's time is the wall time of its own parts: setting up (conditioning, initial noise, the
execution's hooks), every call with its scheduler step, and finishing (hooks off, decoding, the finite
check). Same final images as :meth:`blockmask.workbench.Workbench.generate` (tests/test_planner.py).
"""

from __future__ import annotations

import copy
import time
from typing import NamedTuple

import numpy as np
import torch

from blockmask.hooks.costs import count_macs
from blockmask.hooks.execution import MaskedExecution
from blockmask.sampling.sample import SamplingRun


def schedule_arguments(ap) -> None:
    """The model and schedule options the per-call benchmarks share (``paced_calls.py``,
    ``call_profile.py``, ``run_overheads.py``): a FORA-shaped N=``--interval`` K=``--steps`` run."""
    ap.add_argument("model")
    ap.add_argument("--interval", type=int, default=2)
    ap.add_argument("--reuse", choices=("hold", "forecast"), default="hold")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)


def twin_of(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model``'s modules that shares its parameters and buffers: hooks on one are not on the
    other, while both read the same weights, so neither run's calls find the weights evicted by the
    other's (a full copy would double the working set past this CPU's L3 and make every call cold)."""
    memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


class Spec(NamedTuple):
    """A sampling run: steps, mask (None: plain) and reuse mode."""

    steps: int
    mask: np.ndarray | None = None
    reuse: str = "hold"


class PacedRun:
    """One sampling run on ``model``, stepped from outside; :attr:`seconds` adds up its own parts."""

    def __init__(self, wb, model: torch.nn.Module, spec: Spec, *, seed: int, batch: int, condition):
        self.wb, self.model, self.spec = wb, model, spec
        self.seed, self.batch, self.condition = seed, batch, condition
        self.seconds = 0.0
        self.run: SamplingRun | None = None
        self.ex: MaskedExecution | None = None

    def start(self) -> int:
        """Set up; the number of model calls."""
        t0 = time.perf_counter()
        s = self.spec
        self.run = SamplingRun(self.model, num_steps=s.steps, scheduler=self.wb.scheduler(), seed=self.seed,
                               batch=self.batch, condition=self.condition)
        if s.mask is not None:
            self.ex = MaskedExecution(self.model, s.mask, reuse=s.reuse).whole_run(self.run.calls())  # as sample()
            self.ex.__enter__()
        self.seconds += time.perf_counter() - t0
        return len(self.run)

    def call(self, c: int) -> None:
        t0 = time.perf_counter()
        self.run.call(c, self.ex)
        self.seconds += time.perf_counter() - t0

    def finish(self) -> np.ndarray:
        """Hooks off, decode (as the benchmarks' rows do); the final images."""
        t0 = time.perf_counter()
        if self.ex is not None:
            self.ex.__exit__(None, None, None)
        images = self.wb.images(self.run.latents).numpy()
        self.seconds += time.perf_counter() - t0
        return images


def counted_macs(wb, model: torch.nn.Module, spec: Spec, *, batch: int, condition) -> float:
    """MACs of one :class:`PacedRun` of ``spec`` (set-up and model calls; the finish's decoding is the
    same for every run and is left out, as MACs are counted per model call), counted as every method's
    whole run is (:func:`blockmask.hooks.costs.count_macs`): what the timed code really computes."""
    run = PacedRun(wb, model, spec, seed=1, batch=batch, condition=condition)

    def calls() -> None:
        for c in range(run.start()):
            run.call(c)

    with torch.no_grad():
        try:
            return count_macs(calls)[0]
        finally:
            run.finish()


def interleaved(a: PacedRun, b: PacedRun, *, a_first: bool) -> tuple[np.ndarray, np.ndarray]:
    """Run ``a`` and ``b`` together: set-ups, then their calls merged by progress ((c + ½) / calls),
    then both finishes; ``a_first`` decides the order of every tie and of the set-ups. Final images."""
    first, second = (a, b) if a_first else (b, a)
    with torch.no_grad():
        n = {id(first): first.start(), id(second): second.start()}
        order = sorted([((c + 0.5) / n[id(r)], rank, c, r) for rank, r in enumerate((first, second))
                        for c in range(n[id(r)])], key=lambda e: e[:3])
        for _, _, c, r in order:
            r.call(c)
        out = {id(first): first.finish(), id(second): second.finish()}
    return out[id(a)], out[id(b)]


def paced_ratio(wb, twin: torch.nn.Module, a: Spec, b: Spec, *, rounds: int, batch: int, condition) -> dict:
    """Median (min, max) over rounds of time(a) / time(b) (as ``frontier_speed.ratio``: a = plain gives
    the speedup), the two runs interleaved call by call: ``a`` on ``twin`` (:func:`twin_of` of
    ``wb.model``), ``b`` on ``wb.model``. A warm-up round first; round r uses seed 2 + r for both and
    alternates which goes first."""
    out = []
    for r in range(-1, rounds):
        seed = 1 if r < 0 else 2 + r
        ra = PacedRun(wb, twin, a, seed=seed, batch=batch, condition=condition)
        rb = PacedRun(wb, wb.model, b, seed=seed, batch=batch, condition=condition)
        interleaved(ra, rb, a_first=r % 2 == 0)
        if r >= 0:
            out.append(ra.seconds / rb.seconds)
    return {"median": float(np.median(out)), "min": float(min(out)), "max": float(max(out)), "rounds": rounds}
