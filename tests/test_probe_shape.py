"""Structure is measured at the adapter's probe shape (issue 31: paper-size rectify in seconds, not an
hour): the unit order and the consumer graph there are the full size's, for every family that shrinks."""

import pytest
import torch

from blockmask.adapters import adapter_for
from blockmask.hooks.discover import consumer_graph
from blockmask.hooks.discover import discover_units, example_call
from conftest import REFERENCE, tiny_spec

SHRINKING = ["tiny-unet", "tiny-unet-cond", "tiny-sdxl-unet", "tiny-dit", "tiny-pixart", "tiny-pixart-sigma"]


def _fresh(model, side):
    for attr in ("_blockmask_graph", "_blockmask_units"):
        if hasattr(model, attr):
            delattr(model, attr)
    model._blockmask_sample_size = side


@pytest.mark.parametrize("name", SHRINKING)
def test_probe_graph_equals_full_size_graph(name, monkeypatch):
    from blockmask.workbench import Workbench

    model = Workbench.load(tiny_spec(name)).model
    adapter = adapter_for(model)
    probe = adapter.probe_side(model)
    assert probe is not None
    full = 2 * probe  # larger than the probe, so the probe really shrinks the input
    _fresh(model, full)
    assert adapter.probe_shape(model)[1:] == (probe, probe)
    units_probe = [u.name for u in discover_units(model)]
    graph_probe = consumer_graph(model)
    seen = []
    orig = type(adapter).probe_side
    monkeypatch.setattr(type(adapter), "probe_side", lambda self, m: seen.append(1) or None)
    _fresh(model, full)
    units_full = [u.name for u in discover_units(model)]
    graph_full = consumer_graph(model)
    monkeypatch.setattr(type(adapter), "probe_side", orig)
    assert seen, "the full-size run did not go through probe_side"
    assert units_probe == units_full
    assert graph_probe.to_json() == graph_full.to_json()


def test_probe_shape_records_the_input_it_ran(monkeypatch):
    from blockmask.workbench import Workbench

    model = Workbench.load(tiny_spec("tiny-dit")).model
    model._blockmask_sample_size = 32
    shapes = []
    fwd = model.forward
    monkeypatch.setattr(model, "forward", lambda x, *a, **k: shapes.append(tuple(x.shape)) or fwd(x, *a, **k))
    example_call(model, probe=True)()
    example_call(model)()
    assert shapes == [(1, 4, 8, 8), (1, 4, 32, 32)]


def test_paper_size_pixart_probe_is_small():
    import json

    cfg = json.loads((REFERENCE / "pixart-sigma-xl-2-1024.json").read_text())
    with torch.device("meta"):
        from diffusers import PixArtTransformer2DModel

        model = PixArtTransformer2DModel.from_config(cfg)
    adapter = adapter_for(model)
    assert adapter.latent_shape(model)[1:] == (128, 128)
    assert adapter.probe_shape(model)[1:] == (8, 8)
