"""MaskedExecution.whole_run: in a whole sampling run each unit's cache is one buffer of its own,
refilled in place at every computed step, and the images stay bit for bit what they were."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blockmask.core import baselines
from blockmask.hooks.execution import MaskedExecution
from blockmask.sampling.sample import sample


@pytest.mark.parametrize("name", ["tiny-dit", "tiny-unet"])
@pytest.mark.parametrize("reuse", ["hold", "forecast"])
def test_recycled_buffers_same_images_one_buffer_per_unit(workbenches, monkeypatch, name, reuse):
    wb = workbenches(name)
    n, K = len(wb.units), 7
    m = baselines.uniform(K, n, every=2)
    run = dict(model=wb.model, num_steps=K, mask=m, seed=4, batch=2)
    from blockmask.sampling.sample import SampleOptions

    direct = []
    stores = []  # (recycling?, had a buffer?, kept that buffer?, data pointer kept)
    real = MaskedExecution.store

    def spy(self, old, new):
        out = real(self, old, new)
        t = out if isinstance(out, torch.Tensor) else out[0]
        stores.append((self.recycle, old is not None, out is old, t.data_ptr()))
        direct.append(new is old)  # a residual written straight into its buffer (BoundContract.residual)
        assert not self.recycle or out is not new or new is old  # never the tensor the model goes on with
        return out

    monkeypatch.setattr(MaskedExecution, "store", spy)
    got = sample(scheduler=wb.scheduler(), options=SampleOptions(reuse=reuse), **run)
    whole = MaskedExecution.whole_run  # the same run without the buffers (gate tables and all else kept)
    monkeypatch.setattr(MaskedExecution, "whole_run", lambda self, calls=None: setattr(
        whole(self, calls), "recycle", False) or self)
    want = sample(scheduler=wb.scheduler(), options=SampleOptions(reuse=reuse), **run)
    assert torch.equal(got, want)  # copies are exact
    mine = [s for s in stores if s[0]]
    assert len(mine) == len(stores) // 2 and any(had for _, had, _, _ in mine)
    assert all(kept == had for _, had, kept, _ in mine)  # a buffer, once there, is refilled in place
    firsts = [p for _, had, _, p in mine if not had]
    assert len({p for *_, p in mine}) == len(firsts)  # no other memory: one buffer per unit (two: forecast)
    assert not any(s[2] for s in stores if not s[0])  # without whole_run: a new tensor every time
    residual = any(u.residual and (~m[:, u.index]).any() for u in wb.units)
    assert any(direct) == residual and not any(d for d, s in zip(direct, stores) if not s[0])


def test_no_recycling_outside_a_whole_run_or_under_autograd(workbenches):
    wb = workbenches("tiny-dit")
    n = len(wb.units)
    m = np.ones((3, n), bool)
    m[1] = False
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([500, 500]), torch.tensor([1, 2])
    for whole, grad in ((False, False), (True, True)):
        ex = MaskedExecution(wb.model, m)
        if whole:
            ex.whole_run()
        with ex, torch.set_grad_enabled(grad):
            seen = []
            for k in (0, 2):
                ex.set_step(k)
                wb.model(x + k, timestep=t, class_labels=y)
                seen.append([h.states.get_state().cache for h in ex.hooks])
            kept = [(a, b) for a, b in zip(*seen) if a is not None or b is not None]
            assert kept and all(a is not b for a, b in kept)  # a fresh tensor each step: nothing overwritten
            if whole:  # (every block reused at row 1: the chain's last block alone keeps a cache)
                assert ex.chain is not None and len(kept) == 1


def test_a_residual_is_written_into_a_buffer_only_where_it_fits(workbenches):
    from blockmask.adapters.contracts import BoundContract

    wb = workbenches("tiny-dit")
    bc = BoundContract.of(wb.model.transformer_blocks[0])
    out, x = torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    buf = torch.empty(2, 4, 8)
    got = bc.residual(out, (x, None), into=buf)
    assert got is buf and torch.equal(buf, out - x)
    for other in (torch.empty(2, 4, 7), torch.empty(2, 4, 8, dtype=torch.float64), (buf,), None):
        r = bc.residual(out, (x, None), into=other)
        assert r is not other and torch.equal(r, out - x)  # a new tensor, the buffer untouched
