"""blockmask.hooks.feeders: a reused branch's norm returns a stand-in, and nothing the model returns changes.

Each test fails without the feeders (no stand-in seen) or with a wrong one (images differ), and the
"all stores" test fails if a unit that a mask never reuses still keeps a cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blockmask.core import baselines
from blockmask.hooks import feeders, shortcuts
from blockmask.hooks.execution import MaskedExecution
from blockmask.sampling.sample import SampleOptions, sample

STEPS = 6


def fora_mask(wb, interval=2):
    keep = np.array([u.residual for u in wb.units])
    return baselines.fora(STEPS, len(wb.units), interval=interval, keep=keep)


def norm_shapes(model) -> list[tuple]:
    """(shapes, handles): every LayerNorm output shape, appended by forward hooks; remove the handles."""
    seen: list[tuple] = []
    handles = [m.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
               for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    return seen, handles


@pytest.mark.parametrize("name", ["tiny-dit", "tiny-pixart"])
@pytest.mark.parametrize("reuse", ["hold", "forecast"])
def test_stand_ins_change_no_image(workbenches, monkeypatch, name, reuse):
    monkeypatch.setattr(shortcuts, "SHORTCUTS", {})  # FORA rows would skip the feeders (test_shortcuts.py)
    wb = workbenches(name)
    n_feeders = len(feeders.feeders_of(wb.model, wb.units))
    assert n_feeders == 2 * sum(u.kind == "block" for u in wb.units)  # attn1 and ff of every block
    m = fora_mask(wb, interval=3)
    seen, handles = norm_shapes(wb.model)
    try:
        got = wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse)
    finally:
        for h in handles:
            h.remove()
    small = [s for s in seen if all(d == 1 for d in s[1:])]
    reused_rows = int((~m).any(axis=1).sum())
    assert len(small) == n_feeders * reused_rows  # every feeder, at every step its branch is reused
    monkeypatch.setattr(feeders, "FEEDERS", {})
    want = wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse)
    assert torch.equal(got, want)


def test_soft_gates_and_bypass_run_the_norm(workbenches, monkeypatch):
    """Training's relaxed gates and the frozen reference need the branch's real input; a hard reuse
    gets the stand-in (the control)."""
    monkeypatch.setattr(shortcuts, "SHORTCUTS", {})
    wb = workbenches("tiny-dit")
    n = len(wb.units)
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([500, 500]), torch.tensor([1, 2])
    with torch.no_grad(), MaskedExecution(wb.model, fora_mask(wb)) as ex:
        ex.set_step(0)
        wb.model(x, timestep=t, class_labels=y)
        ex.set_step(1)
        seen, handles = norm_shapes(wb.model)
        try:
            with ex.soft_gates(torch.full((n,), 0.5)):
                wb.model(x, timestep=t, class_labels=y)
            with ex.reference():
                wb.model(x, timestep=t, class_labels=y)
            assert seen and all(s[1] > 1 for s in seen)
            wb.model(x, timestep=t, class_labels=y)
            assert any(s[1] == 1 for s in seen)
        finally:
            for h in handles:
                h.remove()


def test_hooks_come_off_and_no_feeder_when_chunked(workbenches):
    wb = workbenches("tiny-dit")
    mods = [m for _, m in feeders.feeders_of(wb.model, wb.units)]
    with MaskedExecution(wb.model, fora_mask(wb)):
        assert all(m._diffusers_hook.get_hook(feeders.FEEDER_HOOK) is not None for m in mods)
    assert all(getattr(m, "_diffusers_hook", None) is None or m._diffusers_hook.get_hook(feeders.FEEDER_HOOK) is None
               for m in mods)
    assert all("forward" not in m.__dict__ for m in mods)
    block = wb.model.transformer_blocks[0]
    block.set_chunk_feed_forward(2, 1)
    try:
        assert len(feeders.feeders_of(wb.model, wb.units)) == len(mods) - 1  # block 0's ff has none
    finally:
        block.set_chunk_feed_forward(None, 0)


def test_units_never_reused_store_nothing(workbenches):
    """A run whose mask is known whole (blockmask's sampler) keeps no cache for an all-ones column;
    an execution that may be resumed under another mask (refine) keeps every one."""
    wb = workbenches("tiny-dit")
    m = fora_mask(wb)
    never = m.all(axis=0)
    assert never.any() and not never.all()
    for fixed in (True, False):
        with torch.no_grad(), MaskedExecution(wb.model, m) as ex:
            ex.fixed_mask = fixed
            x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([500, 500]), torch.tensor([1, 2])
            for k in range(2):
                ex.set_step(k)
                wb.model(x, timestep=t, class_labels=y)
            kept = np.array([h.states.peek(0) is not None for h in ex.hooks])
        assert (kept == (~never if fixed else np.ones_like(never))).all(), (fixed, kept)


def test_branches_reused_only_inside_a_reused_block_store_nothing(workbenches):
    """Block caching, rectified (every unit 0 at its reuse steps): a branch is never called where the
    mask reuses it, so no step reads its cache and a whole run keeps none; the blocks keep theirs.
    The images are the unrectified mask's, under which the branches run at every call (and store
    nothing either)."""
    wb = workbenches("tiny-dit")
    n = len(wb.units)
    block = np.array([u.residual for u in wb.units])
    bc = baselines.fora(STEPS, n, interval=2, keep=~block)
    rectified = wb.rectify(bc).mask
    assert not rectified[1].any() and rectified[0].all()
    for reuse in ("hold", "forecast"):
        for m in (bc, rectified):
            with torch.no_grad(), MaskedExecution(wb.model, m, reuse=reuse) as ex:
                ex.whole_run()
                x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([500, 500]), torch.tensor([1, 2])
                for k in range(3):
                    ex.set_step(k)
                    wb.model(x, timestep=t, class_labels=y)
                kept = np.array([h.states.peek(0) is not None for h in ex.hooks])
            assert (kept == block).all(), (reuse, kept)
        got, want = (wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse) for m in (rectified, bc))
        assert torch.equal(got, want)


def test_feeder_step_benchmark_runs_and_refuses_a_model_without_feeders():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    script = str(root / "benchmarks" / "feeder_step.py")
    r = subprocess.run([sys.executable, script, "config:" + str(root / "tests/configs/tiny-dit.json"), "--reps", "1",
                        "--rounds", "1", "--batch", "2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "fora, feeders" in r.stdout and "MACs" in r.stdout
    r = subprocess.run([sys.executable, script, "config:" + str(root / "tests/configs/tiny-unet.json"), "--reps", "1"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "has no feeders" in r.stderr and "Traceback" not in r.stderr


def test_a_whole_run_hooks_only_the_feeders_and_shortcuts_its_mask_needs(workbenches):
    """With the whole run's mask known (whole_run), a feeder only where its branch is reused while its
    block runs, a shortcut only on blocks some step shortcuts; without it, every one as before."""
    wb = workbenches("tiny-dit")
    n = len(wb.units)
    keep = np.array([u.residual for u in wb.units])
    blocks = int(keep.sum())

    def hooked(m, whole: bool) -> tuple[int, int]:
        ex = MaskedExecution(wb.model, m)
        if whole:
            ex.whole_run()
        with ex:
            regs = [getattr(mod, "_diffusers_hook", None) for mod in wb.model.modules()]
            return tuple(sum(r is not None and r.get_hook(h) is not None for r in regs)
                         for h in (feeders.FEEDER_HOOK, shortcuts.SHORTCUT_HOOK))

    fora = fora_mask(wb)
    assert hooked(fora, whole=False) == (2 * blocks, blocks)
    assert hooked(fora, whole=True) == (0, blocks)  # every reused branch is in a shortcut step
    blocks_mask = baselines.fora(STEPS, n, interval=2, keep=~keep)
    assert hooked(blocks_mask, whole=True) == (0, 0)  # block caching
    rectified = wb.rectify(blocks_mask).mask  # its branches 0 where their block is reused: never called
    assert not rectified[1].any() and hooked(rectified, whole=True) == (0, 0)
    block0 = int(np.flatnonzero(keep)[0])
    attn1, ff = [v.index for v in wb.units if v.parent == block0]
    m = np.ones((STEPS, n), bool)
    m[1, attn1] = False  # block 0's ff runs: attn1's feeder stands in, no shortcut
    assert hooked(m, whole=True) == (1, 0)
    m[3, [attn1, ff]] = False  # and a step where both are reused: block 0's shortcut too
    assert hooked(m, whole=True) == (1, 1)
    got = wb.generate(m, steps=STEPS, seed=3, num_images=2)  # a whole run: what it hooks
    with MaskedExecution(wb.model, m) as ex:  # the same mask with every feeder and shortcut on
        want = sample(wb.model, num_steps=STEPS, mask=m, scheduler=wb.scheduler(), seed=3, batch=2,
                      options=SampleOptions(execution=ex))
    assert ex.skipped == int((~m).sum())
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
