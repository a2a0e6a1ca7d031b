"""blockmask.hooks.runsums: a FORA-shaped whole run on a DiT sums each reuse step's branch values at the
steps that compute them. The images equal the shortcuts' up to float rounding, every unit call is
counted as before, no branch value is copied into a cache, the weights are the ones the unit hooks
read, the plan is refused wherever one of its conditions fails, and a run that breaks them raises one
MaskError line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from blockmask.core import baselines
from blockmask.core.errors import MaskError
from blockmask.core.forecast import record, terms
from blockmask.hooks import runsums
from blockmask.hooks.branchstates import UnitState
from blockmask.hooks.execution import MaskedExecution, UnitHook

STEPS = 7


def fora(wb, interval: int = 2) -> np.ndarray:
    keep = np.array([u.residual for u in wb.units])
    return baselines.fora(STEPS, len(wb.units), interval=interval, keep=keep)


def calls_of(k: int = STEPS) -> list[tuple[int, float]]:
    return [(j, 900.0 - 100 * j) for j in range(k)]


@pytest.fixture
def planned(monkeypatch):
    """Every plan made (a spy on runsums.plan)."""
    seen = []
    real = runsums.plan

    def spy(execution, modules):
        seen.append(real(execution, modules))
        return seen[-1]

    monkeypatch.setattr(runsums, "plan", spy)
    return seen


@pytest.mark.parametrize("interval", [2, 3])
@pytest.mark.parametrize("reuse", ["hold", "forecast"])
def test_same_images_same_tallies_no_branch_cache(workbenches, monkeypatch, planned, interval, reuse):
    wb = workbenches("tiny-dit")
    m = fora(wb, interval)
    log = {"tally": [], "store": 0, "serve": 0}
    tally, store, serve = UnitHook.tally, MaskedExecution.store, runsums.RunSums.serve
    monkeypatch.setattr(UnitHook, "tally", lambda self, ran: (log["tally"].append((self.index, ran)), tally(self, ran)))
    monkeypatch.setattr(MaskedExecution, "store", lambda self, o, n: (log.__setitem__("store", log["store"] + 1),
                                                                      store(self, o, n))[1])
    monkeypatch.setattr(runsums.RunSums, "serve", lambda self, h, x: (log.__setitem__("serve", log["serve"] + 1),
                                                                      serve(self, h, x))[1])
    got = wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse)
    blocks = sum(u.residual for u in wb.units)
    assert planned and planned[-1] is not None
    assert log["serve"] == blocks * int((~m).any(axis=1).sum()) > 0 and log["store"] == 0  # FORA keeps no cache
    counted = sorted(log["tally"])
    log["tally"][:] = []
    monkeypatch.setattr(runsums, "plan", lambda execution, modules: None)
    want = wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # other order of additions
    assert counted == sorted(log["tally"]) and log["store"] > 0  # the shortcuts read stored caches


@pytest.mark.parametrize("interval", [2, 3])
@pytest.mark.parametrize("reuse", ["hold", "forecast"])
def test_sums_live_in_recycled_buffers(workbenches, monkeypatch, interval, reuse):
    """Every reuse call's sum after the first few is written into the buffer of a sum served before (no
    fresh tensor per reuse step): as many buffers as sums are alive at once, over a 13-step run."""
    wb = workbenches("tiny-dit")
    keep = np.array([u.residual for u in wb.units])
    m = baselines.fora(13, len(wb.units), interval=interval, keep=keep)
    served = []
    serve = runsums.RunSums.serve

    def spy(self, hook, x):
        y = serve(self, hook, x)
        if hook is self.hooks[0]:
            served.append(self.served)  # (held here, so a fresh tensor could not reuse a freed address)
        return y

    monkeypatch.setattr(runsums.RunSums, "serve", spy)
    wb.generate(m, steps=13, seed=3, num_images=2, reuse=reuse)
    # sums filled ahead of their step at once: hold, the interval's reuse steps; forecast, twice that
    alive = (interval - 1) * (2 if reuse == "forecast" else 1)
    assert len(served) == int((~m).any(axis=1).sum()) > alive
    assert len({id(t) for t in served}) == alive


def test_forecast_is_not_hold(workbenches):
    """(So the forecast weights above are exercised: the two runs differ.)"""
    wb = workbenches("tiny-dit")
    m = fora(wb)
    hold = wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse="hold")
    assert not torch.allclose(hold, wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse="forecast"), atol=1e-3)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.booleans(), min_size=2, max_size=14), st.booleans())
def test_weights_are_what_the_unit_hooks_read(column, forecast):
    computed = [k for k, ran in enumerate(column) if ran]
    state, values = UnitState(), {}
    for j, ran in enumerate(column):
        if ran:
            values[j] = torch.tensor(float(j))
            if forecast:
                record(state, values[j], j)
            else:
                state.cache = values[j]
            continue
        w = runsums.weights(computed, j, forecast)
        if state.cache is None:
            assert w is None
            continue
        read = terms(state, j) if forecast else [(1.0, state.cache)]
        rows = {id(v): k for k, v in values.items()}
        assert w == {rows[id(v)]: pytest.approx(c) for c, v in read}


def entered(wb, m, calls=None, whole=True, **kw) -> MaskedExecution:
    ex = MaskedExecution(wb.model, m, **kw)
    if whole:
        ex.whole_run(calls_of(m.shape[0]) if calls is None else calls)
    return ex.__enter__()


def test_plan_refused_unless_every_condition_holds(workbenches):
    dit, pixart = workbenches("tiny-dit"), workbenches("tiny-pixart")
    m = fora(dit)

    def sums(wb, mask, **kw):
        ex = entered(wb, mask, **kw)
        try:
            return ex.sums
        finally:
            ex.__exit__(None, None, None)

    assert sums(dit, m) is not None
    assert sums(dit, m, reuse="forecast") is not None
    assert sums(dit, m, whole=False) is None  # not a whole run
    assert sums(dit, m, calls=[]) is None and sums(dit, m, calls=list(reversed(calls_of()))) is None
    mixed = m.copy()
    mixed[1, 0] = True  # one branch runs where the others are reused
    assert sums(dit, mixed) is None
    blocks = baselines.uniform(STEPS, len(dit.units), every=2)  # whole blocks reused
    assert sums(dit, blocks) is None
    assert sums(pixart, fora(pixart)) is None  # adaLN-single: no gate tables, not a declared chain
    handle = dit.model.transformer_blocks[1].register_forward_hook(lambda mod, a, out: None)
    try:
        assert sums(dit, m) is None  # somebody else's hook might hold a block's output
    finally:
        handle.remove()


def run_call(wb, ex, k, x, labels):
    ex.set_step(k)
    t = torch.full((x.shape[0],), 900.0 - 100 * k)
    return wb.model(x, timestep=t, class_labels=labels).sample


def test_broken_runs_raise_one_mask_error(workbenches):
    wb = workbenches("tiny-dit")
    m = fora(wb)
    x, labels = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    with torch.no_grad():
        ex = entered(wb, m)
        try:  # a reuse step whose values were never computed
            with pytest.raises(MaskError, match="sum has 0 of its"):
                run_call(wb, ex, 1, x, labels)
        finally:
            ex.__exit__(None, None, None)
        ex = entered(wb, m)
        try:
            run_call(wb, ex, 0, x, labels)
            assert ex.sums is not None and torch.isfinite(run_call(wb, ex, 1, x, labels)).all()
            with pytest.raises(MaskError, match="not the announced run's"):
                run_call(wb, ex, 2, x, torch.tensor([3, 4]))  # other labels than the tables were made with
        finally:
            ex.__exit__(None, None, None)
        ex = entered(wb, m)
        try:
            run_call(wb, ex, 0, x, labels)
            ex.set_step(1)
            h = torch.randn(2, 16, 16)
            with pytest.raises(MaskError, match="not called as a chain"):
                wb.model.transformer_blocks[1](h, timestep=torch.full((2,), 800.0), class_labels=labels)
        finally:
            ex.__exit__(None, None, None)
