"""Issue 30: every way of making a mask — the per-step trainer, the planner (search), feature-change,
the router and global optimisation — with a one-call scheduler (DDIM), a stochastic one (Euler-a)
and a two-call one (Heun), on a tiny U-Net and a tiny DiT. Each mask then runs in blockmask's
sampling loop with that scheduler, one row per scheduler step and every model call of the row
following it (Heun: two calls per row, the last row one)."""

from __future__ import annotations

import numpy as np
import pytest

from blockmask.learning import methods
from blockmask.learning.candidates import TOL
from blockmask.hooks.execution import MaskedExecution
from blockmask.learning.planner import Planner
from blockmask.sampling.sample import SampleOptions, sample
from blockmask.core.schedulers import calls_per_row
from blockmask.learning.train import Observers, TrainConfig, train_mask

K = 4
TARGET = 0.6
QUICK = {"feature-change": {}, "router": {"iters_per_step": 1, "batch": 2}, "global": {"iters": 2}}
PRODUCERS = ["per-step", "planner", *methods.METHODS]


def _per_step(wb, _):
    cfg = TrainConfig(steps=K, iters=4, batch=1, lr=0.6, lam=30.0, probes=None)
    p = wb.macs
    st = train_mask(wb.model, wb.scheduler(), cfg, p, observers=Observers(progress=False))
    return np.array(st.rows, bool)


def _planner(wb, _):
    pl = Planner(wb, ref_steps=K, calib=2, valid=2, chunk=2, screen=1, train_iters=1, train_batch=1, refine_top=1,
                 refine_seconds=1.0, validate_top=1, resamples=50, recipes=("blockmask",), progress=False)
    s = pl.plan(TARGET)
    assert s.scheduler == wb.scheduler_name and s.macs_ratio <= TARGET * (1 + TOL)
    assert s.cost == pytest.approx(wb.macs.total(s.mask))  # the plan's cost is counted per model call
    return s.mask


def _method(name):
    def make(wb, data):
        opts = {**QUICK[name], **({"data": data} if name == "router" else {})}
        mask, meta = wb.method(name, steps=K, target_macs=TARGET, **opts)
        ratio = wb.macs.ratio(mask)
        assert abs(ratio / TARGET - 1) <= 0.02 and meta["macs_ratio"] == pytest.approx(ratio)
        assert np.array_equal(wb.rectify(mask).mask, mask)
        return mask
    return make


MAKE = {"per-step": _per_step, "planner": _planner, **{n: _method(n) for n in methods.METHODS}}


@pytest.mark.parametrize("scheduler", ["ddim", "euler-a", "heun"])
@pytest.mark.parametrize("model", ["tiny-unet", "tiny-dit"])
@pytest.mark.parametrize("producer", PRODUCERS)
def test_every_method_with_every_kind_of_scheduler(workbenches, mnist_dir, producer, model, scheduler):
    wb = workbenches(model, scheduler)
    n = len(wb.units)
    mask = MAKE[producer](wb, str(mnist_dir))
    steps = mask.shape[0]
    assert mask.shape == (steps, n) and mask[0].all()
    if producer != "planner":  # the planner may choose plain fewer steps
        assert steps == K and not mask.all()
    calls = calls_per_row(wb.scheduler(), steps)
    assert calls.tolist() == ([2] * (steps - 1) + [1] if scheduler == "heun" else [1] * steps)
    with MaskedExecution(wb.model, mask) as ex:
        out = sample(wb.model, num_steps=steps, scheduler=wb.scheduler(), seed=0, mask=mask,
                     options=SampleOptions(execution=ex))
    assert out.isfinite().all()
    assert ex.computed == int(calls @ mask.sum(1)) and ex.skipped == int(calls @ (~mask & _reached(wb, mask)).sum(1))


def _reached(wb, mask):
    """(K, N): the unit's hook is called in that row (no unit it is nested in was reused)."""
    out = np.ones_like(mask)
    for u in wb.units:
        p = u.parent
        while p >= 0:  # every enclosing unit must run
            out[:, u.index] &= mask[:, p]
            p = wb.units[p].parent
    return out
