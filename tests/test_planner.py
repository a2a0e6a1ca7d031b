"""The budget planner (issue 26): plain fewer steps is always a candidate, also at a non-integer
B·K_ref; the learned candidates are trained and scored; calibration and validation seeds are
disjoint and the chosen schedule carries validation figures; the choice is never below plain
fewer steps, on validation and on held-out seeds; bad input is one line, exit 2, no file. (The
seconds cost model against a measured run: tests/test_latency.py.)"""

import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blockmask.learning.candidates import Candidate, fewer_steps
from blockmask.cli.main import main
from blockmask.core.errors import BlockmaskError, OptionError
from blockmask.learning.latency import LatencyModel
from blockmask.learning.planner import Group, Planner, Scorer, bootstrap_gain

from conftest import tiny_spec

FAST = dict(calib=4, valid=8, chunk=4, train_iters=1, train_batch=1, refine_seconds=2.0, progress=False)


def planner(wb, **kw):
    return Planner(wb, **{"ref_steps": 10, **FAST, **kw})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(b=st.floats(0.1, 1.0), ref=st.integers(2, 60))
def test_fewer_steps_is_the_largest_k_that_fits_also_at_non_integer_budgets(workbenches, b, ref):
    p = workbenches("tiny-unet").macs
    cap = b * p.baseline(ref)
    c = fewer_steps(lambda k, m: p.baseline(k), cap, ref)
    expected = math.floor(b * ref + 1e-9)
    if expected < 1:
        assert c is None
    else:
        assert c.family == "fewer-steps" and c.mask is None and c.steps == expected


def test_fewer_steps_is_a_candidate_of_every_plan(workbenches):
    wb = workbenches("tiny-unet")
    pl = planner(wb, learn=False, refine_top=0)
    pool, fewer = pl.candidates(0.35)  # 0.35 × 10 = 3.5 steps: K' = 3
    assert fewer.steps == 3 and any(c is fewer for c in pool)
    assert pl.macs_ratio(fewer.steps, None) == pytest.approx(0.3)
    assert all(pl.macs_ratio(c.steps, c.mask) <= 0.35 + 1e-9 for c in pool)
    assert {c.family for c in pool} >= {"fewer-steps", "rule"}
    # seconds: a hand-made cost model; 4.5 s at 1 s a step affords 4 plain steps
    lat = LatencyModel(fixed=0.0, plain_step=1.0, masked_step=0.2, unit=np.full(len(wb.units), 0.05), profile=wb.macs)
    ps = planner(wb, unit="seconds", latency=lat, learn=False, refine_top=0)
    pool, fewer = ps.candidates(4.5)
    assert fewer.steps == 4 and all(c.cost <= 4.5 + 1e-9 for c in pool)
    assert any(c.family == "rule" and c.steps > 4 for c in pool)  # masked steps are cheaper: more of them fit


def test_learned_candidates_are_trained_scored_and_validated(workbenches):
    wb = workbenches("tiny-dit")
    pl = planner(wb, learn=True, refine_top=1)
    s = pl.plan(0.5)
    learned = [c for c in s.candidates if c["family"] == "learned"]
    assert {c["name"].split(" K=")[0] for c in learned} == {"learned (blockmask)", "learned (paper)"}
    assert all(math.isfinite(c["calibration_psnr"]) and c["macs_ratio"] <= 0.5 + 1e-9 for c in learned)
    best = max(learned, key=lambda c: c["calibration_psnr"])
    assert best["validation_psnr"] is not None  # the best of each family is validated
    assert any(c["family"] == "refined" for c in s.candidates)
    assert "learning_gain_db" in s.validation


def test_calibration_and_validation_seeds_are_disjoint_and_figures_reported(workbenches, tmp_path):
    wb = workbenches("tiny-unet")
    pl = planner(wb, learn=False, refine_top=0, calib=8, valid=8)
    s = pl.plan(0.45)
    assert not set(s.calibration["seeds"]) & set(s.validation["seeds"])
    assert s.validation["samples"] == 8 and len(s.validation["interval_db"]) == 2
    lo, hi = s.validation["interval_db"]
    assert lo <= s.validation["gain_over_fewer_steps_db"] <= hi
    assert s.macs_ratio <= 0.45 + 1e-9 and s.mask.shape == (s.steps, len(wb.units))
    # the noise of a validation chunk is not a calibration chunk's
    sc = Scorer(wb, 10, guidance=1.0)
    a = sc.reference(s.calibration["seeds"][0], 4)[1]
    b = sc.reference(s.validation["seeds"][0], 4)[1]
    assert not np.isclose(a[:, None], b[None]).all(axis=(2, 3, 4)).any()
    mf = s.to_mask_file(tmp_path / "plan.json")
    loaded, _ = wb.load_mask(tmp_path / "plan.json")
    assert loaded.meta["family"] == s.family and loaded.meta["plan"]["validation"]["psnr"] == pytest.approx(
        s.validation["psnr"]) and loaded.mask.shape == mf.mask.shape
    with pytest.raises(OptionError, match="overlap"):
        Planner(wb, ref_steps=10, calib=8, valid=8, chunk=4, screen=4, calib_seed=0, valid_seed=1, progress=False)


@pytest.mark.parametrize("name,budget", [("tiny-unet", 0.3), ("tiny-dit", 0.45), ("tiny-unet-cond", 0.6)])
def test_never_below_fewer_steps_on_validation_or_held_out_seeds(workbenches, name, budget):
    wb = workbenches(name)
    pl = planner(wb, learn=False, refine_top=1)
    s = pl.plan(budget)
    v = s.validation
    assert v["psnr"] >= v["fewer_steps"]["psnr"]
    if s.family != "fewer-steps":
        assert v["interval_db"][0] > 0  # a richer schedule only when it wins by more than its interval
    held = Group("held-out", 50_000, 8, 4)
    chosen = Candidate("chosen", s.family, s.steps, None if s.family == "fewer-steps" else s.mask, 0.0)
    fewer = Candidate("fewer", "fewer-steps", v["fewer_steps"]["steps"], None, 0.0)
    e_c, e_f = pl.scorer.errors(held, chosen), pl.scorer.errors(held, fewer)
    assert e_c.mean() <= e_f.mean(), (s.provenance["name"], e_c.mean(), e_f.mean())


def test_selection_prefers_the_simpler_candidate_unless_the_richer_wins_beyond_its_interval(workbenches):
    wb = workbenches("tiny-unet")
    pl = planner(wb, learn=False, refine_top=0)
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 1.5, 64)
    fewer = Candidate("fewer", "fewer-steps", 3, None, 1.0)
    rule = Candidate("rule", "rule", 5, np.ones((5, len(wb.units)), bool), 1.0)
    learned = Candidate("learned", "learned", 5, np.ones((5, len(wb.units)), bool), 1.0)

    def run(table):
        pl.scorer.errors = lambda group, c, chunks=None: table[c.name]
        return pl.select([learned, rule, fewer], fewer)[0].name

    noisy = base * rng.uniform(0.7, 1.31, 64)  # about as good as fewer steps, by noise only
    assert run({"fewer": base, "rule": noisy, "learned": noisy * 0.999}) == "fewer"
    close = base * 0.5 * rng.uniform(0.7, 1.3, 64)  # 2% better than the rule on average, noisy
    close *= 0.98 * (base * 0.5).mean() / close.mean()
    assert run({"fewer": base, "rule": base * 0.5, "learned": close}) == "rule"  # learned: not beyond its interval
    assert run({"fewer": base, "rule": base * 0.5, "learned": base * 0.1}) == "learned"
    assert run({"fewer": base, "rule": base * 2.0, "learned": base * 3.0}) == "fewer"  # never below fewer steps
    g, lo, hi = bootstrap_gain(base, base)
    assert g == 0 and lo <= 0 <= hi


def test_frontier_shares_runs_between_budgets(workbenches):
    wb = workbenches("tiny-unet")
    pl = planner(wb, learn=False, refine_top=0)
    first = pl.plan(0.45)
    runs = pl.scorer.runs
    again = pl.frontier([0.45])
    assert pl.scorer.runs == runs and again[0].steps == first.steps  # all from the cache
    more = pl.frontier([0.25, 0.65])
    assert [s.macs_ratio <= b + 1e-9 for s, b in zip(more, (0.25, 0.65))] == [True, True]
    with pytest.raises(BlockmaskError, match="unreachable"):
        pl.frontier([0.5, 0.05])  # checked before any work


def test_sweep_plans_every_budget_from_one_pool_never_below_fewer_steps(workbenches):
    """The dense frontier (blockmask.learning.sweep): one schedule per budget within it, chosen on validation
    never below plain fewer steps at that budget; the pool is scored once (later budgets cost only
    their validation runs); refinement happens at the budgets asked for; learned candidates (trained
    once at K_ref, fitted to each budget) are in the pool."""
    from blockmask.learning.sweep import frontier_budgets, pool, sweep

    budgets = frontier_budgets(10, k_min=3, k_max=8, extra=[0.55])
    assert budgets == [0.3, 0.4, 0.5, 0.55, 0.6, 0.7, 0.8]
    wb = workbenches("tiny-unet")
    pl = planner(wb, learn=False, refine_top=1, screen_keep=2)
    runs = []
    out = []
    for s in sweep(pl, budgets, refine_at=[0.55]):
        out.append(s)
        runs.append(pl.scorer.runs)
    assert len(out) == len(budgets)
    for s, b in zip(out, budgets):
        assert s.macs_ratio <= b + 1e-9 and s.budget["value"] == b
        v = s.validation
        assert v["psnr"] >= v["fewer_steps"]["psnr"] - 1e-9 and v["fewer_steps"]["steps"] == math.floor(b * 10 + 1e-9)
        assert s.work["pool_size"] > len(budgets)  # rules at every budget, not just fewer steps
    assert max(np.diff(runs)) < runs[0]  # the shared pool is scored once, before the first budget
    refined = [c for c in out[3].candidates if c["family"] == "refined"]
    assert all(c["family"] != "refined" for s in out[:3] for c in s.candidates)
    assert refined or out[3].family in ("rule", "fewer-steps")  # refinement may find nothing better
    # learned: trained once at K_ref, fitted to each budget, screened with the rest
    pl2 = planner(workbenches("tiny-dit"), refine_top=0, recipes=("blockmask",))
    caps = [(b, pl2.check(b)) for b in (0.4, 0.7)]
    learned = [c for c in pool(pl2, caps, learn=True) if c.family == "learned"]
    assert 1 <= len(learned) <= 2 and all(c.steps == 10 and c.params["recipe"] == "blockmask" for c in learned)
    ratios = sorted(pl2.macs_ratio(c.steps, c.mask) for c in learned)  # one mask per budget (equal ones merged)
    assert ratios[0] <= 0.4 + 1e-9 and ratios[-1] <= 0.7 + 1e-9


def test_sweep_pool_has_forecast_variants_when_asked(workbenches):
    """PlanConfig.forecast reaches the dense sweep's pool: every rule also with forecast reuse."""
    from blockmask.learning.sweep import pool

    wb = workbenches("tiny-unet")
    for forecast in (False, True):
        pl = planner(wb, learn=False, forecast=forecast)
        caps = [(b, pl.check(b)) for b in (0.5, 0.7)]
        reuses = {c.reuse for c in pool(pl, caps, learn=False)}
        assert ("forecast" in reuses) == forecast and "hold" in reuses


@pytest.mark.parametrize("extra,msg", [
    (["--budget", "0"], "must be > 0"),
    (["--budget", "1.5"], "must be <= 1"),
    (["--budget", "0.05", "--ref-steps", "10"], "unreachable"),
    (["--seconds", "-2"], "must be > 0"),
    (["--seconds", "0"], "must be > 0"),
    (["--seconds", "1e9"], "must be <= 86400"),
    (["--budget", "0.5", "--unit", "furlongs"], "invalid choice"),
    (["--budget", "0.5", "--seconds", "3"], "exactly one of"),
    (["--budget", "nan"], "finite"),
])
def test_bad_input_is_one_line_exit_2_and_no_file(tmp_path, capsys, extra, msg):
    out = tmp_path / "plan.json"
    assert main(["plan", tiny_spec("tiny-unet"), *extra, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and msg in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


def test_cli_plan_and_steps_auto_write_a_schedule(tmp_path, capsys):
    spec = tiny_spec("tiny-unet")
    assert main(["plan", spec, "--budget", "0.45", "--ref-steps", "8", "--calib", "4", "--valid", "4", "--no-learn",
                 "--json", "-o", str(tmp_path / "p.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    v = out["validation"]
    assert out["macs_ratio_vs_ref"] <= 0.45 + 1e-9 and v["psnr"] >= v["fewer_steps"]["psnr"]
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["meta"]["family"] == out["provenance"]["family"] and len(saved["mask"]) == out["steps"]
    assert main(["train", spec, "--steps", "auto", "--ref-steps", "6", "--target-macs", "0.5", "--iters", "1",
                 "--batch", "1", "--calib-batch", "4", "--json", "-o", str(tmp_path / "auto.json")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["macs_vs_ref"] <= 0.5 + 1e-9 and r["family"] in ("fewer-steps", "rule", "refined", "learned")
    assert json.loads((tmp_path / "auto.json").read_text())["meta"]["family"] == r["family"]


@pytest.mark.slow  # a subprocess: imports and model building take ~25 s on the shared CPU
def test_frontier_benchmark_dry_run(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, str(root / "benchmarks/frontier.py"), tiny_spec("tiny-unet"), "--dry-run",
                        "--budgets", "0.5,0.8", "-o", str(tmp_path)], capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})
    assert r.returncode == 0, r.stderr[-800:]
    df = pd.read_csv(tmp_path / "results.csv")
    plans = df[df.kind == "plan"]
    assert sorted(plans.name) == ["tiny-unet-006ref-b50p00-plan.json", "tiny-unet-006ref-b80p00-plan.json"]
    assert (plans.macs_ratio <= plans.budget + 1e-6).all()
    assert {"peer fewer-steps", "peer rule"} <= set(df.kind)
    assert set(df[df.kind == "peer rule"].name) == {f"DeepCache b{b} N={n}" for b in (0, 1) for n in (2, 3, 5)}
    assert df.test_psnr.notna().all()  # every row judged on the held-out test seeds too
    meta = json.loads((tmp_path / "tiny-unet-006ref-b50p00-plan.json").read_text())["meta"]
    assert meta["family"] in ("fewer-steps", "rule") and meta["plan"]["budget"]["value"] == 0.5
    # benchmarks/frontier_merge.py: a budget re-planned elsewhere (same seeds) replaces its row and file
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    new = tmp_path / "new"
    r = subprocess.run([sys.executable, str(root / "benchmarks/frontier.py"), tiny_spec("tiny-unet"), "--dry-run",
                        "--budgets", "0.8", "--test-seed", "20000", "-o", str(new)], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-800:]
    pd.read_csv(new / "results.csv").assign(valid_psnr=99.0).to_csv(new / "results.csv", index=False)  # marks its rows
    r = subprocess.run([sys.executable, str(root / "benchmarks/frontier_merge.py"), tiny_spec("tiny-unet"), "--into",
                        str(tmp_path), "--from", str(new)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-800:]
    merged = pd.read_csv(tmp_path / "results.csv")
    mp = merged[merged.kind == "plan"].set_index("name")
    assert sorted(mp.index) == sorted(plans.name) and mp.loc["tiny-unet-006ref-b80p00-plan.json", "valid_psnr"] == 99.0
    assert mp.loc["tiny-unet-006ref-b50p00-plan.json", "valid_psnr"] != 99.0
    assert (merged[merged.kind != "plan"].valid_psnr != 99.0).all()  # the peers' rows stay
    from blockmask.learning.frontierfile import Frontier

    fr = Frontier.load(tmp_path / "tiny-unet-006ref-frontier.json")
    assert len(fr.plans) == 2 and "frontier_merge.py" in fr.meta["merged"][-1]
    assert "(the new plans: python benchmarks/frontier.py " in fr.meta["merged"][-1]  # what planned them
    r = subprocess.run([sys.executable, str(root / "benchmarks/frontier_merge.py"), tiny_spec("tiny-unet"), "--into",
                        str(new / "nope"), "--from", str(new)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "results.csv not found" in r.stderr


@pytest.mark.slow  # two subprocesses on a tiny U-Net: ~40 s on the shared CPU
def test_dense_frontier_and_its_wall_time_benchmark(tmp_path):
    """benchmarks/frontier.py --dense plans budgets at the rule peers' own MAC points too, and
    benchmarks/frontier_speed.py times its schedules against the real DeepCache package and the
    plain run, interleaved."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pandas as pd

    from test_containers import container_effect_checks

    from blockmask.learning.frontierfile import answered

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    r = subprocess.run([sys.executable, str(root / "benchmarks/frontier.py"), tiny_spec("tiny-unet"), "--dry-run",
                        "--dense", "--budgets", "0.5", "-o", str(tmp_path)], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-800:]
    df = pd.read_csv(tmp_path / "results.csv")
    plans, rules = df[df.kind == "plan"], df[df.kind == "peer rule"]
    assert len(plans) >= 3 and (plans.macs_ratio <= plans.budget + 1e-6).all()
    assert (plans.valid_psnr.notna() & plans.test_psnr.notna()).all()
    r = subprocess.run([sys.executable, str(root / "benchmarks/frontier_speed.py"), tiny_spec("tiny-unet"),
                        "--frontier", str(tmp_path), "--rounds", "1", "--batch", "1", "-o", str(tmp_path / "s.csv")],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-800:]
    s = pd.read_csv(tmp_path / "s.csv")
    vs_dc = s[s.comparison.str.endswith("vs frontier")]
    assert set(vs_dc.peer) <= set(rules.name) and len(vs_dc) >= 1
    assert (vs_dc.valid_psnr >= vs_dc.peer_valid_psnr - 1e-9).all()  # the schedule at the peer's fidelity
    assert (vs_dc.deepcache_over_schedule > 0).all()
    mine = s[s.comparison == "plain vs schedule"]
    assert 1 <= len(mine) <= len(plans) and set(mine.schedule) <= set(plans.name)  # one row per distinct schedule
    assert np.allclose(mine.efficiency, mine.speedup * mine.macs_ratio, atol=1e-3)
    # --answers: only what some budget gets; the richest budget's plan, rated worst, is superseded
    original = (tmp_path / "results.csv").read_text()
    last = plans.budget.idxmax()
    df.loc[last, "valid_psnr"] = -1.0
    df.to_csv(tmp_path / "results.csv", index=False)
    gets = set(answered(df[df.kind == "plan"].sort_values("budget").reset_index(drop=True)))
    r = subprocess.run([sys.executable, str(root / "benchmarks/frontier_speed.py"), tiny_spec("tiny-unet"), "--answers",
                        "--frontier", str(tmp_path), "--rounds", "1", "--batch", "1", "-o", str(tmp_path / "a.csv")],
                       capture_output=True, text=True, timeout=600, env=env)
    (tmp_path / "results.csv").write_text(original)
    assert r.returncode == 0, r.stderr[-800:]
    ans = pd.read_csv(tmp_path / "a.csv")
    ans = ans[ans.comparison == "plain vs schedule"]
    masked = set(ans[ans.schedule_family != "fewer-steps"].schedule)
    assert 1 <= len(ans) and masked <= gets and df.name[last] not in gets
    fewer = ans[ans.schedule_family == "fewer-steps"].schedule  # the control stays, superseded or not
    assert set(fewer) == set(mine[mine.schedule_family == "fewer-steps"].schedule)
    r = subprocess.run([sys.executable, str(root / "benchmarks/frontier_speed.py"), tiny_spec("tiny-unet"), "--pace",
                        "steps", "--frontier", str(tmp_path), "--rounds", "1", "--batch", "1", "-o", str(tmp_path / "p.csv")],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-800:]
    paced = pd.read_csv(tmp_path / "p.csv")
    paced = paced[paced.comparison == "plain vs schedule"]  # the same schedules, their calls interleaved
    assert list(paced.schedule) == list(mine.schedule) and (paced.pace == "steps").all() and (paced.speedup > 0).all()
    # the timed runs' own MACs (a U-Net: no shortcut, so the planned ratio up to the per-unit split's rounding)
    assert np.allclose(paced.run_macs_ratio, paced.macs_ratio, atol=0.02) and paced.saved_per_run_mac_saved.notna().any()
    rep = subprocess.run([sys.executable, str(root / "benchmarks/frontier_report.py"), str(tmp_path), "--speed",
                          str(tmp_path / "s.csv")], capture_output=True, text=True, timeout=600, env=env)
    assert rep.returncode == 0, rep.stderr[-800:]
    fs = df[df.kind == "peer fewer-steps"]
    assert f"matched (PSNR >= at <= 1.02x MACs, test seeds): **{(fs.met_by.fillna('') != '').sum()} of {len(fs)}**" \
        in rep.stdout and "time saved / MACs saved" in rep.stdout
    bad = subprocess.run([sys.executable, str(root / "benchmarks/frontier_speed.py"), tiny_spec("tiny-unet"),
                          "--frontier", str(tmp_path / "nowhere"), "-o", str(tmp_path / "x.csv")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert bad.returncode == 2 and "results.csv not found" in bad.stderr and not (tmp_path / "x.csv").exists()
    container_effect_checks(tmp_path, env)  # benchmarks/container_effect.py on the same frontier (test_containers.py)

def test_plan_shipped_answers_from_the_frontier_file_at_once(workbenches, monkeypatch, tmp_path, capsys):
    """`blockmask plan MODEL --budget B --shipped`: the shipped frontier's point for B (the best
    validated of those planned for budgets <= B), its mask and reuse mode written as a mask file, nothing sampled; one line and exit 2 when
    there is no frontier, for seconds, or below the frontier's cheapest point."""
    from frontier_fixture import tiny_frontier

    from blockmask.learning.frontierfile import Frontier
    from blockmask.io.maskfile import MaskFile

    spec = tiny_spec("tiny-unet")
    fr = tiny_frontier(workbenches("tiny-unet"))
    monkeypatch.setattr(Frontier, "for_model", classmethod(lambda cls, model, ref_steps=50: fr))
    monkeypatch.setattr("blockmask.learning.planscore.Scorer.errors", lambda *a, **k: pytest.fail("sampled"))
    out = tmp_path / "s.json"
    assert main(["plan", spec, "--budget", "0.7", "--ref-steps", "6", "--shipped", "--json", "-o", str(out)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["provenance"] == "DeepCache b0 N=3" and r["frontier_budget"] == 0.6 and r["source"] == "shipped frontier"
    steps, mask = fr.schedule("tiny-unet-006ref-b60p00-plan.json")
    mf = MaskFile.load(out)
    assert mf.num_steps == steps == r["steps"] and (mf.mask == mask).all() and mf.meta["family"] == "rule"
    assert mf.reuse == r["reuse"] == "hold"
    fr.points.loc[fr.points.name == "tiny-unet-006ref-b60p00-plan.json", "reuse"] = "forecast"  # a forecast point
    assert main(["plan", spec, "--budget", "0.7", "--ref-steps", "6", "--shipped", "--json", "-o", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["reuse"] == "forecast" and MaskFile.load(out).reuse == "forecast"
    for argv, msg in [(["--budget", "0.3"], "below"), (["--seconds", "2"], "MAC budgets")]:
        assert main(["plan", spec, "--ref-steps", "6", "--shipped", *argv, "-o", str(tmp_path / "x.json")]) == 2
        err = capsys.readouterr().err
        assert msg in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "x.json").exists()
    monkeypatch.setattr(Frontier, "for_model", classmethod(lambda cls, model, ref_steps=50: None))
    assert main(["plan", spec, "--budget", "0.5", "--shipped"]) == 2
    assert "no shipped frontier" in capsys.readouterr().err


def test_plan_config_groups_the_options_and_names_an_unknown_one(workbenches):
    """Planner options are one dataclass (issue 30: no function over 8 parameters); keywords replace its
    fields, and an unknown keyword is one OptionError naming it, before any work."""
    from blockmask.core.errors import OptionError
    from blockmask.learning.planner import PlanConfig

    wb = workbenches("tiny-unet")
    p = Planner(wb, PlanConfig(ref_steps=10, calib=4), calib=6, valid=8, chunk=4, screen=2, progress=False)
    assert (p.ref_steps, p.config.calib, p.config.valid) == (10, 6, 8) and len(p.calib.seeds) >= 1
    with pytest.raises(OptionError, match="unknown planner option.*calibs"):
        Planner(wb, ref_steps=10, calibs=4)
