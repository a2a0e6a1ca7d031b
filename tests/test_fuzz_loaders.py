"""Hypothesis fuzzing of the loaders (blockmask.core.validate): whatever the bytes, a mask file, a model
config or a checkpoint either loads into something valid or raises a BlockmaskError with one line —
never RecursionError, TypeError, KeyError, a numpy or diffusers error."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from blockmask.core.errors import BlockmaskError, CheckpointError, MaskError
from blockmask.io.maskfile import MaskFile
from blockmask.core.validate import MAX_DEPTH, parse_json

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                             st.dictionaries(st.text(max_size=6), c, max_size=4)),
                           max_leaves=20)

GOOD = {"format": "blockmask/1", "model": "m", "fingerprint": "X:1",
        "scheduler": {"class": "DDIMScheduler", "config": {}, "timesteps": [750, 500, 250]},
        "num_steps": 3, "units": ["a", "b"], "mask": [[1, 1], [0, 1], [1, 0]], "hash": "h", "meta": {}}


def _one_line(e: Exception) -> None:
    assert isinstance(e, BlockmaskError) and "\n" not in str(e) and str(e)


@SETTINGS
@given(st.binary(max_size=300))
def test_mask_loads_any_bytes(data):
    try:
        MaskFile.loads(data, "fuzz.json")
    except MaskError as e:
        _one_line(e)


@SETTINGS
@given(st.sampled_from(sorted(GOOD)), json_values)
def test_mask_any_field_value(key, value):
    d = copy.deepcopy(GOOD)
    d[key] = value
    try:
        mf = MaskFile.from_json(json.loads(json.dumps(d)), "fuzz.json")
    except MaskError as e:
        _one_line(e)
        return
    # accepted: then it is a real mask of the declared shape with 0/1 cells and row 0 all ones
    assert mf.mask.dtype == bool and mf.mask.shape == (d["num_steps"], len(d["units"])) and mf.mask[0].all()
    assert isinstance(mf.scheduler, dict) and isinstance(mf.meta, dict) and isinstance(mf.model, str)


@SETTINGS
@given(st.integers(0, 2), st.integers(0, 1), json_values)
def test_mask_any_cell(k, i, value):
    d = copy.deepcopy(GOOD)
    d["mask"][k][i] = value
    try:
        mf = MaskFile.from_json(json.loads(json.dumps(d)), "fuzz.json")
    except MaskError as e:
        _one_line(e)
        return
    assert value in (0, 1) and not isinstance(value, float) and mf.mask[k, i] == bool(value)


@SETTINGS
@given(st.integers(1, 5000), st.sampled_from(["[", "{\"a\":", "[{\"b\":"]))
def test_deep_nesting_never_recurses(depth, opener):
    text = opener * depth
    try:
        parse_json(text, "deep.json")
    except BlockmaskError as e:
        _one_line(e)
        if depth > MAX_DEPTH:
            assert "nested deeper" in str(e)


@SETTINGS
@given(st.text(max_size=200))
def test_parse_json_any_text(text):
    try:
        v = parse_json(text, "t.json", expect=None)
    except BlockmaskError as e:
        _one_line(e)
        return
    json.dumps(v, allow_nan=False)  # what was accepted is strict JSON (no NaN/Infinity)


CLASSES = ["UNet2DModel", "DiTTransformer2DModel", "UNet2DConditionModel", "PixArtTransformer2DModel",
           "Transformer2DModel", "AutoencoderKL"]
CONFIG_KEYS = ["sample_size", "in_channels", "out_channels", "block_out_channels", "layers_per_block",
               "down_block_types", "up_block_types", "norm_num_groups", "attention_head_dim", "num_layers",
               "num_attention_heads", "patch_size", "cross_attention_dim"]
small_values = st.one_of(json_scalars, st.lists(st.one_of(st.integers(-4, 64), st.text(max_size=12)), max_size=4))


@SETTINGS
@given(st.one_of(st.sampled_from(CLASSES), json_scalars),
       st.dictionaries(st.sampled_from(CONFIG_KEYS), small_values, max_size=5))
def test_config_loader_any_config(tmp_path_factory, cls, fields):
    """Random configs build on the meta device (shapes only) or give a one-line error."""
    from blockmask.io.models import from_config

    p = tmp_path_factory.mktemp("cfg") / "c.json"
    p.write_text(json.dumps({"_class_name": cls, **fields}))
    try:
        from_config(p, device="meta")
    except BlockmaskError as e:
        _one_line(e)


@pytest.fixture(scope="module")
def ckpt_setup(tmp_path_factory):
    from blockmask.workbench import Workbench
    from blockmask.learning.train import TrainConfig
    from blockmask.learning.run import checkpoint_path, run_training

    from conftest import tiny_spec

    class Stop(Exception):
        pass

    def stop(rep):
        raise Stop

    wb = Workbench.load(tiny_spec("tiny-unet"))
    cfg = TrainConfig(steps=4, iters=1, batch=1)
    out = tmp_path_factory.mktemp("ck") / "m.json"
    with pytest.raises(Stop):
        run_training(wb, cfg, out, progress=False, callback=stop)
    return wb, cfg, out, json.loads(checkpoint_path(out).read_text())


@SETTINGS
@given(st.sampled_from(["rows", "scores", "losses", "seconds", "delta", "lam", "sensitivity"]), json_values)
def test_checkpoint_any_state_field(ckpt_setup, key, value):
    from blockmask.learning.checkpoints import checkpoint_path, load_checkpoint

    wb, cfg, out, good = ckpt_setup
    d = copy.deepcopy(good)
    d["state"][key] = value
    p = checkpoint_path(out)
    p.write_text(json.dumps(d))
    try:
        state = load_checkpoint(p, wb, cfg)
    except CheckpointError as e:
        _one_line(e)
        return
    assert 1 <= len(state.rows) <= cfg.steps and np.isin(np.array(state.rows), [0, 1]).all()
