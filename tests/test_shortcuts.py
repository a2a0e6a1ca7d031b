"""blockmask.hooks.shortcuts: a block whose branches are all reused runs as one short sum, and what
the model returns changes only by float rounding (the sum's multiply-adds are fused).

Each equality test also counts the shortcut's calls, so it fails both when the shortcut changes an
image and when it never runs; the fall-through tests fail if the shortcut runs where a branch needs
its real input (soft gates, the frozen reference, a branch that runs) or somebody else's hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.hooks import HookRegistry, ModelHook

from blockmask.core import baselines
from blockmask.hooks import runsums, shortcuts
from blockmask.hooks.execution import MaskedExecution, UnitHook

STEPS = 6


@pytest.fixture
def calls(monkeypatch):
    """The number of times the short sum ran (a spy on ShortcutHook.short)."""
    seen = []
    real = shortcuts.ShortcutHook.short

    def spy(self, module, args, kwargs):
        seen.append(self.indices)
        return real(self, module, args, kwargs)

    monkeypatch.setattr(shortcuts.ShortcutHook, "short", spy)
    return seen


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal up to float rounding: the fused multiply-add rounds once where ``gate * value + x`` rounds twice."""
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def no_shortcuts(monkeypatch):
    monkeypatch.setattr(shortcuts, "SHORTCUTS", {})


def expected_calls(wb, m: np.ndarray) -> int:
    """Cells where a block runs and every unit inside it is reused."""
    n = 0
    for i, u in enumerate(wb.units):
        if u.residual:
            kids = [v.index for v in wb.units if v.parent == i]
            n += int((m[:, i] & ~m[:, kids].any(axis=1)).sum())
    return n


def mixed_mask(wb, seed: int) -> np.ndarray:
    """Random cells, plus FORA rows (a block runs, every branch reused), plus rows where one branch runs."""
    rng = np.random.default_rng(seed)
    m = rng.random((STEPS, len(wb.units))) < 0.5
    keep = np.array([u.residual for u in wb.units])
    m[2] = keep
    m[4] = keep
    m[4, 0] = True  # block 0's first branch runs: no shortcut there
    m[0] = True
    return m


@pytest.mark.parametrize("name", ["tiny-dit", "tiny-pixart"])
@pytest.mark.parametrize("reuse", ["hold", "forecast"])
def test_fora_images_unchanged(workbenches, monkeypatch, calls, name, reuse):
    monkeypatch.setattr(runsums, "plan", lambda execution, modules: None)  # (run sums: tests/test_runsums.py)
    wb = workbenches(name)
    keep = np.array([u.residual for u in wb.units])
    m = baselines.fora(STEPS, len(wb.units), interval=3, keep=keep)
    got = wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse)
    blocks = int(keep.sum())
    assert len(calls) == blocks * int((~m).any(axis=1).sum()) == expected_calls(wb, m) > 0
    no_shortcuts(monkeypatch)
    want = wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse)
    close(got, want)


@pytest.mark.parametrize("name", ["tiny-dit", "tiny-pixart"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixed_masks_unchanged_and_counted(workbenches, monkeypatch, calls, name, seed):
    wb = workbenches(name)
    m = mixed_mask(wb, seed)
    tallies = []
    real = UnitHook.tally
    monkeypatch.setattr(UnitHook, "tally", lambda self, ran: (tallies.append((self.index, ran)), real(self, ran)))
    got = wb.generate(m, steps=STEPS, seed=seed, num_images=2)
    assert len(calls) == expected_calls(wb, m) > 0
    counted, tallies[:] = sorted(tallies), []
    no_shortcuts(monkeypatch)
    want = wb.generate(m, steps=STEPS, seed=seed, num_images=2)
    close(got, want)
    assert counted == sorted(tallies)  # every reused branch is counted as before


def test_soft_gates_and_reference_fall_through(workbenches, calls):
    wb = workbenches("tiny-dit")
    keep = np.array([u.residual for u in wb.units])
    m = baselines.fora(2, len(wb.units), interval=2, keep=keep)
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([500, 500]), torch.tensor([1, 2])
    with torch.no_grad(), MaskedExecution(wb.model, m) as ex:
        ex.set_step(0)
        wb.model(x, timestep=t, class_labels=y)
        ex.set_step(1)
        x = x + 1  # a new input: the cache is not what the branches would compute now
        gates = torch.tensor([0.0 if not r else 1.0 for r in keep])
        with ex.soft_gates(gates):
            soft = wb.model(x, timestep=t, class_labels=y).sample
        with ex.reference():
            ref = wb.model(x, timestep=t, class_labels=y).sample
        assert calls == []
        hard = wb.model(x, timestep=t, class_labels=y).sample
        assert len(calls) == int(keep.sum())
    close(soft, hard)  # gate 0 under soft gates is the cache too (the shortcut fuses: rounding)
    assert not torch.equal(ref, hard)


class Foreign(ModelHook):
    def new_forward(self, module, *args, **kwargs):
        return self.fn_ref.original_forward(*args, **kwargs)


def test_blocks_with_foreign_hooks_and_chunked_blocks_get_none(workbenches):
    wb = workbenches("tiny-dit")
    covered = shortcuts.shortcut_blocks(wb.model, wb.units)
    assert len(covered) == sum(u.residual for u in wb.units) == 3
    attn = wb.model.transformer_blocks[1].attn1
    HookRegistry.check_if_exists_or_initialize(attn).register_hook(Foreign(), "somebody")
    try:
        assert len(shortcuts.shortcut_blocks(wb.model, wb.units)) == 2
    finally:
        attn._diffusers_hook.remove_hook("somebody", recurse=False)
    assert len(shortcuts.shortcut_blocks(wb.model, wb.units)) == 3


def test_hooks_come_off_and_reentry_works(workbenches, calls):
    wb = workbenches("tiny-dit")
    keep = np.array([u.residual for u in wb.units])
    m = baselines.fora(2, len(wb.units), interval=2, keep=keep)
    blocks = [b for b, _ in shortcuts.shortcut_blocks(wb.model, wb.units)]
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([500, 500]), torch.tensor([1, 2])
    ex = MaskedExecution(wb.model, m)
    outs = []
    for _ in range(2):
        with torch.no_grad(), ex:
            assert all(b._diffusers_hook.get_hook(shortcuts.SHORTCUT_HOOK) is not None for b in blocks)
            for k in range(2):
                ex.set_step(k)
                out = wb.model(x + k, timestep=t, class_labels=y).sample
            outs.append(out)
        assert all(b._diffusers_hook.get_hook(shortcuts.SHORTCUT_HOOK) is None for b in blocks)
        assert all("forward" not in b.__dict__ for b in blocks)
    assert len(calls) == 2 * len(blocks) and torch.equal(outs[0], outs[1])


def test_compiled_modes_install_none(workbenches):
    wb = workbenches("tiny-dit")
    with MaskedExecution(wb.model, np.ones((2, len(wb.units)), bool), mode="compiled"):
        assert all(getattr(b, "_diffusers_hook", None) is None
                   or b._diffusers_hook.get_hook(shortcuts.SHORTCUT_HOOK) is None
                   for b in wb.model.transformer_blocks)


def test_shared_projection_recomputes_for_a_new_or_changed_timestep():
    from diffusers.models.embeddings import Timesteps

    proj, other = Timesteps(16, True, 1), Timesteps(16, False, 0)
    shared = shortcuts.SharedProjection()
    t = torch.tensor([10.0, 20.0])
    a = shared(proj, t)
    assert shared(proj, t) is a
    assert torch.equal(shared(other, t), other(t))  # another setting: its own projection
    t.add_(1)  # in place: a new version
    assert torch.equal(shared(other, t), other(t))
    assert torch.equal(shared(other, t.clone()), other(t))


@pytest.mark.parametrize("name", ["tiny-dit", "tiny-unet"])
def test_a_nested_execution_is_refused_and_leaves_the_outer_one_whole(workbenches, calls, name):
    """The inner execution's hooks fail to register (the shortcut's on the DiT, the unit hooks' on the
    U-Net): one MaskError, and the outer run goes on with every hook of its own."""
    from blockmask.adapters import adapter_for
    from blockmask.core.errors import MaskError
    from blockmask.sampling.sample import Condition, build_conditioning

    wb = workbenches(name)
    adapter = adapter_for(wb.model)
    g = torch.Generator().manual_seed(0)
    cond, _ = build_conditioning(wb.model, 2, Condition(), g)
    x, t = torch.randn((2, *adapter.latent_shape(wb.model)), generator=g), torch.tensor([500, 500])
    keep = np.array([u.residual for u in wb.units])
    m = np.ones((2, len(wb.units)), bool)
    m[1] = keep if keep.any() else np.arange(len(wb.units)) % 2 == 0

    def run(ex, inner: bool):
        with torch.no_grad(), ex:
            outs = []
            for k in range(2):
                ex.set_step(k)
                if inner:
                    with pytest.raises(MaskError, match="already hooked"):
                        MaskedExecution(wb.model, m).__enter__()
                outs.append(adapter.forward(wb.model, x + k, t, cond))
            return outs, ex.skipped

    want = run(MaskedExecution(wb.model, m), inner=False)
    n = len(calls)
    got = run(MaskedExecution(wb.model, m), inner=True)
    assert len(calls) == 2 * n and got[1] == want[1] > 0
    assert all(torch.equal(a, b) for a, b in zip(got[0], want[0]))


def test_accumulate_fuses_into_a_fresh_tensor_then_in_place():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 3).transpose(1, 2).contiguous().transpose(1, 2)  # a block input in another layout
    x0 = x.clone()
    gate, a, f = torch.randn(2, 1, 3), torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    with torch.no_grad():
        y = shortcuts.accumulate(x, gate, 1.0, a, fresh=True)
        assert torch.equal(x, x0) and y.is_contiguous()  # the input is untouched; the sum is a new tensor
        z = shortcuts.accumulate(y, gate, -0.5, f, fresh=False)
        assert z is y  # summed in place
        shortcuts.accumulate(y, None, 2.0, a, fresh=False)
    torch.testing.assert_close(y, x0 + gate * a - 0.5 * gate * f + 2.0 * a)
    bigger = torch.randn(2, 2, 4, 3)  # a value whose sum does not fit y: a new tensor, y kept
    out = shortcuts.accumulate(y, gate, 1.0, bigger, fresh=False)
    assert out.shape == (2, 2, 4, 3) and out is not y
    grad = torch.randn(2, 4, 3, requires_grad=True)  # autograd: no out= tensor
    shortcuts.accumulate(grad, gate, 1.0, a, fresh=True).sum().backward()
    assert torch.equal(grad.grad, torch.ones(2, 4, 3))
