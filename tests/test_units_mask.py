"""Units (discovery, order, kinds) and mask files (validation, round trip, atomic save)."""

import json
import os

import numpy as np
import pytest
import torch

from blockmask.adapters import adapter_for
from blockmask.core.errors import MaskError, UnsupportedModelError
from blockmask.core.mask import mask_hash, validate_mask
from blockmask.io.maskfile import FORMAT
from blockmask.io.maskfile import MaskFile
from blockmask.hooks.discover import discover_units

from conftest import TINY


def test_unet_units_in_execution_order(workbenches):
    units = workbenches("tiny-unet").units
    names = [u.name for u in units]
    assert names[:4] == ["down_blocks.0.resnets.0", "down_blocks.0.downsamplers.0", "down_blocks.1.resnets.0",
                         "down_blocks.1.attentions.0"]
    assert names[4:7] == ["mid_block.resnets.0", "mid_block.attentions.0", "mid_block.resnets.1"]
    assert names[7:9] == ["up_blocks.0.resnets.0", "up_blocks.0.attentions.0"]
    assert names[11] == "up_blocks.0.upsamplers.0"
    assert {u.kind for u in units} == {"resnet", "attn", "downsample", "upsample"}
    assert [u.index for u in units] == list(range(len(units)))
    assert units[0].block == "down_blocks.0" and units[1].block == "down_blocks.0" and units[5].block == "mid_block"
    assert all(u.parent == -1 for u in units)


def test_transformer_units(workbenches):
    dit = workbenches("tiny-dit").units
    # completion order: a block's branches, then the block (a unit of its own, enclosing them)
    assert [u.name for u in dit[:3]] == ["transformer_blocks.0.attn1", "transformer_blocks.0.ff", "transformer_blocks.0"]
    assert len(dit) == 3 * 3
    assert [u.parent for u in dit[:3]] == [2, 2, -1] and dit[2].kind == "block" and dit[2].residual
    pix = workbenches("tiny-pixart").units
    assert [u.kind for u in pix[:4]] == ["self-attn", "cross-attn", "ff", "block"]
    assert pix[5].block == "transformer_blocks.1"


def test_cond_unet_attention_is_the_transformer_module(workbenches):
    wb = workbenches("tiny-unet-cond")
    attn = [u for u in wb.units if u.kind == "attn"]
    assert attn and all(type(wb.model.get_submodule(u.name)).__name__ == "Transformer2DModel" for u in attn)


def test_unsupported_model_names_class():
    with pytest.raises(UnsupportedModelError, match="Linear"):
        adapter_for(torch.nn.Linear(2, 2))
    with pytest.raises(UnsupportedModelError, match="Linear"):
        discover_units(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    "bad, msg",
    [
        ([[1, 1], [1]], "ragged"),
        ([1, 1], "2-D"),
        ([[1, 1], [0, 2]], "0 or 1"),
        ([[1, 1], [0, float("nan")]], "NaN"),
        ([[1, 0], [1, 1]], "row 0"),
        (np.zeros((0, 3)), "empty"),
    ],
)
def test_validate_mask_rejects(bad, msg):
    with pytest.raises(MaskError, match=msg):
        validate_mask(bad)


def test_validate_mask_shape_checks():
    with pytest.raises(MaskError, match="2 steps .rows., expected 3"):
        validate_mask(np.ones((2, 4)), steps=3)
    with pytest.raises(MaskError, match="the model has 5"):
        validate_mask(np.ones((2, 4)), units=5)


def _file(k=4, n=3):
    m = np.ones((k, n), bool)
    m[2, 1] = False
    return MaskFile(mask=m, units=[f"u{i}" for i in range(n)], model="x", fingerprint="C:abc",
                    scheduler={"class": "DDIMScheduler"}, meta={"delta": np.arange(k) / k, "bad": float("nan")})


def test_round_trip_and_hash(tmp_path):
    mf = _file()
    p = mf.save(tmp_path / "m.json")
    data = json.loads(p.read_text())
    assert data["format"] == FORMAT and data["num_steps"] == 4 and data["mask"][2] == [1, 0, 1]
    assert data["meta"]["bad"] is None  # non-finite floats never make invalid JSON
    back = MaskFile.load(p)
    assert np.array_equal(back.mask, mf.mask) and back.units == mf.units and back.fingerprint == "C:abc"
    assert data["hash"] == mask_hash(mf.mask) != mask_hash(np.ones((4, 3), bool))
    assert [f.name for f in tmp_path.iterdir()] == ["m.json"]  # no temp files left


@pytest.mark.parametrize(
    "text, msg",
    [
        ('{"format": "blockmask/1", "num_steps": 2, "units": ["a"], "mask": [[1], [', "not valid JSON"),
        ('[1, 2]', "JSON object"),
        ('{"format": "other/9"}', "format"),
        ('{"format": "blockmask/1", "units": ["a"]}', "missing field"),
        ('{"format": "blockmask/1", "num_steps": 3, "units": ["a"], "mask": [[1], [0]]}', "2 steps"),
        ('{"format": "blockmask/1", "num_steps": 2, "units": ["a", "b"], "mask": [[1], [0]]}', "the model has 2"),
        ('{"format": "blockmask/1", "num_steps": 2, "units": [1], "mask": [[1], [0]]}', "list of unit names"),
    ],
)
def test_load_rejects_bad_files(tmp_path, text, msg):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(MaskError, match=msg):
        MaskFile.load(p)


def test_missing_file():
    with pytest.raises(MaskError, match="not found"):
        MaskFile.load("/nonexistent/mask.json")


def test_mismatches_reported_together():
    mf = _file()
    problems = mf.mismatches(units=["u0", "x1", "u2"], fingerprint="C:zzz", steps=5)
    assert any("5" in p for p in problems) and any("x1" in p for p in problems)
    assert any("fingerprint" in p for p in problems)
    with pytest.raises(MaskError, match="steps.*unit name"):
        mf.check(units=["u0", "x1", "u2"], steps=5)
    assert mf.check(units=["u0", "u1", "u2"], fingerprint="C:zzz") == [
        "model fingerprint differs (mask C:abc, model C:zzz)"]
    with pytest.raises(MaskError, match="fingerprint"):
        mf.check(units=["u0", "u1", "u2"], fingerprint="C:zzz", strict_fingerprint=True)


def test_save_is_atomic_and_keeps_old_file(tmp_path, monkeypatch):
    p = tmp_path / "m.json"
    _file().save(p)
    before = p.read_bytes()
    import blockmask.io.files as bio

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(bio.os, "replace", boom)
    from blockmask.core.errors import OutputError

    with pytest.raises(OutputError, match=r"cannot write .*m\.json: disk full"):  # names the output, not the temp
        _file(k=5).save(p)
    assert p.read_bytes() == before and sorted(f.name for f in tmp_path.iterdir()) == ["m.json"]


def test_unwritable_output(tmp_path):
    from blockmask.core.errors import BlockmaskError

    with pytest.raises(BlockmaskError, match="does not exist"):
        _file().save(tmp_path / "nope" / "m.json")
    (tmp_path / "adir").mkdir()
    with pytest.raises(BlockmaskError, match="is a folder"):
        _file().save(tmp_path / "adir")


@pytest.mark.parametrize("name", TINY)
def test_fingerprint_is_stable(workbenches, name):
    from blockmask.io.models import fingerprint, load_model
    from conftest import tiny_spec

    a = workbenches(name).loaded.fingerprint
    assert a == fingerprint(load_model(tiny_spec(name), init_seed=5).model)
    assert a.startswith(type(workbenches(name).model).__name__ + ":")
