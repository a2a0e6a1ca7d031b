"""The other methods as mask producers (issue 17): feature-change caching, the L2C-style router,
DiP-GO-style global optimisation — on every tiny architecture, at a budget, through API, CLI, presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY, tiny_spec

from blockmask.learning import methods
from blockmask.core.errors import BlockmaskError
from blockmask.learning.methods import feature_change as fc
from blockmask.learning.methods import global_opt

K = 12
QUICK = {"feature-change": {}, "router": {"iters_per_step": 1, "batch": 2}, "global": {"iters": 2}}


@pytest.mark.parametrize("name", list(methods.METHODS))
@pytest.mark.parametrize("model", TINY)
def test_reaches_budget_and_samples(workbenches, mnist_dir, model, name):
    wb = workbenches(model)
    opts = {**QUICK[name], **({"data": str(mnist_dir)} if name == "router" else {})}
    target = 0.55
    mask, meta = wb.method(name, steps=K, target_macs=target, **opts)
    assert mask.shape == (K, len(wb.units)) and mask[0].all()
    ratio = wb.macs.ratio(mask)
    assert abs(ratio / target - 1) <= 0.02 and meta["macs_ratio"] == pytest.approx(ratio)
    assert np.array_equal(wb.rectify(mask).mask, mask)  # already rectified
    assert 0 < mask[1:].sum() < mask[1:].size  # a real choice, not all or nothing
    x = wb.generate(mask, seed=0, num_images=2)
    assert torch.isfinite(x).all() and not torch.equal(x, wb.generate(None, steps=K, seed=0, num_images=2))
    assert meta["train_seconds"] >= 0 and meta["needs"]["data"]


def test_feature_change_schedule_rule():
    change = np.array([[0, 0], [0.3, 1.0], [0.3, 1.0], [0.3, 0.1], [0.3, 0.1]])
    m = fc.schedule(change, np.array([0.5, 1.0]), min_interval=1)
    assert m[:, 0].tolist() == [1, 0, 1, 0, 1]  # 0.3 + 0.3 ≥ 0.5, reset, again
    assert m[:, 1].tolist() == [1, 1, 1, 0, 0]
    m2 = fc.schedule(change, np.array([0.5, 1.0]), min_interval=2)
    assert m2[:, 1].tolist() == [1, 0, 1, 0, 0]  # refresh at 1 refused (too soon), then 2.0 ≥ 1 at step 2
    loose = fc.schedule(change, np.array([5.0, 5.0]))
    assert loose[1:].sum() == 0


def test_feature_change_options(workbenches):
    wb = workbenches("tiny-dit")
    change = fc.unit_changes(wb.model, wb.scheduler(), steps=K, batch=2)
    assert change.shape == (K, len(wb.units)) and (change[0] == 0).all() and (change[1:] > 0).all()
    assert fc.unit_scales(wb, fc.FeatureChangeConfig(per_unit="macs")).std() > 0
    with pytest.raises(BlockmaskError, match="unit_scales has 2 values"):
        wb.method("feature-change", steps=K, target_macs=0.5, unit_scales=(1.0, 2.0))
    with pytest.raises(BlockmaskError, match="min_interval must be >= 1"):
        wb.method("feature-change", steps=K, target_macs=0.5, min_interval=0)
    with pytest.raises(BlockmaskError, match="has no option 'iters'"):
        wb.method("feature-change", steps=K, target_macs=0.5, iters=3)
    with pytest.raises(BlockmaskError, match="unreachable"):
        wb.method("feature-change", steps=K, target_macs=0.01)


def test_global_checkpointing_same_gradient(workbenches):
    from blockmask.learning.methods.chain import SoftChain

    wb = workbenches("tiny-unet")
    run = global_opt._Run(wb, 6, global_opt.GlobalConfig(batch=2), None)
    grads = []
    for ck in (False, True):
        theta = torch.zeros((6, len(wb.units)), requires_grad=True)
        with SoftChain(wb.model) as chain:
            run.run(chain, torch.sigmoid(theta), ck).pow(2).mean().backward()
        grads.append(theta.grad)
    assert grads[0][1:].abs().sum() > 0 and torch.allclose(grads[0], grads[1], atol=1e-6)


def test_global_refuses_k_too_large_before_work(workbenches, monkeypatch):
    wb = workbenches("tiny-unet")
    monkeypatch.setattr(torch.optim, "Adam", lambda *a, **k: pytest.fail("optimisation started"))
    with pytest.raises(BlockmaskError, match=r"K=40 needs about .* GiB .*lower K"):
        wb.method("global", steps=40, target_macs=0.5, memory_limit_gb=1e-6)


def test_router_without_data_is_one_error_before_work(workbenches, tmp_path, monkeypatch):
    wb = workbenches("tiny-unet")
    monkeypatch.setattr("blockmask.learning.methods.router.load_mnist", lambda *a, **k: pytest.fail("data read"))
    with pytest.raises(BlockmaskError, match="router needs training images: data folder .* does not exist"):
        wb.method("router", steps=K, target_macs=0.5, data=str(tmp_path / "nope"))
    with pytest.raises(BlockmaskError, match="no t10k-images-idx3-ubyte"):
        wb.method("router", steps=K, target_macs=0.5, data=str(tmp_path))


def test_cli(capsys, tmp_path, mnist_dir):
    import json

    from blockmask.cli.main import main

    spec = tiny_spec("tiny-dit")
    out = tmp_path / "fc.json"
    assert main(["method", "feature-change", spec, "--steps", str(K), "--target-macs", "0.6", "--min-interval", "2",
                 "--per-unit", "macs", "-o", str(out), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert abs(rep["macs_ratio"] / 0.6 - 1) <= 0.02
    from blockmask.io.maskfile import MaskFile

    mf = MaskFile.load(out)
    assert mf.meta["producer"]["method"] == "feature-change" and mf.meta["producer"]["config"]["min_interval"] == 2
    assert main(["method", "router", spec, "--steps", str(K), "--target-macs", "0.6", "--data", str(mnist_dir),
                 "--iters-per-step", "1", "-o", str(tmp_path / "r.json"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["data"]["unique_images"] > 0 and rep["data"]["images_drawn"] == (K - 1) * 8
    assert main(["method", "router", spec, "--steps", str(K), "--target-macs", "0.45", "--from-scores",
                 str(tmp_path / "r.json"), "-o", str(tmp_path / "r45.json"), "--json"]) == 0  # one router, new threshold
    rep = json.loads(capsys.readouterr().out)
    assert abs(rep["macs_ratio"] / 0.45 - 1) <= 0.02 and rep["train_seconds"] == 0
    assert main(["method", "global", spec, "--steps", str(K), "--target-macs", "0.45", "--from-scores", str(out),
                 "-o", str(tmp_path / "g.json")]) == 2 and "was not made by global" in capsys.readouterr().err
    for argv, msg in ((["router", "--data", str(tmp_path / "none")], "router needs training images"),
                      (["global", "--memory-limit-gb", "1e-9"], "lower K or the batch")):
        assert main(["method", argv[0], spec, "--steps", str(K), "--target-macs", "0.6", *argv[1:],
                     "-o", str(tmp_path / "x.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and msg in err and "\n" not in err
        assert not (tmp_path / "x.json").exists()


def test_presets_list_and_build():
    from blockmask.viz import presets
    from blockmask.viz.context import load_context

    ctx = load_context(tiny_spec("tiny-pixart"), device="cpu")
    keys = [p.key for p in presets.presets(ctx, K)]
    assert {"method:feature-change", "method:router", "method:global"} <= set(keys)
    with pytest.raises(BlockmaskError, match="text model"):  # a text model runs on a prompt, none given
        presets.build(ctx, "method:feature-change", K, macs_ratio=0.6, seed=0)
    from blockmask.viz.prompts import RANDOM

    mask, source, meta = presets.build(ctx, "method:feature-change", K, macs_ratio=0.6, seed=0, prompt=RANDOM)
    assert abs(ctx.wb.macs.ratio(mask) / 0.6 - 1) <= 0.02 and "Feature-change" in source
    assert meta["producer"]["method"] == "feature-change"


def test_budget_table_extra_rows(workbenches, tmp_path):
    """benchmarks/budget_table.py --extra FAMILY=GLOB: mask files join the table as rows of that family."""
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import budget_table

    wb = workbenches("tiny-unet")
    mask, _ = wb.method("feature-change", steps=4, target_macs=0.8)
    wb.mask_file(mask).save(tmp_path / "feature-change-b80.json")
    rows = budget_table.extra_rows(wb, 4, [f"feature-change={tmp_path}/feature-change-*.json"], guidance=1.0)
    assert [(r.name, r.family) for r in rows] == [("feature-change-b80", "feature-change")]
    assert rows[0].run(0, 1).shape[0] == 1
    with pytest.raises(SystemExit, match="no file matches"):
        budget_table.extra_rows(wb, 4, [f"x={tmp_path}/none-*.json"], guidance=1.0)


def test_gradio_handler_loads_method_preset(monkeypatch):
    """The Gradio app's preset handler (the Streamlit panel calls the same presets.build) loads a method."""
    import sys
    import warnings

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "app"))
    import gradio_handlers as h

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    warnings.simplefilter("ignore")
    s = h.new_session(tiny_spec("tiny-unet"), 8)
    assert ("Feature-change caching (Wimbauer et al.)", "method:feature-change") in h.preset_choices(s)
    h.load_preset(s, "method:feature-change", 3, 0, 2, 0.6, 0)
    assert abs(s.ctx.wb.macs.ratio(s.editor.mask) / 0.6 - 1) <= 0.02


@pytest.mark.parametrize("scheduler", ["ddim", "euler-a", "heun"])
def test_global_chain_run_is_the_sampling_loop(workbenches, scheduler):
    """The global optimiser's plain run is blockmask.sampling.sample.sample's run, bit for bit, for every scheduler."""
    from blockmask.sampling.sample import sample

    wb = workbenches("tiny-unet", scheduler)
    cfg = global_opt.GlobalConfig(batch=2, seed=3)
    run = global_opt._Run(wb, 5, cfg, None)
    with torch.no_grad():
        ours = run.run(None, None)
    ref = sample(wb.model, num_steps=5, scheduler=wb.scheduler(), seed=3, batch=2)
    assert torch.equal(ours, ref)
    assert run.calls.tolist() == ([2, 2, 2, 2, 1] if scheduler == "heun" else [1] * 5)


def test_feature_change_heun_measures_each_row_once(workbenches):
    """With Heun a row's second evaluation is not a new step: the change of row k is measured between
    the first evaluations of rows k−1 and k, as Δ_k is."""
    wb = workbenches("tiny-unet", "heun")
    change = fc.unit_changes(wb.model, wb.scheduler(), steps=4, batch=1)
    assert change.shape == (4, len(wb.units)) and (change[0] == 0).all() and (change[1:] > 0).all()
