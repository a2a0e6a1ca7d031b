"""blockmask.hooks.chaincache: a DiT whose blocks are all reused at the same steps (block caching) keeps
one residual for the whole chain. The images equal the per-block caches' up to float rounding, every
unit call is counted as before, only the chain's last block keeps a cache, rectification changes no
image, the plan is refused wherever one of its conditions fails, and a chain not called as one raises
one MaskError line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blockmask.core import baselines
from blockmask.core.errors import MaskError
from blockmask.hooks import chaincache
from blockmask.hooks.execution import MaskedExecution, UnitHook

STEPS = 7


def block_caching(wb, interval: int = 2, steps: int = STEPS) -> np.ndarray:
    block = np.array([u.residual for u in wb.units])
    return baselines.fora(steps, len(wb.units), interval=interval, keep=~block)


@pytest.fixture
def planned(monkeypatch):
    """Every plan made (a spy on chaincache.plan)."""
    seen = []
    real = chaincache.plan

    def spy(execution):
        seen.append(real(execution))
        return seen[-1]

    monkeypatch.setattr(chaincache, "plan", spy)
    return seen


@pytest.mark.parametrize("interval", [2, 3])
@pytest.mark.parametrize("reuse", ["hold", "forecast"])
@pytest.mark.parametrize("rectified", [False, True])
def test_same_images_same_tallies_one_cache(workbenches, monkeypatch, planned, interval, reuse, rectified):
    wb = workbenches("tiny-dit")
    m = block_caching(wb, interval)
    if rectified:  # every unit 0 at the reuse steps: the branches are not called there either way
        m = wb.rectify(m, reuse=reuse).mask
        assert not m[1].any()
    log = {"tally": [], "store": 0}
    tally, store = UnitHook.tally, MaskedExecution.store
    monkeypatch.setattr(UnitHook, "tally", lambda self, ran: (log["tally"].append((self.index, ran)), tally(self, ran)))
    monkeypatch.setattr(MaskedExecution, "store", lambda self, o, n: (log.__setitem__("store", log["store"] + 1),
                                                                      store(self, o, n))[1])
    got = wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse)
    assert planned and planned[-1] is not None
    blocks = sum(u.residual for u in wb.units)
    stores = log["store"]
    counted = sorted(log["tally"])
    log["tally"][:], log["store"] = [], 0
    monkeypatch.setattr(chaincache, "plan", lambda execution: None)
    want = wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)  # other order of additions
    assert counted == sorted(log["tally"]) and any(not ran for _, ran in counted)
    assert blocks > 1 and stores > 0 and log["store"] == blocks * stores  # one cache for the chain, not one per block


def test_only_the_last_block_keeps_a_cache(workbenches):
    wb = workbenches("tiny-dit")
    m = block_caching(wb)
    block = np.array([u.residual for u in wb.units])
    with torch.no_grad(), MaskedExecution(wb.model, m).whole_run() as ex:
        x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([500, 500]), torch.tensor([1, 2])
        for k in range(3):
            ex.set_step(k)
            wb.model(x, timestep=t, class_labels=y)
        kept = np.array([h.states.peek(0) is not None for h in ex.hooks])
        assert ex.chain is not None
    assert kept.sum() == 1 and kept[np.flatnonzero(block)[-1]]


def test_rectification_changes_no_image(workbenches):
    wb = workbenches("tiny-dit")
    for reuse in ("hold", "forecast"):
        m = block_caching(wb, 3)
        r = wb.rectify(m, reuse=reuse).mask
        assert not np.array_equal(r, m)
        a, b = (wb.generate(mask, steps=STEPS, seed=5, num_images=2, reuse=reuse) for mask in (m, r))
        assert torch.equal(a, b)


def test_forecast_is_not_hold(workbenches):
    """(So the chain's forecast weights are exercised: the two runs differ.)"""
    wb = workbenches("tiny-dit")
    m = block_caching(wb)
    hold = wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse="hold")
    assert not torch.allclose(hold, wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse="forecast"), atol=1e-3)


def chain_of(wb, mask, whole=True, **kw):
    ex = MaskedExecution(wb.model, mask, **kw)
    if whole:
        ex.whole_run()
    with ex:
        return ex.chain


def test_plan_refused_unless_every_condition_holds(workbenches):
    dit, pixart = workbenches("tiny-dit"), workbenches("tiny-pixart")
    m = block_caching(dit)
    assert chain_of(dit, m) is not None and chain_of(dit, m, reuse="forecast") is not None
    assert chain_of(dit, m, whole=False) is None  # not a whole run: a later mask may reuse one block alone
    block = np.array([u.residual for u in dit.units])
    assert chain_of(dit, baselines.fora(STEPS, len(dit.units), interval=2, keep=block)) is None  # FORA: blocks run
    assert chain_of(dit, np.ones((STEPS, len(dit.units)), bool)) is None  # nothing reused
    apart = m.copy()
    apart[1, np.flatnonzero(block)[0]] = True  # one block runs where the others are reused
    assert chain_of(dit, apart) is None
    assert chain_of(pixart, block_caching(pixart)) is None  # not a declared chain
    handle = dit.model.transformer_blocks[1].register_forward_hook(lambda mod, a, out: None)
    try:
        assert chain_of(dit, m) is None  # somebody else's hook might change a block's output
    finally:
        handle.remove()


def test_a_chain_not_called_as_one_raises_one_mask_error(workbenches):
    wb = workbenches("tiny-dit")
    m = block_caching(wb)
    x, labels = torch.randn(2, 4, 8, 8), torch.tensor([1, 2])
    h = torch.randn(2, 16, 16)
    blocks = wb.model.transformer_blocks
    for step in (0, 1):  # a computed step, then a reuse step
        with torch.no_grad(), MaskedExecution(wb.model, m).whole_run() as ex:
            ex.set_step(0)
            wb.model(x, timestep=torch.full((2,), 900.0), class_labels=labels)
            ex.set_step(step)
            with pytest.raises(MaskError, match="not called as a chain"):
                blocks[1](h, timestep=torch.full((2,), 800.0), class_labels=labels)
