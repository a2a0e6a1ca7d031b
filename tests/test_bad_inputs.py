"""A corpus of bad inputs (issue 13): every CLI command and the Python API, each case one row.

Every CLI case must exit 2 with exactly one line on stderr starting ``error:``, naming the problem
(the expected fragment), print nothing on stdout, leave no file behind in its working folder and
change no input file. Every API case must raise a :class:`BlockmaskError` with a one-line message
containing the fragment. CLI cases run in-process through ``blockmask.cli.main(argv)`` with model
loading memoized (loading itself is tested elsewhere), plus a few real subprocesses at the end.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blockmask.errors import BlockmaskError

from conftest import CONFIGS

UNET = f"config:{CONFIGS / 'tiny-unet.json'}"
DIT = f"config:{CONFIGS / 'tiny-dit.json'}"  # class-conditional
TEXT = f"config:{CONFIGS / 'tiny-unet-cond.json'}"  # text-conditioned (prompt options apply)
K = 4


# --- the inputs ------------------------------------------------------------------------------
def _good_mask() -> dict:
    from blockmask.api import Workbench

    wb = Workbench.load(UNET)
    return wb.mask_file(wb.baseline("uniform", steps=K, every=2)).to_json()


def _deep(n: int, open_="[", close="]") -> str:
    return open_ * n + close * n


def _mask_variants(good: dict) -> dict[str, tuple[str | bytes, str]]:
    """name -> (file content, expected message fragment)."""
    n = len(good["units"])

    def mut(**changes):
        d = copy.deepcopy(good)
        for k, v in changes.items():
            if v is _DEL:
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
        "format-missing": (mut(format=_DEL), "format is None"),
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
        "num_steps-missing": (mut(num_steps=_DEL), "missing field(s) num_steps"),
        "units-missing": (mut(units=_DEL), "missing field(s) units"),
        "units-null": (mut(units=None), "list of unit names"),
        "units-string": (mut(units="down_blocks"), "list of unit names"),
        "units-ints": (mut(units=list(range(n))), "list of unit names"),
        "units-empty": (mut(units=[]), "must list at least one unit"),
        "units-one-less": (mut(units=good["units"][:-1]), "units (columns)"),
        "units-renamed": (mut(units=["x"] + good["units"][1:]), "unit name(s) differ"),
        "mask-missing": (mut(mask=_DEL), "missing field(s) mask"),
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
        "deep-meta": (mut(meta={}).replace('"meta": {}', '"meta": ' + _deep(100000)), "nested deeper than 32"),
        "deep-objects": ('{"a":' * 50000 + "1" + "}" * 50000, "nested deeper than 32"),
        "deep-top-list": (_deep(200000), "nested deeper than 32"),
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


class _Del:
    pass


_DEL = _Del()

BAD_CONFIGS = {
    "cfg-list": ("[1, 2]", "expected a JSON object, found a list"),
    "cfg-string": ('"UNet2DModel"', "expected a JSON object"),
    "cfg-deep": ('{"a": ' + _deep(100000) + "}", "nested deeper than 32"),
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


def _ckpt_variants(good_ckpt: dict) -> dict[str, tuple[str, str]]:
    def mut(path, value):
        d = copy.deepcopy(good_ckpt)
        t = d
        for p in path[:-1]:
            t = t[p]
        if value is _DEL:
            del t[path[-1]]
        else:
            t[path[-1]] = value
        return json.dumps(d)

    n = len(good_ckpt["units"])
    return {
        "ckpt-not-json": ('{"format": "blockmask-train/1", "state": {"ro', "is corrupt"),
        "ckpt-deep": (_deep(100000), "is corrupt"),
        "ckpt-list": ("[]", "is corrupt"),
        "ckpt-format": (mut(["format"], "x"), "not a blockmask training checkpoint"),
        "ckpt-model": (mut(["fingerprint"], "UNet2DModel:000"), "another model"),
        "ckpt-units": (mut(["units"], ["a"] * n), "another model"),
        "ckpt-config": (mut(["config", "lr"], 0.123), "other settings (lr)"),
        "ckpt-scheduler": (mut(["scheduler"], "euler"), "other settings (scheduler)"),
        "ckpt-no-state": (mut(["state"], _DEL), "no state"),
        "ckpt-state-list": (mut(["state"], []), "'state' must be an object"),
        "ckpt-rows-string": (mut(["state", "rows"], "x"), "'rows' must be a list"),
        "ckpt-row-strings": (mut(["state", "rows"], [["1"] * n]), "'rows' item 0 must be int"),
        "ckpt-row-twos": (mut(["state", "rows"], [[2] * n]), "inconsistent mask"),
        "ckpt-rows-too-many": (mut(["state", "rows"], [[1] * n] * (K + 1)), "inconsistent mask"),
        "ckpt-scores-strings": (mut(["state", "scores"], [["a"] * n]), "'scores' item 0 must be float"),
        "ckpt-delta-short": (mut(["state", "delta"], [None]), "another step count"),
        "ckpt-seconds-missing": (mut(["state", "seconds"], _DEL), "'seconds' is missing"),
        "ckpt-extra-field": (mut(["state", "evil"], 1), "unknown state fields"),
    }


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Every bad input file, in one folder that no case may change."""
    d = tmp_path_factory.mktemp("inputs")
    good = _good_mask()
    (d / "good.json").write_text(json.dumps(good))
    files = {}
    for name, (content, _) in _mask_variants(good).items():
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
    from blockmask.api import Workbench
    from blockmask.train import TrainConfig
    from blockmask.train_run import checkpoint_path, run_training

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
    for name, (content, _) in _ckpt_variants(good_ckpt).items():
        (d / f"{name}.json").write_text(content)
    return d


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
            if not p.is_fifo()}


# --- the CLI corpus --------------------------------------------------------------------------
GOOD = "{in}/good.json"


def _mask_cases():
    """Every bad mask file through a different command (all commands read masks the same way)."""
    cases = []
    commands = [
        lambda f: ["macs", UNET, "--steps", str(K), "--mask", f],
        lambda f: ["rectify", f, "--model", UNET, "-o", "{out}/r.json"],
        lambda f: ["sample", UNET, "--steps", str(K), "--mask", f, "-o", "{out}/s"],
        lambda f: ["bench", UNET, "--steps", str(K), "--mask", f, "--repeats", "1"],
        lambda f: ["eval", UNET, "--steps", str(K), "--mask", f"m={f}", "--num-samples", "2",
                   "--cache-dir", "{out}/c", "-o", "{out}/e"],
    ]
    for i, (name, expect) in enumerate(_MASK_EXPECT.items()):
        cases.append((f"mask:{name}", commands[i % len(commands)](f"{{in}}/mask-{name}.json"), expect))
    return cases


# expected messages (they do not depend on the model: a 3-unit stand-in builds the table at import)
_MASK_EXPECT = {k: v[1] for k, v in _mask_variants({"format": "blockmask/1", "num_steps": K, "units": ["a"] * 3,
                                                    "mask": [[1, 1, 1]] * K}).items()}

CLI_CASES = _mask_cases() + [
    # special files as masks
    ("file:missing", ["macs", UNET, "--steps", "4", "--mask", "{in}/nope.json"], "mask file not found"),
    ("file:folder", ["macs", UNET, "--steps", "4", "--mask", "{in}/folder.json"], "holds no blockmask_mask.json"),
    ("file:fifo", ["macs", UNET, "--steps", "4", "--mask", "{in}/fifo.json"], "not a regular file"),
    ("file:sparse-100MB", ["macs", UNET, "--steps", "4", "--mask", "{in}/sparse.json"], "too large"),
    ("file:rectify-fifo", ["rectify", "{in}/fifo.json", "--model", UNET, "-o", "{out}/r.json"], "not a regular file"),
    # configs (config:PATH models)
    *[(f"config:{n}", ["info", f"config:{{in}}/{n}.json"], e) for n, (_, e) in BAD_CONFIGS.items()],
    ("config:missing", ["info", "config:{in}/nope.json"], "config file not found"),
    ("config:folder", ["info", "config:{in}/folder.json"], "is a folder"),
    ("config:fifo", ["info", "config:{in}/fifo.json"], "not a regular file"),
    # model specs
    ("model:empty", ["info", ""], "empty model spec"),
    ("model:unknown", ["info", "no-such-model"], "unknown model"),
    ("model:three-slashes", ["info", "a/b/c"], "unknown model"),
    ("model:json-missing", ["info", "nope.json"], "config file not found"),
    ("model:not-diffusers-folder", ["info", "{in}/folder.json"], "not a diffusers folder"),
    ("model:a-file", ["info", "{in}/a-file"], "not a diffusers folder"),
    # common options
    ("opt:device", ["info", UNET, "--device", "tpu"], "unknown device"),
    ("opt:device-negative", ["info", UNET, "--device", "cuda:-1"], "device"),
    ("opt:dtype", ["info", UNET, "--dtype", "int8"], "invalid choice"),
    ("opt:scheduler", ["info", UNET, "--scheduler", "foo"], "unsupported scheduler"),
    ("opt:init-seed-negative", ["info", UNET, "--init-seed", "-1"], "--init-seed must be >= 0"),
    ("opt:init-seed-text", ["info", UNET, "--init-seed", "x"], "invalid int value"),
    ("opt:steps-zero", ["macs", UNET, "--steps", "0"], "--steps must be >= 1"),
    ("opt:steps-negative", ["macs", UNET, "--steps", "-3"], "--steps must be >= 1"),
    ("opt:steps-huge", ["macs", UNET, "--steps", "1000000"], "--steps must be <= 10000"),
    ("opt:steps-float", ["macs", UNET, "--steps", "2.5"], "invalid int value"),
    ("opt:steps-missing", ["macs", UNET], "the following arguments are required: --steps"),
    ("opt:no-command", [], "the following arguments are required: command"),
    ("opt:unknown-command", ["frobnicate"], "invalid choice"),
    ("opt:unknown-flag", ["info", UNET, "--frob"], "unrecognized arguments"),
    # mask
    ("mask:kind", ["mask", "bogus", UNET, "--steps", "4", "-o", "{out}/m.json"], "invalid choice"),
    ("mask:interval-zero", ["mask", "deepcache", UNET, "--steps", "4", "--interval", "0", "-o", "{out}/m.json"],
     "--interval must be >= 1"),
    ("mask:every-zero", ["mask", "uniform", UNET, "--steps", "4", "--every", "0", "-o", "{out}/m.json"],
     "--every must be >= 1"),
    ("mask:branch-negative", ["mask", "deepcache", UNET, "--steps", "4", "--branch", "-1", "-o", "{out}/m.json"],
     "--branch must be >= 0"),
    ("mask:skip-nan", ["mask", "random", UNET, "--steps", "4", "--skip", "nan", "-o", "{out}/m.json"],
     "expected a finite number"),
    ("mask:skip-two", ["mask", "random", UNET, "--steps", "4", "--skip", "2", "-o", "{out}/m.json"],
     "skip must be <= 1"),
    ("mask:ratio-zero", ["mask", "random", UNET, "--steps", "4", "--macs-ratio", "0", "-o", "{out}/m.json"],
     "MAC ratio must be > 0"),
    ("mask:ratio-inf", ["mask", "random", UNET, "--steps", "4", "--macs-ratio", "inf", "-o", "{out}/m.json"],
     "expected a finite number"),
    ("mask:random-neither", ["mask", "random", UNET, "--steps", "4", "-o", "{out}/m.json"], "exactly one of"),
    ("mask:seed-negative", ["mask", "random", UNET, "--steps", "4", "--skip", "0.5", "--seed", "-1",
                            "-o", "{out}/m.json"], "--seed must be >= 0"),
    ("mask:out-folder", ["mask", "ones", UNET, "--steps", "4", "-o", "{out}"], "is a folder"),
    ("mask:out-missing-parent", ["mask", "ones", UNET, "--steps", "4", "-o", "{out}/no/m.json"], "does not exist"),
    ("mask:out-parent-file", ["mask", "ones", UNET, "--steps", "4", "-o", "{in}/a-file/m.json"], "output folder"),
    # a special file as output (a FIFO here: a regression must never be able to replace /dev/null)
    ("mask:out-fifo", ["mask", "ones", UNET, "--steps", "4", "-o", "{in}/fifo.json"], "not a regular file"),
    ("mask:out-empty", ["mask", "ones", UNET, "--steps", "4", "-o", ""], "output must be a file name"),
    ("mask:out-missing", ["mask", "ones", UNET, "--steps", "4"], "required: -o/--output"),
    # rectify
    ("rectify:model-missing", ["rectify", GOOD, "-o", "{out}/r.json"], "required: --model"),
    ("rectify:wrong-model", ["rectify", GOOD, "--model", DIT, "-o", "{out}/r.json"], "does not fit the model"),
    ("rectify:out-folder", ["rectify", GOOD, "--model", UNET, "-o", "{out}"], "is a folder"),
    # sample
    ("sample:guidance-nan", ["sample", UNET, "--steps", "4", "--guidance-scale", "nan", "-o", "{out}/s"],
     "expected a finite number"),
    ("sample:guidance-inf", ["sample", UNET, "--steps", "4", "--guidance-scale", "inf", "-o", "{out}/s"],
     "expected a finite number"),
    ("sample:guidance-negative", ["sample", UNET, "--steps", "4", "--guidance-scale", "-1", "-o", "{out}/s"],
     "guidance scale must be >= 0"),
    ("sample:guidance-huge", ["sample", UNET, "--steps", "4", "--guidance-scale", "1e300", "-o", "{out}/s"],
     "guidance scale must be <= 10000"),
    ("sample:num-images-zero", ["sample", UNET, "--steps", "4", "--num-images", "0", "-o", "{out}/s"],
     "--num-images must be >= 1"),
    ("sample:num-images-huge", ["sample", UNET, "--steps", "4", "--num-images", "100000", "-o", "{out}/s"],
     "--num-images must be <= 4096"),
    ("sample:class-negative", ["sample", DIT, "--steps", "4", "--class-label", "-1", "-o", "{out}/s"],
     "--class-label must be >= 0"),
    ("sample:class-out-of-range", ["sample", DIT, "--steps", "4", "--class-label", "99", "-o", "{out}/s"],
     "out of range"),
    ("sample:mode", ["sample", UNET, "--steps", "4", "--mode", "turbo", "-o", "{out}/s"], "invalid choice"),
    ("sample:out-is-file", ["sample", UNET, "--steps", "4", "-o", "{in}/a-file"], "is not a folder"),
    ("sample:out-no-parent", ["sample", UNET, "--steps", "4", "-o", "{out}/x/y"], "parent does not exist"),
    ("sample:prompt-missing", ["sample", TEXT, "--steps", "4", "--prompt-embeds", "{in}/nope.st", "-o", "{out}/s"],
     "not found"),
    ("sample:prompt-garbage", ["sample", TEXT, "--steps", "4", "--prompt-embeds", "{in}/not-safetensors.st",
                               "-o", "{out}/s"], "cannot read prompt embeddings"),
    ("sample:prompt-fifo", ["sample", TEXT, "--steps", "4", "--prompt-embeds", "{in}/fifo.json", "-o", "{out}/s"],
     "not a regular file"),
    ("sample:mask-k-mismatch", ["sample", UNET, "--steps", "5", "--mask", GOOD, "-o", "{out}/s"],
     "mask has 4 steps, sampling uses 5"),
    ("sample:seed-negative", ["sample", UNET, "--steps", "4", "--seed", "-5", "-o", "{out}/s"],
     "--seed must be >= 0"),
    # bench
    ("bench:mask-missing-flag", ["bench", UNET, "--steps", "4"], "required: --mask"),
    ("bench:batch-zero", ["bench", UNET, "--steps", "4", "--mask", GOOD, "--batch", "0"], "--batch must be >= 1"),
    ("bench:repeats-zero", ["bench", UNET, "--steps", "4", "--mask", GOOD, "--repeats", "0"],
     "--repeats must be >= 1"),
    ("bench:warmup-negative", ["bench", UNET, "--steps", "4", "--mask", GOOD, "--warmup", "-1"],
     "--warmup must be >= 0"),
    ("bench:guidance-nan", ["bench", UNET, "--steps", "4", "--mask", GOOD, "--guidance-scale", "nan"],
     "expected a finite number"),
    ("bench:k-mismatch", ["bench", UNET, "--steps", "3", "--mask", GOOD], "mask has 4 steps"),
    # train: options
    *[(f"train:{flag}={val}", ["train", UNET, "--steps", "4", "--iters", "1", "--batch", "1", flag, val,
                                 "-o", "{out}/m.json"], msg) for flag, val, msg in [
        ("--lambda", "nan", "expected a finite number"),
        ("--lambda", "inf", "expected a finite number"),
        ("--lambda", "-1", "lambda must be >= 0"),
        ("--lambda", "1e999", "expected a finite number"),
        ("--lr", "nan", "expected a finite number"),
        ("--lr", "0", "learning rate must be > 0"),
        ("--lr", "Infinity", "expected a finite number"),
        ("--alpha", "-0.5", "alpha must be >= 0"),
        ("--beta", "nan", "expected a finite number"),
        ("--tau", "2", "tau must be <= 1"),
        ("--temperature", "0", "temperature must be > 0"),
        ("--lambda-low", "-1", "lambda_low must be >= 0"),
        ("--guidance-scale", "nan", "expected a finite number"),
        ("--guidance-scale", "-2", "guidance scale must be >= 0"),
        ("--iters", "0", "iters must be >= 1"),
        ("--batch", "0", "batch must be >= 1"),
        ("--batch", "2.5", "invalid int value"),
        ("--seed", "-1", "--seed must be >= 0"),
        ("--probes", "-1", "probes"),
        ("--target-macs", "nan", "expected a finite number"),
        ("--target-macs", "0", "--target-macs must be in (0, 1]"),
        ("--target-macs", "1.5", "--target-macs must be in (0, 1]"),
        ("--target-macs", "1e-9", "unreachable"),
        ("--calib-batch", "0", "calibration batch must be >= 1"),
        ("--refine-passes", "-1", "refinement passes must be >= 0"),
        ("--sweep", "a,b", "--sweep takes"),
        ("--sweep", "nan", "--sweep takes"),
        ("--sweep", ",", "--sweep needs at least one"),
        ("--sweep", "1,-1", "lambda must be >= 0"),
        ("--recipe", "magic", "invalid choice"),
        ("--feature-norm", "l3", "invalid choice"),
        ("--class-label", "-3", "--class-label must be >= 0"),
        ("--prompt-embeds", "{in}/nope.st", "not text-conditioned: drop --prompt-embeds"),
    ]],
    ("train:class-out-of-range", ["train", DIT, "--steps", "3", "--iters", "1", "--class-label", "99",
                                  "-o", "{out}/m.json"], "out of range"),
    ("train:class-unconditional", ["train", UNET, "--steps", "3", "--iters", "1", "--class-label", "3",
                                   "-o", "{out}/m.json"], "not class-conditional"),
    ("train:steps-one", ["train", UNET, "--steps", "1", "-o", "{out}/m.json"], "steps must be >= 2"),
    ("train:steps-text", ["train", UNET, "--steps", "many", "-o", "{out}/m.json"], "expected an integer or 'auto'"),
    ("train:auto-no-target", ["train", UNET, "--steps", "auto", "-o", "{out}/m.json"], "--steps auto needs"),
    ("train:auto-resume", ["train", UNET, "--steps", "auto", "--target-macs", "0.5", "--resume",
                           "-o", "{out}/m.json"], "takes neither"),
    ("train:ref-steps-one", ["train", UNET, "--steps", "auto", "--ref-steps", "1", "--target-macs", "0.5",
                             "-o", "{out}/m.json"], "--ref-steps must be >= 2"),
    ("train:out-folder", ["train", UNET, "--steps", "4", "-o", "{out}"], "is a folder"),
    ("train:out-no-parent", ["train", UNET, "--steps", "4", "-o", "{out}/x/m.json"], "does not exist"),
    ("train:out-fifo", ["train", UNET, "--steps", "4", "-o", "{in}/fifo.json"], "not a regular file"),
    ("train:resume-nothing", ["train", UNET, "--steps", "4", "--iters", "1", "--batch", "1", "--resume",
                              "-o", "{out}/m.json"], "no checkpoint to resume"),
    *[(f"train:{n}", ["train", UNET, "--steps", str(K), "--iters", "1", "--batch", "1", "--resume",
                      "-o", "{out}/m.json"], e, n) for n, e in
      [("ckpt-not-json", "is corrupt"), ("ckpt-deep", "is corrupt"), ("ckpt-list", "is corrupt"),
       ("ckpt-format", "not a blockmask training checkpoint"), ("ckpt-model", "another model"),
       ("ckpt-units", "another model"), ("ckpt-config", "other settings (lr)"),
       ("ckpt-scheduler", "other settings (scheduler)"), ("ckpt-no-state", "no state"),
       ("ckpt-state-list", "'state' must be an object"), ("ckpt-rows-string", "'rows' must be a list"),
       ("ckpt-row-strings", "must be int"), ("ckpt-row-twos", "inconsistent mask"),
       ("ckpt-rows-too-many", "inconsistent mask"), ("ckpt-scores-strings", "must be float"),
       ("ckpt-delta-short", "another step count"), ("ckpt-seconds-missing", "'seconds' is missing"),
       ("ckpt-extra-field", "unknown state fields")]],
    ("train:ckpt-exists-no-resume", ["train", UNET, "--steps", str(K), "--iters", "1", "--batch", "1",
                                     "-o", "{out}/m.json"], "pass --resume", "ckpt-format"),
    ("train:locked", ["train", UNET, "--steps", str(K), "--iters", "1", "--batch", "1", "-o", "{out}/m.json"],
     "another run is writing", "LOCK"),
    # eval
    ("eval:batch-zero", ["eval", UNET, "--steps", "4", "--batch", "0", "-o", "{out}/e"], "--batch must be >= 1"),
    ("eval:num-samples-one", ["eval", UNET, "--steps", "4", "--num-samples", "1", "-o", "{out}/e"],
     "--num-samples must be >= 2"),
    ("eval:bench-batch-zero", ["eval", UNET, "--steps", "4", "--bench-batch", "0", "-o", "{out}/e"],
     "--bench-batch must be >= 1"),
    ("eval:bench-repeats-zero", ["eval", UNET, "--steps", "4", "--bench-repeats", "0", "-o", "{out}/e"],
     "--bench-repeats must be >= 1"),
    ("eval:deepcache-text", ["eval", UNET, "--steps", "4", "--deepcache", "a", "-o", "{out}/e"],
     "--deepcache takes comma-separated integers"),
    ("eval:deepcache-zero", ["eval", UNET, "--steps", "4", "--deepcache", "0", "--cache-dir", "{out}/c",
                             "-o", "{out}/e"], "--deepcache value must be >= 1"),
    ("eval:branch-negative", ["eval", UNET, "--steps", "4", "--deepcache", "2", "--branch", "-1",
                              "--cache-dir", "{out}/c", "-o", "{out}/e"], "--branch value must be >= 0"),
    ("eval:fora-text", ["eval", UNET, "--steps", "4", "--fora", "1.5", "-o", "{out}/e"], "--fora takes"),
    ("eval:mask-no-path", ["eval", UNET, "--steps", "4", "--mask", "learned=", "-o", "{out}/e"], "--mask takes"),
    ("eval:cache-dir-file", ["eval", UNET, "--steps", "4", "--cache-dir", "{in}/a-file", "-o", "{out}/e"],
     "exists and is not a folder"),
    ("eval:out-file", ["eval", UNET, "--steps", "4", "-o", "{in}/a-file"], "is not a folder"),
    ("eval:guidance-inf", ["eval", UNET, "--steps", "4", "--guidance-scale", "inf", "-o", "{out}/e"],
     "expected a finite number"),
    ("eval:class-negative", ["eval", UNET, "--steps", "4", "--class-label", "-1", "-o", "{out}/e"],
     "--class-label must be >= 0"),
    ("eval:mask-wrong-k", ["eval", UNET, "--steps", "5", "--mask", f"m={GOOD}", "--cache-dir", "{out}/c",
                           "-o", "{out}/e"], "mask has 4 steps, sampling uses 5"),
]


@pytest.fixture(scope="module")
def fast_loading():
    """Memoize Workbench.load for the corpus (the same few tiny models, hundreds of times)."""
    from blockmask.api import Workbench

    orig = Workbench.__dict__["load"]
    cache = {}

    def load(cls, spec, **kw):
        key = (spec, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = orig.__func__(cls, spec, **kw)
        return cache[key]

    Workbench.load = classmethod(load)
    yield
    Workbench.load = orig


def test_corpus_is_large_and_names_are_unique():
    ids = [c[0] for c in CLI_CASES] + [c[0] for c in API_CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert len(ids) >= 150, len(ids)
    assert {c[1][0] for c in CLI_CASES if c[1]} >= {"info", "macs", "mask", "rectify", "sample", "bench", "train",
                                                    "eval"}


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(case, inputs, fast_loading, tmp_path, monkeypatch, capsys):
    from blockmask.cli import main
    from blockmask.io import OutputLock
    from blockmask.train_run import checkpoint_path

    name, argv, expect = case[:3]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a stray default output (cache folder…) would show up here
    lock = None
    if len(case) > 3:  # a planted checkpoint, or a held lock
        if case[3] == "LOCK":
            lock = OutputLock(work / "m.json").__enter__()
        else:
            checkpoint_path(work / "m.json").write_text((inputs / f"{case[3]}.json").read_text())
    before_in, before_work = _snapshot(inputs), _snapshot(work)
    argv = [a.replace("{in}", str(inputs)).replace("{out}", str(work)) for a in argv]
    try:
        rc = main(argv)
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expect in lines[0], (expect, lines[0])
    assert out == "" and "Traceback" not in err
    after = _snapshot(work)
    if lock is not None:
        before_work = {k: v for k, v in before_work.items() if not k.endswith(".lock")}
    assert after == before_work, f"files left behind: {sorted(set(after) - set(before_work))}"
    assert _snapshot(inputs) == before_in


# --- the Python API corpus --------------------------------------------------------------------
def _api_cases():
    from blockmask import api
    from blockmask.evaluate import Method, evaluate
    from blockmask.mask import MaskFile, validate_mask
    from blockmask.models import load_model
    from blockmask.train import TrainConfig
    from blockmask.train_run import RefineConfig, run_training
    from blockmask.validate import check_float, check_int

    nan, inf = float("nan"), float("inf")
    return [
        ("api:generate-steps-negative", lambda wb, d: wb.generate(None, steps=-1), "steps must be >= 1"),
        ("api:generate-steps-float", lambda wb, d: wb.generate(None, steps=2.5), "steps must be an integer"),
        ("api:generate-steps-too-many", lambda wb, d: wb.generate(None, steps=10**6), "steps must be <="),
        ("api:generate-nothing", lambda wb, d: wb.generate(None), "give a mask or a number of steps"),
        ("api:generate-seed-negative", lambda wb, d: wb.generate(None, steps=2, seed=-1), "seed must be >= 0"),
        ("api:generate-seed-huge", lambda wb, d: wb.generate(None, steps=2, seed=2**70), "seed must be <="),
        ("api:generate-n-zero", lambda wb, d: wb.generate(None, steps=2, num_images=0), "number of images"),
        ("api:generate-n-float", lambda wb, d: wb.generate(None, steps=2, num_images=2.0), "must be an integer"),
        ("api:generate-mask-string", lambda wb, d: wb.generate("abc", steps=2), "0/1 numbers"),
        ("api:generate-mask-k", lambda wb, d: wb.generate(np.ones((3, len(wb.units))), steps=2), "mask has 3 steps"),
        ("api:generate-mode", lambda wb, d: wb.generate(None, steps=2, mode="x"), "mode must be"),
        ("api:generate-condition-type", lambda wb, d: wb.generate(None, steps=2, condition={"a": 1}),
         "condition must be"),
        ("api:condition-nan", lambda wb, d: wb.condition(guidance_scale=nan), "guidance scale must be a finite"),
        ("api:condition-inf", lambda wb, d: wb.condition(guidance_scale=inf), "guidance scale must be a finite"),
        ("api:condition-string", lambda wb, d: wb.condition(guidance_scale="2"), "guidance scale must be a number"),
        ("api:condition-label-str", lambda wb, d: wb.condition(class_label="3"), "class label must be an integer"),
        ("api:condition-labels-empty", lambda wb, d: wb.condition(class_label=[]), "must not be empty"),
        ("api:baseline-kind", lambda wb, d: wb.baseline("nope", steps=4), "unknown baseline"),
        ("api:baseline-kind-int", lambda wb, d: wb.baseline(3, steps=4), "unknown baseline"),
        ("api:baseline-steps-zero", lambda wb, d: wb.baseline("ones", steps=0), "steps must be >= 1"),
        ("api:baseline-interval", lambda wb, d: wb.baseline("deepcache", steps=4, interval=0), "interval"),
        ("api:baseline-every-float", lambda wb, d: wb.baseline("uniform", steps=4, every=1.5), "every"),
        ("api:baseline-skip-nan", lambda wb, d: wb.baseline("random", steps=4, skip=nan), "skip must be a finite"),
        ("api:baseline-ratio-big", lambda wb, d: wb.baseline("random", steps=4, macs_ratio=3), "MAC ratio"),
        ("api:rectify-1d", lambda wb, d: wb.rectify(np.ones(3)), "2-D"),
        ("api:rectify-wrong-n", lambda wb, d: wb.rectify(np.ones((3, 2))), "units (columns)"),
        ("api:rectify-nan", lambda wb, d: wb.rectify(np.full((2, len(wb.units)), nan)), "NaN"),
        ("api:mask-file-meta", lambda wb, d: wb.mask_file(np.ones((2, len(wb.units))), meta=[1]), "meta must be"),
        ("api:bench-batch-zero", lambda wb, d: wb.bench(np.ones((2, len(wb.units))), batch=0), "batch must be"),
        ("api:bench-repeats-float", lambda wb, d: wb.bench(np.ones((2, len(wb.units))), repeats=1.5), "repeats"),
        ("api:bench-mask-none", lambda wb, d: wb.bench(None), "mask"),
        ("api:timesteps-zero", lambda wb, d: wb.timesteps(0), "steps must be >= 1"),
        ("api:load-mask-int", lambda wb, d: wb.load_mask(5), "mask source must be"),
        ("api:load-mask-deep-bytes", lambda wb, d: wb.load_mask(b"[" * 100000), "nested deeper"),
        ("api:load-mask-bytes-list", lambda wb, d: wb.load_mask(b"[]"), "expected a JSON object"),
        ("api:load-mask-fifo", lambda wb, d: wb.load_mask(d / "fifo.json"), "not a regular file"),
        ("api:load-mask-steps", lambda wb, d: wb.load_mask(d / "good.json", steps=-2), "steps must be >= 1"),
        ("api:images-string", lambda wb, d: wb.images("x"), "latents must be"),
        ("api:load-device-int", lambda wb, d: api.Workbench.load(UNET, device=5), "device must be a string"),
        ("api:load-device-bogus", lambda wb, d: api.Workbench.load(UNET, device="tpu:9"), "unknown device"),
        ("api:load-scheduler", lambda wb, d: api.Workbench.load(UNET, scheduler="foo"), "unsupported scheduler"),
        ("api:load-scheduler-int", lambda wb, d: api.Workbench.load(UNET, scheduler=1), "scheduler must be"),
        ("api:load-spec-none", lambda wb, d: api.Workbench.load(None), "model spec must be a string"),
        ("api:load-dtype", lambda wb, d: api.Workbench.load(UNET, dtype="int8"), "unknown dtype"),
        ("api:load-init-seed", lambda wb, d: api.Workbench.load(UNET, init_seed=-1), "init seed"),
        ("api:load-model-config-list", lambda wb, d: load_model(f"config:{d}/cfg-list.json"), "found a list"),
        ("api:apply-missing-mask", lambda wb, d: api.apply(wb.model, d / "nope.json").__enter__(), "not found"),
        ("api:apply-no-denoiser", lambda wb, d: api.apply(object(), d / "good.json").__enter__(), "no .unet"),
        ("api:maskfile-loads-deep", lambda wb, d: MaskFile.loads("[" * 10**5), "nested deeper"),
        ("api:maskfile-from-json-list", lambda wb, d: MaskFile.from_json([]), "expected a JSON object"),
        ("api:maskfile-steps-null", lambda wb, d: MaskFile.loads((d / "mask-num_steps-null.json").read_text()),
         "'num_steps' must be an integer"),
        ("api:validate-mask-strings", lambda wb, d: validate_mask([["1", "1"]]), "0/1 numbers"),
        ("api:validate-mask-ragged", lambda wb, d: validate_mask([[1, 1], [1]]), "ragged"),
        ("api:validate-mask-deep", lambda wb, d: validate_mask(np.ones((1,) * 40).tolist()), "mask"),
        ("api:trainconfig-lam-nan", lambda wb, d: TrainConfig(steps=4, lam=nan), "lambda must be a finite"),
        ("api:trainconfig-lr-inf", lambda wb, d: TrainConfig(steps=4, lr=inf), "learning rate must be a finite"),
        ("api:trainconfig-batch-float", lambda wb, d: TrainConfig(steps=4, batch=2.5), "batch must be an integer"),
        ("api:trainconfig-steps-one", lambda wb, d: TrainConfig(steps=1), "steps must be >= 2"),
        ("api:trainconfig-steps-str", lambda wb, d: TrainConfig(steps="4"), "steps must be an integer"),
        ("api:trainconfig-recipe", lambda wb, d: TrainConfig.for_recipe("x", steps=4), "unknown recipe"),
        ("api:trainconfig-huge-int", lambda wb, d: TrainConfig(steps=4, lr=10**400), "learning rate"),
        ("api:refineconfig-batch", lambda wb, d: RefineConfig(batch=0), "calibration batch"),
        ("api:refineconfig-time", lambda wb, d: RefineConfig(time_limit=nan), "time limit"),
        ("api:run-training-out-folder", lambda wb, d: run_training(wb, TrainConfig(steps=4, iters=1), d),
         "is a folder"),
        ("api:run-training-budget", lambda wb, d: run_training(wb, TrainConfig(steps=4, iters=1), d / "x" / "m.json",
                                                               target_macs=nan), "--target-macs must be in"),
        ("api:evaluate-n-one", lambda wb, d: evaluate(wb, [Method("o", None, 2)], n=1), "number of samples"),
        ("api:evaluate-batch-zero", lambda wb, d: evaluate(wb, [Method("o", None, 2)], n=4, batch=0), "batch"),
        ("api:evaluate-guidance-nan", lambda wb, d: evaluate(wb, [Method("o", None, 2)], n=4, guidance=nan),
         "guidance scale"),
        ("api:evaluate-extractor", lambda wb, d: evaluate(wb, [Method("o", None, 2)], n=4, extractor=3),
         "FID extractor"),
        ("api:evaluate-nothing", lambda wb, d: evaluate(wb, [], n=4), "nothing to evaluate"),
        ("api:check-int-bool", lambda wb, d: check_int("n", True), "n must be an integer"),
        ("api:check-float-huge-int", lambda wb, d: check_float("x", 10**400), "x must be a finite"),
    ]


API_CASES = _api_cases()


@pytest.fixture(scope="module")
def api_wb():
    from blockmask.api import Workbench

    return Workbench.load(UNET)


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(case, inputs, api_wb, tmp_path, monkeypatch):
    name, call, expect = case
    monkeypatch.chdir(tmp_path)
    before = _snapshot(inputs)
    with pytest.raises(BlockmaskError) as info:
        call(api_wb, inputs)
    msg = str(info.value)
    assert expect in msg and "\n" not in msg, msg
    assert _snapshot(inputs) == before and list(tmp_path.iterdir()) == []


# --- a few real processes: the console script, exit codes, no traceback ------------------------
@pytest.mark.parametrize("argv, expect", [
    (["macs", UNET, "--steps", "4", "--mask", "{in}/mask-deep-top-list.json"], "nested deeper than 32"),
    (["train", UNET, "--steps", "4", "--lambda", "nan", "-o", "{out}/m.json"], "expected a finite number"),
])
def test_cli_subprocess(argv, expect, inputs, tmp_path):
    argv = [a.replace("{in}", str(inputs)).replace("{out}", str(tmp_path)) for a in argv]
    r = subprocess.run([sys.executable, "-m", "blockmask.cli", *argv], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and expect in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []
