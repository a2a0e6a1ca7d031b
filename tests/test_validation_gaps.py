"""Validation gaps and API error types (issue 31, items 6 and 7): each case is one BlockmaskError
(CLI: one line, exit 2) with nothing written, where it used to be an internal error or a hang."""

import errno
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from blockmask.workbench import Workbench
from blockmask.cli.main import main
from blockmask.core.errors import BlockmaskError, FileFormatError, MaskError, OptionError
from blockmask.io.maskfile import MaskFile
from blockmask.eval.report import to_csv
from blockmask.learning.train import TrainConfig

from conftest import tiny_spec


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(rc, err, expect):
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert expect in err, (expect, err)


# --- item 6: files and outputs --------------------------------------------------------------


@pytest.mark.parametrize("text, expect", [
    ("[1, 2]", "expected a JSON object"),
    ('{"steps_computation_mask": [1, 1e400]}', "out of range"),
    ('{"steps_computation_mask": [1, 0], "Fn_compute_blocks": "x"}', "Fn_compute_blocks must be an integer"),
    ('{"steps_computation_mask": [1, true]}', "list of 0/1"),
])
def test_cachedit_import_refuses_bad_configs(text, expect, tmp_path, capsys):
    src = tmp_path / "cfg.json"
    src.write_text(text)
    rc, out, err = _run(["cachedit", "import", src, "--model", tiny_spec("tiny-dit"), "-o", tmp_path / "m.json"], capsys)
    _one_line_error(rc, err, expect)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.json"]


def test_cachedit_import_never_opens_a_device(tmp_path, capsys):
    rc, out, err = _run(["cachedit", "import", "/dev/zero", "--model", tiny_spec("tiny-dit"), "-o", tmp_path / "m.json"],
                        capsys)
    _one_line_error(rc, err, "not a regular file")


def _folder(tmp_path, edit_config=None, keep=1.0):
    wb = Workbench.load(tiny_spec("tiny-unet"))
    root = tmp_path / "model"
    wb.model.save_pretrained(root, safe_serialization=True)
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(json.dumps({"_class_name": "DDIMScheduler"}))
    if edit_config:
        cfg = (root / "config.json").read_text()
        (root / "config.json").write_text(edit_config(cfg))
    if keep < 1:
        f = root / "diffusion_pytorch_model.safetensors"
        sd = load_file(str(f))
        save_file({k: sd[k] for k in sorted(sd)[: int(len(sd) * keep)]}, str(f))
    return root


@pytest.mark.parametrize("value, expect", [("1e400", "out of range"), ("1e300", "beyond the supported size")])
def test_folder_config_gets_the_size_and_finiteness_checks(value, expect, tmp_path, capsys):
    import re

    root = _folder(tmp_path, lambda c: re.sub(r'"sample_size": \d+', f'"sample_size": {value}', c))
    with pytest.raises(FileFormatError, match=expect):
        Workbench.load(str(root))
    _one_line_error(*_run(["info", root], capsys)[::2], expect)


def test_weights_missing_half_their_tensors_are_named(tmp_path, capsys):
    root = _folder(tmp_path, keep=0.5)
    with pytest.raises(FileFormatError, match=r"the weights lack \d+ tensor\(s\) of UNet2DModel, first '"):
        Workbench.load(str(root))
    _one_line_error(*_run(["info", root], capsys)[::2], "the weights lack")


@pytest.mark.parametrize("command", ["sample", "report"])
def test_dangling_output_folder_is_refused_before_any_work(command, tmp_path, capsys):
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "nowhere")
    src = tmp_path / "r.csv"
    src.write_text(to_csv([{"method": "original", "steps": 4, "macs_ratio": 1.0, "speedup": 1.0, "n": 8, "fid": 1.0}]))
    argv = (["sample", tiny_spec("tiny-unet"), "--steps", "2", "--num-images", "1", "-o", out] if command == "sample"
            else ["report", src, "-o", out])
    _one_line_error(*_run(argv, capsys)[::2], "dangling symbolic link")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r.csv"]


def test_report_on_a_full_disk_leaves_no_partial_set(tmp_path, capsys, monkeypatch):
    import blockmask.io.files as bio

    src = tmp_path / "r.csv"
    src.write_text(to_csv([{"method": "original", "steps": 4, "macs_ratio": 1.0, "speedup": 1.0, "n": 8, "fid": 1.0}]))
    calls = []
    real = bio.os.fsync

    def fsync(fd):  # the third file hits a full disk
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(bio.os, "fsync", fsync)
    _one_line_error(*_run(["report", src, "-o", tmp_path / "rep"], capsys)[::2], "No space left on device")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]  # no folder, no temp file, no partial set
    existing = tmp_path / "old"
    existing.mkdir()
    (existing / "results.csv").write_text("the previous report")
    calls.clear()
    _one_line_error(*_run(["report", src, "-o", existing], capsys)[::2], "No space left on device")
    assert sorted(p.name for p in existing.iterdir()) == ["results.csv"]
    assert (existing / "results.csv").read_text() == "the previous report"


# --- item 7: the Python API raises BlockmaskError ------------------------------------------


@pytest.fixture(scope="module")
def wb():
    return Workbench.load(tiny_spec("tiny-unet"))


def test_api_calls_raise_blockmask_errors(wb, tmp_path):
    n = len(wb.units)
    with pytest.raises(OptionError, match="dtype torch.int8 is not supported"):
        Workbench.load(tiny_spec("tiny-unet"), dtype=torch.int8)
    with pytest.raises(MaskError, match="metadata is not JSON"):
        wb.mask_file(np.ones((2, n), bool), meta={"x": object()}).save(tmp_path / "m.json")
    assert not list(tmp_path.iterdir())
    with pytest.raises(MaskError, match="does not fit"):
        wb.macs.ratio(np.ones((2, n + 1), bool))
    with pytest.raises(MaskError, match="does not fit"):
        wb.macs.ratio(np.ones((0, n), bool))
    with pytest.raises(BlockmaskError, match="too long"):
        Workbench.load("a" * 5000)
    from blockmask.eval.evaluate import EvalConfig, Method, evaluate

    with pytest.raises(BlockmaskError, match="not found"):
        evaluate(wb, [Method("o", None, 2)],
                 EvalConfig(n=4, data=str(tmp_path / "no-such-folder"), cache_dir=str(tmp_path / "c")))


def test_maskfile_unit_list_is_checked():
    with pytest.raises(MaskError, match="appears twice"):
        MaskFile(np.ones((2, 2), bool), ["a", "a"])
    with pytest.raises(MaskError, match="list of unit names"):
        MaskFile(np.ones((2, 2), bool), "ab")
    assert MaskFile(np.ones((2, 2), bool), ("a", "b")).units == ["a", "b"]


def test_trainconfig_bounds_and_class_labels(tmp_path):
    with pytest.raises(OptionError, match="steps must be <= 10000"):
        TrainConfig(steps=10**12)
    with pytest.raises(OptionError, match="iters must be <= 1000000"):
        TrainConfig(steps=4, iters=10**12)
    with pytest.raises(BlockmaskError, match="class_labels must be a list"):
        TrainConfig(steps=4, class_labels="3")
    from blockmask.learning.run import run_training

    from blockmask.adapters import adapter_for

    cond = Workbench.load(tiny_spec("tiny-dit"))
    top = adapter_for(cond.model).num_classes(cond.model)  # one past the last class
    with pytest.raises(OptionError, match="out of range"):
        run_training(cond, TrainConfig(steps=3, iters=1, class_labels=(top,)), tmp_path / "m.json", progress=False)
    assert not list(tmp_path.iterdir())


def test_sample_on_a_full_disk_leaves_no_partial_set(tmp_path, capsys, monkeypatch):
    from PIL import Image

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    out = tmp_path / "s"
    rc, _, err = _run(["sample", tiny_spec("tiny-unet"), "--steps", "2", "--num-images", "1", "-o", out], capsys)
    _one_line_error(rc, err.split("\r")[-1], "No space left on device")  # after the progress bar's \r
    assert list(out.iterdir()) == []  # samples.npy was not left without its grid
