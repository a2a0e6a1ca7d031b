"""No silent wrong output (issue 31, item 4): every fallback that changes meaning is a warning a
person sees, non-finite inputs are refused, non-finite outputs fail with one line naming the tensor,
report refuses fractional step counts, and bench flags timings it cannot trust."""

import json
import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from blockmask.workbench import Workbench, bench_reliability
from blockmask.cli.main import main
from blockmask.core.errors import BlockmaskError, BlockmaskWarning, FileFormatError
from blockmask.eval.report import read_csv, to_csv
from blockmask.sampling.sample import Condition, load_prompt_file

from conftest import tiny_spec


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def tiny_unet():
    return Workbench.load(tiny_spec("tiny-unet"))


def _pipeline(root, model, scheduler_text=None):
    """A DDPM pipeline folder: unet/ (+ scheduler/scheduler_config.json when given)."""
    model.save_pretrained(root / "unet", safe_serialization=True)
    index = {"_class_name": "DDPMPipeline", "_diffusers_version": "0.30.0", "unet": ["diffusers", "UNet2DModel"]}
    if scheduler_text is not None:
        index["scheduler"] = ["diffusers", "DDIMScheduler"]
        (root / "scheduler").mkdir()
        (root / "scheduler" / "scheduler_config.json").write_text(scheduler_text)
    (root / "model_index.json").write_text(json.dumps(index))
    return root


GOOD_SCHEDULER = json.dumps({"_class_name": "DDIMScheduler", "num_train_timesteps": 1000, "beta_schedule": "linear"})


def test_missing_scheduler_config_is_a_warning(tiny_unet, tmp_path, capsys):
    root = _pipeline(tmp_path / "pipe", tiny_unet.model)
    with pytest.warns(BlockmaskWarning, match="no scheduler/scheduler_config.json"):
        Workbench.load(str(root))
    rc, out, err = _run(["info", root], capsys)
    assert rc == 0 and err.startswith("warning: ") and "default training schedule" in err, err


@pytest.mark.parametrize("text, expect", [
    (GOOD_SCHEDULER[:25], "JSON"),
    ("[" * 5000 + "]" * 5000, "nested"),
    (json.dumps({"_class_name": "os.system"}), "names no diffusers scheduler"),
    (json.dumps({"_class_name": "UNet2DModel"}), "names no diffusers scheduler"),
    (json.dumps({"_class_name": "DDIMScheduler", "beta_schedule": "nonsense"}), "cannot be built"),
])
def test_broken_scheduler_config_is_an_error(tiny_unet, tmp_path, capsys, text, expect):
    root = _pipeline(tmp_path / "pipe", tiny_unet.model, text)
    with pytest.raises(FileFormatError, match=expect):
        Workbench.load(str(root))
    rc, out, err = _run(["info", root], capsys)
    assert rc == 2 and err.count("\n") == 1 and "scheduler_config.json" in err, err


def test_good_scheduler_config_loads_without_warning(tiny_unet, tmp_path, recwarn):
    wb = Workbench.load(str(_pipeline(tmp_path / "pipe", tiny_unet.model, GOOD_SCHEDULER)))
    assert wb.loaded.scheduler is not None
    assert not [w for w in recwarn if issubclass(w.category, BlockmaskWarning)]


def test_mask_naming_fewer_units_warns_with_the_count(tiny_unet, tmp_path, capsys):
    wb = tiny_unet
    n = len(wb.units)
    mf = wb.mask_file(np.ones((3, n), bool))
    part = type(mf)(mask=np.ones((3, 1), bool), units=[wb.unit_names[0]], model=mf.model, fingerprint=mf.fingerprint,
                    scheduler=mf.scheduler)
    part.save(tmp_path / "part.json")
    got, warnings = wb.load_mask(str(tmp_path / "part.json"))
    assert got.mask.shape == (3, n) and any(f"names 1 of the model's {n} units" in w for w in warnings), warnings
    rc, out, err = _run(["macs", tiny_spec("tiny-unet"), "--steps", "3", "--mask", tmp_path / "part.json"], capsys)
    assert rc == 0 and f"warning: mask names 1 of the model's {n} units; the other {n - 1} always run" in err, err


def test_cast_weights_warn(tiny_unet, tmp_path, capsys):
    model = Workbench.load(tiny_spec("tiny-unet")).model.half()
    root = tmp_path / "half"
    model.save_pretrained(root, safe_serialization=True)
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text(GOOD_SCHEDULER)
    with pytest.warns(BlockmaskWarning, match=r"stored as F16 \(\d+ tensors\) are cast to float32"):
        Workbench.load(str(root))
    rc, out, err = _run(["info", root], capsys)
    assert rc == 0 and "warning: " in err and "cast to float32" in err


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path, capsys):
    model = Workbench.load(tiny_spec("tiny-unet")).model
    name, p = next((n, p) for n, p in model.named_parameters() if n.endswith("bias"))
    p.data[0] = float("inf")
    root = _pipeline(tmp_path / "pipe", model, GOOD_SCHEDULER)
    with pytest.raises(BlockmaskError, match=rf"weights: '{name}' has 1 non-finite value"):
        Workbench.load(str(root))
    rc, out, err = _run(["sample", root, "--steps", "2", "--num-images", "1", "-o", tmp_path / "out"], capsys)
    assert rc == 2 and err.count("\n") == 1 and name in err and not (tmp_path / "out").exists(), err


def _prompt_file(path, **tensors):
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


def test_non_finite_or_misshapen_prompt_inputs_are_refused(tmp_path):
    emb = torch.randn(1, 6, 32)
    nan_mask = torch.ones(1, 6)
    nan_mask[0, 2] = float("nan")
    with pytest.raises(BlockmaskError, match="prompt_attention_mask.*NaN"):
        load_prompt_file(_prompt_file(tmp_path / "a.st", prompt_embeds=emb, prompt_attention_mask=nan_mask))
    with pytest.raises(BlockmaskError, match="negative_prompt_embeds"):
        load_prompt_file(_prompt_file(tmp_path / "b.st", prompt_embeds=emb, negative_prompt_embeds=torch.randn(1, 4, 32)))
    with pytest.raises(BlockmaskError, match="tokens"):
        load_prompt_file(_prompt_file(tmp_path / "c.st", prompt_embeds=emb, prompt_attention_mask=torch.ones(1, 5)))
    ok = load_prompt_file(_prompt_file(tmp_path / "d.st", prompt_embeds=emb, prompt_attention_mask=torch.ones(1, 6)))
    assert ok.prompt_embeds.shape == (1, 6, 32)


def test_non_finite_samples_fail_with_one_line_naming_the_tensor():
    """A NaN in the conditioning (here through the API, past every file check) gives NaN samples:
    refused, never returned."""
    wb = Workbench.load(tiny_spec("tiny-pixart"))
    width = wb.model.config.caption_channels
    emb = torch.randn(1, 4, width)
    emb[0, 1, 3] = float("nan")
    with pytest.raises(BlockmaskError, match="'final latents' has .* non-finite"):
        wb.generate(None, steps=2, condition=Condition(prompt_embeds=emb))
    with pytest.raises(BlockmaskError, match="'decoded samples'"):
        wb.images(torch.full((1, 4, 8, 8), float("nan")))


def test_report_refuses_fractional_steps(tmp_path, capsys):
    rows = [{"method": "original", "steps": 5, "macs_ratio": 1.0, "speedup": 1.0, "n": 8, "fid": 3.5, "psnr": 20.0}]
    good = tmp_path / "good.csv"
    good.write_text(to_csv(rows))
    assert read_csv(good)[0]["steps"] == 5
    bad = tmp_path / "bad.csv"
    bad.write_text(to_csv(rows).replace(",5,", ",5.7,"))
    with pytest.raises(BlockmaskError, match=r"steps='5.7' is not an integer"):
        read_csv(bad)
    rc, out, err = _run(["report", bad, "-o", tmp_path / "rep"], capsys)
    assert rc == 2 and "5.7" in err and not (tmp_path / "rep").exists()


def test_bench_reliability_rules():
    assert bench_reliability([1.0, 1.1, 0.9], [0.6, 0.55, 0.62], mac_speedup=2.0) == {"reliable": True,
                                                                                   "unreliable_reasons": []}
    above = bench_reliability([25.1, 21.7, 5.8], [3.3, 3.2, 3.4], mac_speedup=2.0)  # the busy CPU
    assert not above["reliable"] and any("above the ideal" in r for r in above["unreliable_reasons"])
    assert len(above["unreliable_reasons"]) == 1  # spread 19.3 s < median 21.7 s: only the speedup flags it
    spread = bench_reliability([1.0, 1.0, 1.0], [0.6, 0.6, 1.9], mac_speedup=2.0)
    assert not spread["reliable"] and spread["unreliable_reasons"][0].startswith("masked runs spread")


def test_bench_flags_an_impossible_speedup_in_text_and_json(tmp_path, capsys, monkeypatch):
    src = tmp_path / "m.json"
    assert _run(["mask", "uniform", tiny_spec("tiny-unet"), "--steps", "4", "-o", src], capsys)[0] == 0

    def slow_plain(self, mask, **kw):  # a plain run 10x slower than a masked one: above any MAC ideal
        time.sleep(0.05 if mask is None else 0.005)
        return torch.zeros(1)

    monkeypatch.setattr(Workbench, "generate", slow_plain)
    base = ["bench", tiny_spec("tiny-unet"), "--steps", "4", "--mask", src, "--repeats", "2", "--warmup", "0"]
    rc, out, err = _run(base, capsys)
    assert rc == 0 and "UNRELIABLE timing: speedup" in out and "above the ideal" in out, out
    rc, out, err = _run(base + ["--json"], capsys)
    r = json.loads(out)
    assert rc == 0 and r["reliable"] is False and "above the ideal" in r["unreliable_reasons"][0]


def test_apps_speed_text_flags_unreliable_timing():
    from blockmask.viz.compare import Comparison

    img = np.zeros((2, 2, 3), np.uint8)
    c = Comparison(img, img, img, 1.0, 0.0, float("inf"), 2.0, 0.3, 6.6, 6.0, 7.0, 3, "CPU", 2.0, 10.0, 5.0, 50.0, 1,
                   False, unreliable=("speedup 6.60x is above the ideal 2.00x (1 / MAC ratio)",))
    assert "UNRELIABLE timing: speedup 6.60x is above the ideal" in c.speed_text()
    assert "UNRELIABLE" not in Comparison(img, img, img, 1.0, 0.0, 1.0, 2.0, 1.0, 2.0, 2.0, 2.0, 1, "CPU", 2.0, 10.0, 5.0,
                                          50.0, 1, False).speed_text()
