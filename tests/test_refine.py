"""Budget training: the learned mask beats every hand-made rule at its budget on seeds it was not
trained on; the trainer freezes the model; the paper's recipe runs; bad budgets are one clear error."""

import json

import numpy as np
import pytest
import torch

from blockmask.learning import refine as rf
from blockmask.cli.main import main
from blockmask.core.errors import BlockmaskError
from blockmask.learning.train import Observers, TrainConfig, train_mask
from blockmask.learning.run import RefineConfig, RunOptions, cheapest_ratio, run_training
from blockmask.sampling.sample import SamplingRun

from conftest import tiny_spec


@pytest.fixture(scope="module")
def ddpm():
    from blockmask.workbench import Workbench

    return Workbench.load("mnist-ddpm")


@pytest.mark.slow
def test_budget_mask_beats_every_rule_on_held_out_seeds(ddpm, tmp_path):
    steps, budget = 12, 0.45
    cfg = TrainConfig(steps=steps, iters=4, batch=2)
    mf, summary = run_training(ddpm, cfg, tmp_path / "m.json",
                               RunOptions(target_macs=budget, refine=RefineConfig(seed=1000, batch=8, passes=2)),
                               progress=False)
    cost = rf.Budget(ddpm.macs, ddpm.graph)
    assert cost(mf.mask) <= budget * 1.02
    cal = mf.meta["calibration"]
    assert cal["refine"]["error"] <= cal["start_error"]
    held = rf.Calibration(SamplingRun(ddpm.model, num_steps=steps, scheduler=ddpm.scheduler(), seed=7000, batch=16))
    ours = held.evaluate(mf.mask)
    rules = {n: m for n, m in rf.rule_masks(ddpm, steps).items() if cost(m) <= budget * 1.02}
    assert any(n.startswith("deepcache") for n in rules) and any(n.startswith("fora") for n in rules)
    best = min(held.evaluate(m) for m in rules.values())
    assert ours < best, (ours, best)  # lower error to the plain model on unseen seeds


def test_calibration_reuses_trajectory_states_exactly(workbenches):
    """A run restarted at step k from the stored state equals the full run of the same mask."""
    wb = workbenches("tiny-unet")
    cal = rf.Calibration(SamplingRun(wb.model, num_steps=6, scheduler=wb.scheduler(), seed=3, batch=2))
    m = np.ones((6, len(wb.units)), bool)
    m[2:, ::2] = False
    full, states = cal._run(m, 0, None, record=True)
    for k in (1, 3, 5):
        part, _ = cal._run(m, k, states)
        assert torch.equal(part, full)
    assert cal.evaluate(np.ones((6, len(wb.units)), bool)) == 0.0


def test_refine_keeps_the_budget_and_never_gets_worse(workbenches):
    wb = workbenches("tiny-dit")
    cost = rf.Budget(wb.macs, wb.graph)
    steps, budget = 6, 0.6
    cands = rf.rule_masks(wb, steps)
    cal = rf.Calibration(SamplingRun(wb.model, num_steps=steps, scheduler=wb.scheduler(), seed=0, batch=2))
    name, start, err, scored = rf.best_start(cal, cands, cost, budget)
    assert all(c <= budget for c, _ in scored.values())
    rows = [r for m in cands.values() for r in cost.rectified(m)]
    m, rep = rf.refine(cal, start, rows=rows, cost=cost, budget=budget, passes=1)
    assert cost(m) <= budget + 1e-9 and rep.error <= err
    assert cal.evaluate(m) == pytest.approx(rep.error, rel=1e-6)  # the tracked error is the real one


def test_schedule_masks_fill_the_budget(workbenches):
    wb = workbenches("tiny-unet")
    cost = rf.Budget(wb.macs, wb.graph)
    zero = np.zeros(len(wb.units), bool)
    for name, m in rf.schedule_masks(cost, 20, 0.4, {"reuse all": zero}).items():
        assert m[0].all() and cost(m) <= 0.4 + 1e-9 and cost(m) > 0.3, name


def test_train_mask_freezes_the_model_and_restores_it(workbenches):
    wb = workbenches("tiny-unet")
    wb.model.train()
    flags = [p.requires_grad for p in wb.model.parameters()]
    seen = []
    cfg = TrainConfig(steps=3, iters=2, batch=1)
    p = wb.macs
    train_mask(wb.model, wb.scheduler(), cfg, p, observers=Observers(progress=False, callback=lambda rep: seen.append(
        (wb.model.training, any(q.requires_grad for q in wb.model.parameters())))))
    assert seen and all(s == (False, False) for s in seen)  # eval mode and frozen while learning
    assert all(q.grad is None for q in wb.model.parameters())
    assert wb.model.training and [q.requires_grad for q in wb.model.parameters()] == flags
    wb.model.eval()


def test_guidance_scale_comes_from_one_place(workbenches):
    from blockmask.sampling.sample import Condition

    wb = workbenches("tiny-dit")
    p = wb.macs
    with pytest.raises(BlockmaskError, match="guidance scale given twice"):
        train_mask(wb.model, wb.scheduler(), TrainConfig(steps=3, iters=1, batch=1, guidance_scale=2.0),
                   p, observers=Observers(progress=False), condition=Condition(guidance_scale=3.0))


def test_paper_recipe_runs_and_records_eq12(workbenches, tmp_path):
    wb = workbenches("tiny-unet")
    cfg = TrainConfig.for_recipe("paper", steps=4, iters=2, batch=1)
    assert (cfg.feature_norm, cfg.sparsity, cfg.recipe) == ("none", "count", "paper")
    mf, _ = run_training(wb, cfg, tmp_path / "p.json", progress=False)
    assert mf.meta["rectified"]["rule"] == "eq12" and mf.meta["training"]["recipe"] == "paper"
    with pytest.raises(BlockmaskError, match="unknown recipe"):
        TrainConfig.for_recipe("nope", steps=4)


@pytest.mark.parametrize("budget, msg", [("0", "must be in \\(0, 1\\]"), ("1.5", "must be in \\(0, 1\\]"),
                                         ("nan", "expected a finite number"), ("0.001", "unreachable")])
def test_bad_budgets_are_one_line_exit_2(tmp_path, capsys, budget, msg):
    out = tmp_path / "m.json"
    rc = main(["train", tiny_spec("tiny-unet"), "--steps", "4", "--iters", "1", "--target-macs", budget,
               "-o", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: ")
    import re

    assert re.search(msg, err) and not out.exists()


def test_unknown_recipe_is_exit_2(tmp_path, capsys):
    # argparse choices: one line, exit 2 (main returns the code, it never raises SystemExit)
    assert main(["train", tiny_spec("tiny-unet"), "--steps", "4", "--recipe", "nope", "-o", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "invalid choice" in err


def test_cheapest_ratio_is_reachable(workbenches):
    wb = workbenches("tiny-dit")
    floor = cheapest_ratio(wb, 10)
    m = np.zeros((10, len(wb.units)), bool)
    m[0] = True
    assert wb.macs.ratio(m) == pytest.approx(floor) and 0 < floor < 0.2
    json.dumps(floor)


def test_start_from_a_lower_budget_mask_keeps_the_set_monotone(workbenches, tmp_path, capsys):
    """--start-from: the lower budget's mask is a start candidate, so the higher budget's calibration
    error is never worse than it; a start mask of another K, or without --target-macs, is one line, exit 2."""
    spec = tiny_spec("tiny-unet")
    common = ["--steps", "6", "--iters", "1", "--calib-batch", "2", "--refine-passes", "1", "--json"]
    low, high = tmp_path / "b50.json", tmp_path / "b80.json"
    assert main(["train", spec, *common, "--target-macs", "0.5", "-o", str(low)]) == 0
    assert main(["train", spec, *common, "--target-macs", "0.8", "--start-from", str(low), "-o", str(high)]) == 0
    capsys.readouterr()
    lo, hi = (json.loads(p.read_text())["meta"]["calibration"] for p in (low, high))
    assert "start b50" in hi["candidates"]
    assert hi["error"] <= hi["candidates"]["start b50"]["error"] + 1e-12
    assert hi["candidates"]["start b50"]["error"] == pytest.approx(lo["error"])  # same seeds, same mask
    other = tmp_path / "k4.json"
    assert main(["train", spec, "--steps", "4", "--iters", "1", "--json", "-o", str(other)]) == 0
    capsys.readouterr()
    for extra, msg in ((["--target-macs", "0.8", "--start-from", str(other)], "4 steps"),
                       (["--start-from", str(low)], "--start-from needs --target-macs")):
        out = tmp_path / "bad.json"
        assert main(["train", spec, *common, *extra, "-o", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and msg in err and not out.exists(), err


def test_steps_auto_is_the_planner(workbenches, tmp_path):
    """``--steps auto`` (blockmask/learning/auto.py) is the budget planner: plain fewer steps is one of
    its candidates, the schedule's MACs against the plain ref-step model stay within the budget, its
    validation is not below fewer steps, and the file samples at its own K (more in test_planner.py)."""
    from blockmask.learning.auto import run_budget_auto

    wb = workbenches("tiny-unet")
    ref, budget = 8, 0.5
    mf, r = run_budget_auto(wb, TrainConfig(steps=ref, iters=1, batch=1), tmp_path / "auto.json", target_macs=budget,
                            ref_steps=ref, refine=RefineConfig(seed=1000, batch=4, passes=1), progress=False,
                            valid=4, chunk=4, refine_seconds=2.0)
    names = [c["name"] for c in mf.meta["plan"]["candidates"]]
    assert "DDIM 4 steps" in names and r["macs_vs_ref"] <= budget + 1e-9
    assert r["validation"]["psnr"] >= r["validation"]["fewer_steps"]["psnr"]
    assert mf.meta["family"] == r["family"] and mf.meta["plan"]["budget"]["ref_steps"] == ref
    loaded, _ = wb.load_mask(tmp_path / "auto.json")
    assert loaded.mask.shape[0] == r["steps"]
    assert torch.isfinite(wb.generate(loaded.mask, steps=r["steps"], seed=0, num_images=1)).all()
