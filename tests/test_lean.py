"""blockmask.hooks.lean: a whole run hooks only the units whose cache some step reads. The images are
the fully hooked run's bit for bit, ``computed`` and ``skipped`` count the same, FORA's blocks carry no
unit hook while it runs, a run that is not a whole run hooks every unit, and a whole run's mask cannot
change while it runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.hooks import HookRegistry

from blockmask.core import baselines
from blockmask.core.errors import MaskError
from blockmask.hooks import lean
from blockmask.hooks.execution import HOOK_NAME, MaskedExecution

STEPS = 7


def masks(wb) -> dict[str, np.ndarray]:
    n, block = len(wb.units), np.array([u.residual for u in wb.units])
    rng = np.random.default_rng(0)
    out = {"uniform": baselines.uniform(STEPS, n, every=2), "random": rng.random((STEPS, n)) < 0.6}
    out["random"][0] = True
    if block.any():
        out["fora"] = baselines.fora(STEPS, n, interval=2, keep=block)
        out["blocks"] = baselines.fora(STEPS, n, interval=3, keep=~block)
    return out


@pytest.fixture
def runs(monkeypatch):
    """Spy on lean.hooked: every run's (execution, modules hooked, untallied); ``runs.everyone = True``
    hooks every unit instead (as before lean runs)."""
    real = lean.hooked

    class Runs(list):
        everyone = False

    out = Runs()

    def spy(execution):
        got = (execution.modules, execution.hooks, None) if out.everyone else real(execution)
        out.append((execution, got[0], got[2]))
        return got

    monkeypatch.setattr(lean, "hooked", spy)
    return out


@pytest.mark.parametrize("model", ["tiny-dit", "tiny-unet", "tiny-pixart"])
@pytest.mark.parametrize("reuse", ["hold", "forecast"])
def test_same_images_same_counts_as_every_unit_hooked(workbenches, runs, model, reuse):
    wb = workbenches(model)
    for name, m in masks(wb).items():
        runs.everyone = False
        got = wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse)
        ex, modules, untallied = runs[-1]
        read = ex.reads(m).any(axis=0)
        assert len(modules) == int(read.sum()) and (untallied is None) == bool(read.all()), name
        counts = (ex.computed, ex.skipped)
        runs.everyone = True
        want = wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse)
        assert torch.equal(got, want), name
        assert counts == (runs[-1][0].computed, runs[-1][0].skipped) and counts[0] > 0, name


def test_fora_blocks_carry_no_unit_hook_while_it_runs(workbenches, runs, monkeypatch):
    wb = workbenches("tiny-dit")
    m = masks(wb)["fora"]
    blocks = [i for i, u in enumerate(wb.units) if u.residual]
    hooked = []
    real = MaskedExecution.set_step

    def spy(self, k, branch=0):
        hooked.append([HookRegistry.check_if_exists_or_initialize(self.modules[i]).get_hook(HOOK_NAME) is not None
                       for i in range(len(self.units))])
        return real(self, k, branch)

    monkeypatch.setattr(MaskedExecution, "set_step", spy)
    wb.generate(m, steps=STEPS, seed=3, num_images=1)
    assert hooked and all(not any(h[i] for i in blocks) and any(h) for h in hooked)
    assert runs[-1][2] is not None and list(runs[-1][2]) == [len(blocks)] * STEPS  # their calls, counted per row


def test_a_run_that_is_not_whole_hooks_every_unit(workbenches, runs):
    wb = workbenches("tiny-dit")
    with MaskedExecution(wb.model, masks(wb)["fora"]) as ex:
        assert runs[-1][1] == ex.modules and runs[-1][2] is None


def test_a_whole_runs_mask_cannot_change_while_it_runs(workbenches):
    wb = workbenches("tiny-dit")
    m = masks(wb)["fora"]
    ex = MaskedExecution(wb.model, m).whole_run([(k, 900.0 - 100 * k) for k in range(STEPS)])
    with ex:
        with pytest.raises(MaskError, match="cannot change while it runs"):
            ex.mask = np.ones_like(m)
    ex.mask = np.ones_like(m)  # (after the run: as before)
