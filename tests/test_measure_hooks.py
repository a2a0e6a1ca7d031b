"""Measurement runs on the same hook mechanism as execution (issue 30): the unit-order probe, the consumer
graph and the feature-change probe register on each unit's diffusers ``HookRegistry`` and leave no
wrapper in an instance ``__dict__``; a forward another tool set on the instance is wrapped and put back."""

from __future__ import annotations

import pytest
import torch

from blockmask.core.errors import MaskError
from blockmask.hooks.discover import consumer_graph
from blockmask.learning.methods.feature_change import unit_changes
from blockmask.hooks.registry import MEASURE_HOOK, wrap_forwards
from blockmask.core.schedulers import make_scheduler
from blockmask.hooks.discover import discover_units, unit_modules


def _clean(model) -> list[str]:
    """Modules with an instance forward or a measurement hook left behind."""
    left = []
    for name, mod in model.named_modules():
        if "forward" in mod.__dict__:
            left.append(f"{name}: instance forward")
        reg = getattr(mod, "_diffusers_hook", None)
        if reg is not None and reg.get_hook(MEASURE_HOOK) is not None:
            left.append(f"{name}: {MEASURE_HOOK}")
    return left


@pytest.mark.parametrize("name", ["tiny-unet", "tiny-dit"])
def test_order_graph_and_feature_change_leave_no_wrapper(workbenches, name):
    wb = workbenches(name)
    model = wb.model
    graph = model.__dict__.pop("_blockmask_graph", None)
    units = discover_units(model, measure=True)
    try:
        consumer_graph(model)
    finally:
        if graph is not None:
            model._blockmask_graph = graph
    change = unit_changes(model, make_scheduler("ddim"), steps=3, batch=1)
    assert change.shape == (3, len(units)) and (change[1:] > 0).any()
    assert _clean(model) == []


def test_the_wrapper_sees_each_call_and_an_instance_forward_is_put_back(workbenches):
    model = workbenches("tiny-unet").model
    units = discover_units(model)
    mods = unit_modules(model, units)
    seen = []

    def tagged(*a, _f=mods[0].forward, **k):  # as a tool like DeepCache leaves one on the instance
        seen.append("instance")
        return _f(*a, **k)

    mods[0].forward = tagged

    def make(i, orig):
        def fwd(*a, **k):
            seen.append(i)
            return orig(*a, **k)
        return fwd

    from blockmask.hooks.discover import example_call
    run = example_call(model, probe=True)
    with torch.no_grad(), wrap_forwards(mods, make):
        assert all(m._diffusers_hook.get_hook(MEASURE_HOOK) is not None for m in mods)  # the one mechanism
        run()
        with pytest.raises(MaskError, match="already hooked"):
            with wrap_forwards(mods[:1], make):
                pass
    assert seen[:2] == [0, "instance"] and set(i for i in seen if isinstance(i, int)) == set(range(len(mods)))
    assert mods[0].__dict__["forward"] is tagged  # the other tool's forward is back
    del mods[0].forward
    with pytest.raises(RuntimeError, match="boom"), wrap_forwards(mods, make):
        raise RuntimeError("boom")
    assert _clean(model) == []
