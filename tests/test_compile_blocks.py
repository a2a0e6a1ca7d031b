"""diffusers' ``compile_repeated_blocks`` with a blockmask mask applied, on every tiny family: same latents as the
eager masked run,
before or after ``enable``; a budget still counts its MACs through the compiled blocks; ``disable`` leaves the
compiled model plain. backend="eager" (dynamo tracing, no codegen) keeps it fast on the CPU. SD3, Sana, PixArt-Σ
and HunyuanDiT declare no ``_repeated_blocks`` in diffusers 0.42 (``compile_repeated_blocks`` refuses them as
shipped); for those the test declares it on the instance, naming the class of blockmask's units (the blocks), as
a user would, and runs the same checks."""

import pytest
import torch

import blockmask
from blockmask.hooks.costs import count_macs
from blockmask.hooks.enable import denoisers

from test_enable import hooks_left
from tiny_pipes import FAMILIES

K = 4
PRESET = {"sdxl": "deepcache:2"}


def _compile(pipe, backend="eager"):
    for _, model in denoisers(pipe):
        model.compile_repeated_blocks(backend=backend)


def _reset_compiled(pipe):
    for _, model in denoisers(pipe):
        for m in model.modules():
            m._compiled_call_impl = None


@pytest.mark.parametrize("family", list(FAMILIES))
def test_compile_repeated_blocks_with_a_mask(family):
    pipe, run = FAMILIES[family]()
    for _, m in denoisers(pipe):
        if not getattr(m, "_repeated_blocks", None):  # declared here: the class of the whole-block units
            from blockmask.hooks.discover import discover_units

            m._repeated_blocks = sorted({type(m.get_submodule(u.name)).__name__ for u in discover_units(m)})
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    plain = run(K)
    spec = PRESET.get(family, "fora:2")
    blockmask.enable(pipe, spec)
    try:
        eager = run(K)
        _compile(pipe)  # compiled after enable
        compiled = run(K)
        s = blockmask.summary(pipe)
    finally:
        blockmask.disable(pipe)
    assert counters["stats"]["unique_graphs"] > 0  # dynamo really compiled the blocks
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    assert not torch.equal(eager, plain) and sum(s.skipped) > 0
    assert hooks_left(pipe) == []
    torch.testing.assert_close(run(K), plain, rtol=1e-5, atol=1e-6)  # compiled and plain again
    blockmask.enable(pipe, spec)  # enabled after compiling, and a budget counted through compiled blocks
    try:
        torch.testing.assert_close(run(K), eager, rtol=1e-5, atol=1e-6)
    finally:
        blockmask.disable(pipe)
    macs_plain, _ = count_macs(lambda: run(K))
    blockmask.enable(pipe, budget=0.6)
    try:
        macs, _ = count_macs(lambda: run(K))
        s = blockmask.summary(pipe)
    finally:
        blockmask.disable(pipe)
    assert s.macs_fraction is not None and s.macs_fraction <= 0.6 + 1e-6 and sum(s.skipped) > 0
    assert s.macs_fraction == pytest.approx(macs / macs_plain, rel=0.02)  # the first call's count is right
    _reset_compiled(pipe)
