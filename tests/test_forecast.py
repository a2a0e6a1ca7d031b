"""Forecast reuse (issue 26, blockmask.core.forecast): a reused unit returns a first-order forecast from
its last two computed values. Invariants: the all-ones mask is bitwise the plain model; the forecast
formula; a same-step recomputation (Heun) does not move the older value; rectification under forecast
changes no sample and keeps the values a forecast reads (rectification for hold does not); the mode
travels through the planner's candidates, the schedule, the mask file, the CLI and enable()."""

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockmask.hooks.branchstates import UnitState
from blockmask.learning.candidates import Candidate, forecast_variant, rule_mask
from blockmask.core.errors import MaskError, OptionError
from blockmask.hooks.execution import MaskedExecution
from blockmask.core.forecast import predict, record, terms
from blockmask.io.maskfile import MaskFile
from blockmask.sampling.sample import Condition, SampleOptions, sample

from conftest import GUIDED, TINY, tiny_spec


def run(wb, mask, reuse, name, seed=11, steps=None):
    k = steps or mask.shape[0]
    return sample(wb.model, num_steps=k, scheduler=wb.scheduler(), seed=seed, batch=2, mask=mask,
                  condition=Condition(guidance_scale=GUIDED[name]), options=SampleOptions(reuse=reuse))


def test_forecast_formula_and_same_step_recompute():
    st_ = UnitState()
    record(st_, torch.tensor([1.0]), 0)
    assert torch.equal(predict(st_, 1), torch.tensor([1.0]))  # one value only: hold
    record(st_, torch.tensor([3.0]), 2)
    assert torch.equal(predict(st_, 3), torch.tensor([4.0]))  # 3 + (3-2)/(2-0)·(3-1)
    assert torch.equal(predict(st_, 6), torch.tensor([7.0]))
    record(st_, torch.tensor([5.0]), 2)  # Heun's second call in row 2: prev stays the row-0 value
    assert st_.k_prev == 0 and torch.equal(st_.prev, torch.tensor([1.0]))
    assert torch.equal(predict(st_, 4), torch.tensor([9.0]))  # 5 + 2/2·(5-1)
    tup = (torch.tensor([1.0]), torch.tensor([2.0]))  # tuple outputs (encoder/hidden streams) forecast leafwise
    s2 = UnitState()
    record(s2, tup, 1)
    record(s2, (torch.tensor([2.0]), torch.tensor([4.0])), 2)
    out = predict(s2, 3)
    assert torch.equal(out[0], torch.tensor([3.0])) and torch.equal(out[1], torch.tensor([6.0]))


def test_forecast_terms_sum_to_the_forecast():
    st_ = UnitState()
    record(st_, torch.tensor([1.0, -2.0]), 0)
    assert terms(st_, 1) == [(1.0, st_.cache)]  # one value only: hold
    record(st_, torch.tensor([3.0, 0.5]), 3)
    for k in (4, 5, 9):
        (c1, f1), (c0, f0) = terms(st_, k)
        assert f1 is st_.cache and f0 is st_.prev and c1 + c0 == pytest.approx(1.0)
        torch.testing.assert_close(c1 * f1 + c0 * f0, predict(st_, k))
    assert terms(st_, 3) == [(1.0, st_.cache)]  # not past the last value: hold


@pytest.mark.parametrize("name", TINY)
def test_all_ones_under_forecast_is_bitwise_the_plain_model(workbenches, name):
    wb = workbenches(name)
    ones = np.ones((5, len(wb.units)), bool)
    plain = sample(wb.model, num_steps=5, scheduler=wb.scheduler(), seed=3, batch=2,
                   condition=Condition(guidance_scale=GUIDED[name]))
    assert torch.equal(run(wb, ones, "forecast", name, seed=3), plain)


@pytest.mark.parametrize("name", TINY)
def test_forecast_differs_from_hold_where_a_unit_reuses_after_two_computations(workbenches, name):
    wb = workbenches(name)
    m = np.ones((6, len(wb.units)), bool)
    m[3:, : len(wb.units) // 2] = False  # computed at steps 0, 1, 2, then reused
    hold, fc = run(wb, m, "hold", name), run(wb, m, "forecast", name)
    assert not torch.equal(hold, fc)
    m2 = np.ones((6, len(wb.units)), bool)
    m2[1:, : len(wb.units) // 2] = False  # computed once only: a forecast cannot extrapolate, it holds
    assert torch.equal(run(wb, m2, "hold", name), run(wb, m2, "forecast", name))


def masks(n, k_max=7):
    return st.integers(3, k_max).flatmap(
        lambda k: st.lists(st.lists(st.booleans(), min_size=n, max_size=n), min_size=k, max_size=k)
    ).map(lambda rows: np.array(rows, bool))


@pytest.mark.parametrize("name", TINY)
def test_rectification_under_forecast_changes_no_sample(workbenches, name):
    """Property: under forecast, the forecast-rectified mask gives bitwise the same samples; it is a
    subset of the mask, idempotent and keeps at least what hold-rectification keeps."""
    wb = workbenches(name)

    @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
    @given(masks(len(wb.units)))
    def check(m):
        m[0] = True
        r = wb.rectify(m, reuse="forecast").mask
        assert not (r & ~m).any()
        assert np.array_equal(wb.rectify(r, reuse="forecast").mask, r)
        assert not (wb.rectify(m).mask & ~r).any()  # forecast needs ⊇ hold needs
        assert torch.equal(run(wb, m, "forecast", name), run(wb, r, "forecast", name))

    check()


def test_hold_rectification_is_not_enough_under_forecast(workbenches):
    """Not vacuous: a mask whose hold-rectified form changes the forecast samples (a value read only
    as a forecast's older value), while the forecast-rectified form keeps it."""
    wb = workbenches("tiny-unet")
    rng = np.random.default_rng(0)
    found = 0
    for _ in range(40):
        m = rng.random((6, len(wb.units))) < 0.5
        m[0] = True
        h, f = wb.rectify(m).mask, wb.rectify(m, reuse="forecast").mask
        if np.array_equal(h, f):
            continue
        assert (f & ~h).any()
        if not torch.equal(run(wb, m, "forecast", "tiny-unet"), run(wb, h, "forecast", "tiny-unet")):
            found += 1
        if found:
            break
    assert found


def test_bad_reuse_is_refused(workbenches, monkeypatch):
    import blockmask.hooks.execution as execution

    wb = workbenches("tiny-unet")
    with pytest.raises(OptionError, match="reuse must be one of"):
        MaskedExecution(wb.model, np.ones((2, len(wb.units)), bool), reuse="extrapolate")
    with pytest.raises(OptionError, match="reuse must be one of"):
        wb.rectify(np.ones((2, len(wb.units)), bool), reuse=None)
    monkeypatch.setattr(execution, "resolve_mode", lambda mode, device, **kw: mode)  # rowgraph needs CUDA
    with pytest.raises(OptionError, match="rowgraph"):
        MaskedExecution(wb.model, np.ones((2, len(wb.units)), bool), mode="rowgraph", reuse="forecast")
    with pytest.raises(MaskError, match="meta.reuse"):
        MaskFile(mask=np.ones((2, 1), bool), units=["a"], meta={"reuse": "taylor"})


def test_forecast_candidates_are_scored_under_forecast_and_carried_to_the_mask_file(workbenches, tmp_path):
    from blockmask.learning.planner import Planner

    wb = workbenches("tiny-unet")
    pl = Planner(wb, ref_steps=8, calib=4, valid=8, chunk=4, screen=4, learn=False, refine_top=0, progress=False)
    m = rule_mask(wb, {"kind": "deepcache", "interval": 2, "branch": 0}, 8)
    hold = Candidate("deepcache b0 N=2 K=8", "rule", 8, m, pl.cost(8, m), {"kind": "deepcache", "interval": 2})
    fc = forecast_variant(wb, hold, pl.cost)
    assert fc.reuse == "forecast" and fc.key != hold.key and fc.family == "rule"
    assert fc.cost >= hold.cost and forecast_variant(wb, fc, pl.cost) is None
    e_hold, e_fc = pl.scorer.errors(pl.calib, hold), pl.scorer.errors(pl.calib, fc)
    lat = wb.generate(fc.mask, steps=8, seed=pl.calib.chunks[0][0], num_images=pl.calib.chunks[0][1],
                      condition=pl.scorer.condition(pl.calib.chunks[0][1]), reuse="forecast")
    ref = pl.scorer.reference(*pl.calib.chunks[0])[1]
    img = wb.images(lat).numpy().astype(np.float64)
    assert np.allclose(((img - ref) ** 2).reshape(len(img), -1).mean(1), e_fc[: len(img)])
    assert not np.array_equal(e_hold, e_fc)
    pool, _ = pl.candidates(0.7)
    assert any(c.reuse == "forecast" for c in pool) and any(c.reuse == "hold" and c.mask is not None for c in pool)
    sched = pl.schedule(0.7, fc, {"scored": {}}, [fc], t0=0.0, runs0=0, work0=0)
    assert sched.reuse == "forecast" and sched.to_json()["reuse"] == "forecast"
    path = tmp_path / "s.json"
    sched.to_mask_file(path)
    loaded = MaskFile.load(path)
    assert loaded.reuse == "forecast"
    assert MaskFile(mask=np.ones((2, 1), bool), units=["a"]).reuse == "hold"


def test_cli_sample_runs_a_forecast_mask_file_as_forecast(workbenches, tmp_path):
    from blockmask.cli.main import main

    wb = workbenches("tiny-unet")
    m = np.ones((6, len(wb.units)), bool)
    m[3:, : len(wb.units) // 2] = False
    for reuse in ("hold", "forecast"):
        wb.mask_file(m, {"reuse": reuse}).save(tmp_path / f"{reuse}.json")
        assert main(["sample", tiny_spec("tiny-unet"), "--mask", str(tmp_path / f"{reuse}.json"), "--steps", "6",
                     "--num-images", "2", "--seed", "5", "-o", str(tmp_path / reuse), "--json"]) in (0, None)
    a, b = (np.load(tmp_path / r / "samples.npy") for r in ("hold", "forecast"))
    want = wb.images(wb.generate(m, steps=6, seed=5, num_images=2, reuse="forecast")).numpy()
    assert not np.array_equal(a, b) and np.array_equal(b, want.astype(np.float32))
    out = tmp_path / "r.json"
    assert main(["rectify", str(tmp_path / "forecast.json"), "--model", tiny_spec("tiny-unet"), "-o", str(out),
                 "--json"]) in (0, None)
    assert json.loads(out.read_text())["meta"]["reuse"] == "forecast"
