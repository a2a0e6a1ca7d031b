"""The bad-input corpus's input files (issue 13), shared by tests/test_bad_inputs_cli.py and
tests/test_bad_inputs_api.py: bad mask files, model configs and checkpoints, each with the fragment of
the one-line message it must get."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from conftest import CONFIGS

UNET = f"config:{CONFIGS / 'tiny-unet.json'}"
DIT = f"config:{CONFIGS / 'tiny-dit.json'}"  # class-conditional
TEXT = f"config:{CONFIGS / 'tiny-unet-cond.json'}"  # text-conditioned (prompt options apply)
K = 4


# --- the inputs ------------------------------------------------------------------------------
def good_mask() -> dict:
    from blockmask.workbench import Workbench

    wb = Workbench.load(UNET)
    return wb.mask_file(wb.baseline("uniform", steps=K, every=2)).to_json()


def deep(n: int, open_="[", close="]") -> str:
    return open_ * n + close * n


def mask_variants(good: dict) -> dict[str, tuple[str | bytes, str]]:
    """name -> (file content, expected message fragment)."""
    n = len(good["units"])

    def mut(**changes):
        d = copy.deepcopy(good)
        for k, v in changes.items():
            if v is DELETE:
                d.pop(k, None)
            else:
                d[k] = v
        return json.dumps(d)

    def cell(k, i, v):
        d = copy.deepcopy(good)
        d["mask"][k][i] = v
        return json.dumps(d)

    row0 = [[0] * n] + good["mask"][1:]
    out = {
        "format-missing": (mut(format=DELETE), "format is None"),
        "format-wrong": (mut(format="blockmask/9"), "expected 'blockmask/1'"),
        "format-int": (mut(format=1), "format is 1"),
        "num_steps-null": (mut(num_steps=None), "'num_steps' must be an integer"),
        "num_steps-string": (mut(num_steps="4"), "'num_steps' must be an integer"),
        "num_steps-float": (mut(num_steps=4.5), "'num_steps' must be an integer"),
        "num_steps-bool": (mut(num_steps=True), "'num_steps' must be an integer"),
        "num_steps-zero": (mut(num_steps=0), "'num_steps' must be >= 1"),
        "num_steps-negative": (mut(num_steps=-4), "'num_steps' must be >= 1"),
        "num_steps-mismatch": (mut(num_steps=3), "mask has 4 steps (rows), expected 3"),
        "num_steps-huge-float": (mut(num_steps=1e300), "'num_steps' must be an integer"),
        "num_steps-missing": (mut(num_steps=DELETE), "missing field(s) num_steps"),
        "units-missing": (mut(units=DELETE), "missing field(s) units"),
        "units-null": (mut(units=None), "list of unit names"),
        "units-string": (mut(units="down_blocks"), "list of unit names"),
        "units-ints": (mut(units=list(range(n))), "list of unit names"),
        "units-empty": (mut(units=[]), "must list at least one unit"),
        "units-one-less": (mut(units=good["units"][:-1]), "units (columns)"),
        "units-renamed": (mut(units=["x"] + good["units"][1:]), "unit name(s) differ"),
        "mask-missing": (mut(mask=DELETE), "missing field(s) mask"),
        "mask-null": (mut(mask=None), "'mask' must be a list"),
        "mask-string": (mut(mask="1111"), "'mask' must be a list"),
        "mask-empty": (mut(mask=[]), "mask"),
        "mask-empty-rows": (mut(mask=[[]] * K), "mask"),
        "mask-ragged": (mut(mask=[good["mask"][0], good["mask"][1][:-1]] + good["mask"][2:]), "ragged"),
        "mask-3d": (mut(mask=[[[1] * n]] * K), "cell at step 0, unit 0"),
        "mask-row-number": (mut(mask=[1] * K), "row 0 must be a list"),
        "cell-string": (cell(1, 0, "1"), "must be 0 or 1, found '1'"),
        "cell-two": (cell(1, 0, 2), "values must be 0 or 1; found 2"),
        "cell-negative": (cell(1, 0, -1), "values must be 0 or 1; found -1"),
        "cell-half": (cell(1, 0, 0.5), "must be 0 or 1, found 0.5"),
        "cell-float-one": (cell(1, 0, 1.0), "must be 0 or 1, found 1.0"),
        "cell-null": (cell(1, 0, None), "must be 0 or 1, found None"),
        "cell-object": (cell(1, 0, {}), "must be 0 or 1, found {}"),
        "cell-nan-token": (cell(1, 0, 0).replace('"mask": [[1', '"mask": [[NaN', 1), "numbers must be finite"),
        "cell-infinity-token": (cell(1, 0, 0).replace('"mask": [[1', '"mask": [[Infinity', 1), "numbers must be finite"),
        "row0-zeros": (mut(mask=row0), "row 0 must be all ones"),
        "rows-fewer": (mut(mask=good["mask"][:-1]), "mask has 3 steps (rows), expected 4"),
        "scheduler-string": (mut(scheduler="ddim"), "'scheduler' must be an object"),
        "scheduler-list": (mut(scheduler=[1]), "'scheduler' must be an object"),
        "scheduler-timesteps-string": (mut(scheduler={"timesteps": "x"}), "'timesteps' must be a list"),
        "scheduler-timesteps-floats": (mut(scheduler={"timesteps": [1.5, 2.5, 3.5, 4.5]}), "'timesteps' item 0"),
        "scheduler-class-int": (mut(scheduler={"class": 5}), "'class' must be a string"),
        "meta-string": (mut(meta="x"), "'meta' must be an object"),
        "meta-list": (mut(meta=[1, 2]), "'meta' must be an object"),
        "model-int": (mut(model=5), "'model' must be a string"),
        "fingerprint-list": (mut(fingerprint=[]), "'fingerprint' must be a string"),
        "hash-int": (mut(hash=5), "'hash' must be a string"),
        "deep-meta": (mut(meta={}).replace('"meta": {}', '"meta": ' + deep(100000)), "nested deeper than 32"),
        "deep-objects": ('{"a":' * 50000 + "1" + "}" * 50000, "nested deeper than 32"),
        "deep-top-list": (deep(200000), "nested deeper than 32"),
        "top-list": ("[1, 2]", "expected a JSON object, found a list"),
        "top-string": ('"mask"', "expected a JSON object, found a string"),
        "top-number": ("4", "expected a JSON object, found an integer"),
        "top-null": ("null", "expected a JSON object, found null"),
        "truncated": (mut()[:200], "not valid JSON"),
        "empty": ("", "not valid JSON"),
        "binary": (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "not UTF-8"),
        "trailing-garbage": (mut() + "}}", "not valid JSON"),
    }
    return out


class Delete:
    pass


DELETE = Delete()

BAD_CONFIGS = {
    "cfg-list": ("[1, 2]", "expected a JSON object, found a list"),
    "cfg-string": ('"UNet2DModel"', "expected a JSON object"),
    "cfg-deep": ('{"a": ' + deep(100000) + "}", "nested deeper than 32"),
    "cfg-no-class": ('{"sample_size": 8}', "no '_class_name'"),
    "cfg-class-int": ('{"_class_name": 5}', "'_class_name' must be a string"),
    "cfg-class-dunder": ('{"_class_name": "__version__"}', "unknown diffusers class"),
    "cfg-class-unknown": ('{"_class_name": "NoSuchModel"}', "unknown diffusers class"),
    "cfg-class-unsupported": ('{"_class_name": "AutoencoderKL"}', "unsupported model class"),
    "cfg-nan": ('{"_class_name": "UNet2DModel", "sample_size": NaN}', "numbers must be finite"),
    "cfg-bad-channels": ('{"_class_name": "UNet2DModel", "block_out_channels": "abc"}', "cannot be built"),
    "cfg-mismatch-blocks": ('{"_class_name": "UNet2DModel", "block_out_channels": [8], "down_block_types": '
                            '["DownBlock2D", "DownBlock2D"]}', "cannot be built"),
    "cfg-negative-groups": ('{"_class_name": "UNet2DModel", "norm_num_groups": 0}', "cannot be built"),
    "cfg-huge-depth": ('{"_class_name": "DiTTransformer2DModel", "num_layers": 1000000000}', "beyond the supported"),
    "cfg-huge-width": ('{"_class_name": "UNet2DModel", "block_out_channels": [8, 10000000]}', "beyond the supported"),
    "cfg-truncated": ('{"_class_name": "UNet2D', "not valid JSON"),
    "cfg-empty": ("", "not valid JSON"),
}


def ckpt_variants(good_ckpt: dict) -> dict[str, tuple[str, str]]:
    def mut(path, value):
        d = copy.deepcopy(good_ckpt)
        t = d
        for p in path[:-1]:
            t = t[p]
        if value is DELETE:
            del t[path[-1]]
        else:
            t[path[-1]] = value
        return json.dumps(d)

    n = len(good_ckpt["units"])
    return {
        "ckpt-not-json": ('{"format": "blockmask-train/1", "state": {"ro', "is corrupt"),
        "ckpt-deep": (deep(100000), "is corrupt"),
        "ckpt-list": ("[]", "is corrupt"),
        "ckpt-format": (mut(["format"], "x"), "not a blockmask training checkpoint"),
        "ckpt-model": (mut(["fingerprint"], "UNet2DModel:000"), "another model"),
        "ckpt-units": (mut(["units"], ["a"] * n), "another model"),
        "ckpt-config": (mut(["config", "lr"], 0.123), "other settings (lr)"),
        "ckpt-scheduler": (mut(["scheduler"], "euler"), "other settings (scheduler)"),
        "ckpt-no-state": (mut(["state"], DELETE), "no state"),
        "ckpt-state-list": (mut(["state"], []), "'state' must be an object"),
        "ckpt-rows-string": (mut(["state", "rows"], "x"), "'rows' must be a list"),
        "ckpt-row-strings": (mut(["state", "rows"], [["1"] * n]), "'rows' item 0 must be int"),
        "ckpt-row-twos": (mut(["state", "rows"], [[2] * n]), "inconsistent mask"),
        "ckpt-rows-too-many": (mut(["state", "rows"], [[1] * n] * (K + 1)), "inconsistent mask"),
        "ckpt-scores-strings": (mut(["state", "scores"], [["a"] * n]), "'scores' item 0 must be float"),
        "ckpt-delta-short": (mut(["state", "delta"], [None]), "another step count"),
        "ckpt-seconds-missing": (mut(["state", "seconds"], DELETE), "'seconds' is missing"),
        "ckpt-extra-field": (mut(["state", "evil"], 1), "unknown state fields"),
    }


def make_inputs(d: Path) -> Path:
    """Every bad input file, written into folder ``d``, which no case may change."""
    good = good_mask()
    (d / "good.json").write_text(json.dumps(good))
    files = {}
    for name, (content, _) in mask_variants(good).items():
        p = d / f"mask-{name}.json"
        (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
        files[name] = p
    for name, (content, _) in BAD_CONFIGS.items():
        (d / f"{name}.json").write_text(content)
    (d / "folder.json").mkdir()
    os.mkfifo(d / "fifo.json")
    with open(d / "sparse.json", "wb") as f:  # 100 MB, sparse: refused by size before reading
        f.truncate(100 * 2**20)
    (d / "a-file").write_text("x")
    (d / "not-safetensors.st").write_text("hello")
    # a real checkpoint of an interrupted run, to mutate
    from blockmask.workbench import Workbench
    from blockmask.learning.train import TrainConfig
    from blockmask.learning.run import checkpoint_path, run_training

    class Stop(Exception):
        pass

    def stop(rep):
        raise Stop

    wb = Workbench.load(UNET)
    out = d / "ck" / "m.json"
    out.parent.mkdir()
    with pytest.raises(Stop):
        run_training(wb, TrainConfig(steps=K, iters=1, batch=1), out, progress=False, callback=stop)
    good_ckpt = json.loads(checkpoint_path(out).read_text())
    checkpoint_path(out).unlink()
    for name, (content, _) in ckpt_variants(good_ckpt).items():
        (d / f"{name}.json").write_text(content)
    return d


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if not p.is_fifo()}

