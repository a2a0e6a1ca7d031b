"""blockmask.hooks.containers: a block whose units a step all reuses returns their reused values in
one go. The images are the container-less run's bit for bit and ``computed`` / ``skipped`` count the
same, on U-Nets with and without cross-attention, under hold and forecast; the containers really
shortcut calls; a container whose output is not made of its units' values always runs its own forward;
a run that is not a whole run, and a DiT (whose blocks are units), hook no container."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from blockmask.core import baselines
from blockmask.hooks import containers
from blockmask.hooks.execution import MaskedExecution

STEPS = 7


def masks(wb) -> dict[str, np.ndarray]:
    n = len(wb.units)
    rng = np.random.default_rng(1)
    random = rng.random((STEPS, n)) < 0.5
    random[0] = True
    random[[2, 5]] = False  # whole rows reused: every container shortcut
    inner = np.ones((STEPS, n), bool)
    inner[1:, 2:-2] = rng.random((STEPS - 1, n - 4)) < 0.3  # the outer units run, inner ones mostly reused
    return {"uniform": baselines.uniform(STEPS, n, every=2), "random": random, "inner": inner,
            "deepcache": wb.baseline("deepcache", steps=STEPS, interval=3, branch=0)}


@pytest.fixture
def spy(monkeypatch):
    """Count the calls each kind of container hook served from a pattern; ``spy.off = True``: no
    container hook at all (the run as before containers)."""
    real_install, real_serve = containers.install, containers.ContainerHook.serve

    class Spy:
        off = False
        served = 0
        hooked: list = []
        execution = None

    def install(execution):
        mods = [] if Spy.off else real_install(execution)
        Spy.hooked, Spy.execution = mods, execution
        return mods

    def serve(self, pattern, called, wanted):
        Spy.served += 1
        return real_serve(self, pattern, called, wanted)

    monkeypatch.setattr(containers, "install", install)
    monkeypatch.setattr(containers.ContainerHook, "serve", serve)
    return Spy


@pytest.mark.parametrize("model", ["tiny-unet", "tiny-unet-cond", "tiny-sdxl-unet"])
@pytest.mark.parametrize("reuse", ["hold", "forecast"])
def test_same_images_same_counts_as_without_containers(workbenches, spy, model, reuse):
    wb = workbenches(model)
    served = 0
    for name, m in masks(wb).items():
        spy.off, spy.served = False, 0
        got = wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse)
        counts = (spy.execution.computed, spy.execution.skipped)
        served += spy.served
        spy.off = True
        want = wb.generate(m, steps=STEPS, seed=3, num_images=2, reuse=reuse)
        assert torch.equal(got, want), name
        assert counts == (spy.execution.computed, spy.execution.skipped) and counts[1] > 0, name
    assert served > 0  # the whole-row reuses were shortcut, not only run as before


def test_a_container_whose_output_is_not_its_units_values_runs_its_own_forward(workbenches, spy):
    wb = workbenches("tiny-unet")
    up = wb.model.up_blocks[-1]
    own = type(up).forward

    def forward(*args, **kwargs):  # an op after the block's last unit
        return own(up, *args, **kwargs) * 1.0

    m = masks(wb)["random"]
    want = wb.generate(m, steps=STEPS, seed=3, num_images=1)
    up.forward = forward
    try:
        before = wb.generate(m, steps=STEPS, seed=3, num_images=1)
        got = wb.generate(m, steps=STEPS, seed=3, num_images=1)
    finally:
        del up.forward
    assert torch.equal(got, want) and torch.equal(before, want)
    assert up in spy.hooked  # it was hooked, learned that its output is not its units', and ran itself


def test_only_a_whole_run_hooks_containers_and_a_dit_has_none(workbenches):
    unet, dit = workbenches("tiny-unet"), workbenches("tiny-dit")
    m = baselines.uniform(STEPS, len(unet.units), every=2)
    m[1] = False  # a step that reuses every unit

    def hooked():
        return {type(mod).__name__ for mod in unet.model.modules() if getattr(mod, "_diffusers_hook", None)
                is not None and mod._diffusers_hook.get_hook(containers.CONTAINER_HOOK) is not None}

    with MaskedExecution(unet.model, m):
        assert hooked() == set()
    calls = [(k, 900.0 - 100 * k) for k in range(STEPS)]
    with MaskedExecution(unet.model, m).whole_run(calls):
        assert hooked() >= {"UpBlock2D", "UNetMidBlock2D"}
    assert hooked() == set()
    assert containers.containers(dit.model, dit.units) == []


def test_call_key_tells_calls_apart():
    x = torch.zeros(2, 3)
    assert containers.call_key((x,), {"a": None}) == containers.call_key((torch.ones(2, 3),), {"a": None})
    assert containers.call_key((x,), {"a": None}) != containers.call_key((torch.zeros(2, 4),), {"a": None})
    assert containers.call_key((x,), {"a": None}) != containers.call_key((x,), {"a": (4, 4)})
    assert containers.call_key((x, (x, x)), {}) != containers.call_key((x, (x,)), {})
    assert containers.call_key((x,), {"k": {"scale": 1.0}}) != containers.call_key((x,), {"k": {"scale": 0.5}})


def container_effect_checks(folder, env) -> None:
    """``benchmarks/container_effect.py`` on a frontier folder ``benchmarks/frontier.py --dense`` wrote
    (tests/test_planner.py's, a tiny U-Net): a row per masked schedule some budget gets, the same images
    with and without containers; bad input gets one line, exit 2 and no file."""
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd
    from conftest import tiny_spec

    from frontier_speed import answered_plans

    script = str(Path(__file__).resolve().parents[1] / "benchmarks/container_effect.py")
    r = subprocess.run([sys.executable, script, tiny_spec("tiny-unet"), "--frontier", str(folder), "--rounds", "1",
                        "--batch", "1", "-o", str(folder / "c.csv")], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-800:]
    c, df = pd.read_csv(folder / "c.csv"), pd.read_csv(folder / "results.csv")
    masked = answered_plans(df) & set(df[(df.kind == "plan") & (df.family != "fewer-steps")].name)
    assert set(c.schedule) <= masked and (len(c) >= 1) == bool(masked)
    assert c.same_images.all() and (c.with_over_without > 0).all()
    bad = subprocess.run([sys.executable, script, tiny_spec("tiny-unet"), "--frontier", str(folder), "--rounds", "0",
                          "-o", str(folder / "y.csv")], capture_output=True, text=True, timeout=600, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "must be at least 1" in bad.stderr
    assert not (folder / "y.csv").exists()


def test_only_outermost_containers_without_residual_or_nested_units():
    from types import SimpleNamespace as U

    root = torch.nn.Module()
    root.a = torch.nn.Module()
    root.a.b = torch.nn.Module()
    root.a.b.u1, root.a.b.u2, root.c = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.Module()
    root.c.blocks = torch.nn.ModuleList([torch.nn.Linear(2, 2)])
    plain = [U(name="a.b.u1", residual=False, parent=-1), U(name="a.b.u2", residual=False, parent=-1),
             U(name="c.blocks.0", residual=False, parent=-1)]
    found = {id(m): inside for m, inside in containers.containers(root, plain)}
    assert found == {id(root.a): (0, 1), id(root.c): (2,)}  # not a.b (inside a), not the module list
    residual = [plain[0], plain[1], U(name="c.blocks.0", residual=True, parent=-1)]
    assert {id(m) for m, _ in containers.containers(root, residual)} == {id(root.a)}
