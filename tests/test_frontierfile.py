"""The frontier file (blockmask.learning.frontierfile): what benchmarks/frontier.py gathers and the apps read."""

import json

import numpy as np
import pandas as pd
import pytest

from blockmask.core.errors import BlockmaskError
from blockmask.learning.frontierfile import Frontier, peer_points


def frontier(units=3):
    m = np.array([[1, 1, 1], [0, 1, 0], [1, 1, 1], [0, 0, 1]], bool)[:, :units]
    pts = pd.DataFrame([
        {"kind": "plan", "name": "p30", "family": "fewer-steps", "provenance": "DDIM 3 steps", "budget": 0.3,
         "steps": 3, "macs_ratio": 0.3, "valid_psnr": 20.0, "test_psnr": 20.1, "met_by": None},
        {"kind": "plan", "name": "p50", "family": "refined", "provenance": "refined from fora N=2", "budget": 0.5,
         "steps": 4, "macs_ratio": 0.48, "valid_psnr": 25.0, "test_psnr": 24.8, "met_by": None},
        {"kind": "peer fewer-steps", "name": "DDIM 3 steps", "family": "fewer-steps", "provenance": None,
         "budget": None, "steps": 3, "macs_ratio": 0.3, "valid_psnr": 20.0, "test_psnr": 20.1, "met_by": "p30"},
        {"kind": "peer rule", "name": "FORA N=2", "family": "rule", "provenance": None, "budget": None, "steps": 4,
         "macs_ratio": 0.5, "valid_psnr": 24.0, "test_psnr": 24.1, "met_by": ""},
    ])
    return Frontier("tiny", 10, ["a", "b", "c"][:units], pts, {"p30": None, "p50": m, "FORA N=2": m}, {"x": 1})


def test_round_trip_schedules_and_budgets(tmp_path):
    f = frontier()
    path = f.save(tmp_path / "f.json")
    g = Frontier.load(path)
    assert (g.model, g.ref_steps, g.units, g.meta) == ("tiny", 10, ["a", "b", "c"], {"x": 1})
    k, m = g.schedule("p50")
    assert k == 4 and (m == f.masks["p50"]).all()
    k, m = g.schedule("p30")
    assert k == 3 and m.shape == (3, 3) and m.all()  # fewer steps: the plain model at K'
    assert g.at_budget(0.49)["name"] == "p30" and g.at_budget(0.5)["name"] == "p50" and g.at_budget(1)["name"] == "p50"
    better = g.points.copy()  # a cheaper plan with a better validation PSNR is chosen at larger budgets too
    better.loc[better.name == "p30", "valid_psnr"] = 26.0
    h = Frontier("tiny", 10, g.units, better, g.masks, {})
    assert h.at_budget(0.3)["name"] == "p30" and h.at_budget(0.6)["name"] == "p30"
    # what each planned budget gets: its own plan, or a cheaper one validation rates higher (superseded)
    assert list(g.answers().answer) == ["p30", "p50"] and list(g.line().name) == ["p30", "p50"]
    assert list(h.answers().answer) == ["p30", "p30"] and list(h.line().name) == ["p30"]
    assert "answer" not in h.line() and list(h.answers().name) == ["p30", "p50"]
    assert g.counts() == {"fewer_steps_matched": 1, "fewer_steps": 1, "rules_beaten": 0, "rules": 1}
    assert list(g.plans.name) == ["p30", "p50"] and len(g.peers) == 2


@pytest.mark.parametrize("budget,match", [(0.2, "below"), (0, r"\(0, 1\]"), (1.5, r"\(0, 1\]"), (float("nan"), r"\(0, 1\]")])
def test_bad_budgets_and_names_are_one_line(budget, match):
    with pytest.raises(BlockmaskError, match=match):
        frontier().at_budget(budget)
    with pytest.raises(BlockmaskError, match="no point 'nope'"):
        frontier().schedule("nope")


def test_malformed_files_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    for text, match in [("{", "malformed"), (json.dumps({"format": "x"}), "not a blockmask frontier"),
                        (json.dumps({**frontier().to_json(), "units": ["a"]}), "wrong shape")]:
        bad.write_text(text)
        with pytest.raises(BlockmaskError, match=match):
            Frontier.load(bad)
    with pytest.raises(BlockmaskError, match="cannot read"):
        Frontier.load(tmp_path / "missing.json")


def test_peer_points_are_the_issues_peers(workbenches):
    unet = peer_points(workbenches("tiny-unet"), 50)
    assert [c.steps for c in unet if c.family == "fewer-steps"] == list(range(13, 46))
    at100 = [c.steps for c in peer_points(workbenches("tiny-unet"), 100, stride=7) if c.family == "fewer-steps"]
    assert at100 == [*range(26, 91, 7), 90]  # K_ref = 100: every 7th K' from 26, and the last, 90
    assert {c.name for c in unet if c.family == "rule"} == {f"DeepCache b{b} N={n}" for b in (0, 1) for n in (2, 3, 5)}
    dit = {c.name for c in peer_points(workbenches("tiny-dit"), 10) if c.family == "rule"}
    assert {"FORA N=2", "FORA N=3"} <= dit and dit <= {"FORA N=2", "FORA N=3", "blocks N=2", "blocks N=3"}


def test_answers_follow_at_budget_at_every_planned_budget():
    """Random frontiers: ``answered`` (the report's and the figure's) is ``at_budget`` at each planned budget,
    and the line's validation PSNR never falls as the budget grows."""
    from blockmask.learning.frontierfile import answered

    rng = np.random.default_rng(0)
    f = frontier()
    for _ in range(30):
        n = int(rng.integers(1, 8))
        budgets = np.sort(rng.choice(np.arange(0.2, 1.0, 0.05), n, replace=rng.random() < 0.3))
        pts = pd.DataFrame([{"kind": "plan", "name": f"p{i}", "family": "rule", "provenance": f"r{i}",
                             "budget": float(b), "steps": 4, "macs_ratio": float(b) - 0.01,
                             "valid_psnr": float(rng.choice([np.nan, *rng.normal(30, 3, 3)])), "test_psnr": 30.0,
                             "met_by": None} for i, b in enumerate(budgets)])
        g = Frontier("tiny", 10, f.units, pts, {f"p{i}": None for i in range(n)}, {})
        a = g.answers()
        assert list(a.answer) == [g.at_budget(b)["name"] for b in a.budget] == answered(g.plans.reset_index(drop=True))
        v = pd.to_numeric(g.line().valid_psnr).fillna(-np.inf).to_numpy()
        assert (v[1:] >= v[:-1]).all()
