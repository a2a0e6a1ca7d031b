"""Issue 28 items 1, 2 and 5 in both apps: the frontier explorer loads a point's schedule (K and mask)
into the editor, the live point follows edits, the race fills five lanes, the exports; bad input in the
new controls (a point from another model, an absurd budget, a report before anything is generated) is
one st.error / gr.Error line and the session stays as it was. Streamlit through AppTest, Gradio through
its handlers; tiny random-init U-Net with a synthetic frontier ($BLOCKMASK_FRONTIER_DIR)."""

from __future__ import annotations

import sys
import warnings
import zipfile
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from frontier_fixture import write_tiny_frontier

APP = Path(__file__).resolve().parents[1] / "app"
TINY = "config:" + str(Path(__file__).resolve().parent / "configs" / "tiny-unet.json")
PLAN3 = "tiny-unet-006ref-b50p00-plan.json"  # plain DDIM at 3 steps
PLAN_RULE = "tiny-unet-006ref-b60p00-plan.json"  # DeepCache b0 N=3 at 6 steps
FOREIGN = "mnist-ddpm-050ref-b35p00-plan.json"
sys.path.insert(0, str(APP))
import gradio_explorer as gx  # noqa: E402
import gradio_handlers as h  # noqa: E402

NOOP = lambda *a, **k: None  # noqa: E731 — a gr.Progress stand-in


@pytest.fixture(scope="module")
def fdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("frontier")
    write_tiny_frontier(d)
    return d


@pytest.fixture(autouse=True)
def _env(monkeypatch, fdir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BLOCKMASK_APP_MODEL", TINY)
    monkeypatch.setenv("BLOCKMASK_FRONTIER_DIR", str(fdir))
    monkeypatch.setenv("BLOCKMASK_FRONTIER_CACHE", str(fdir / "computed"))  # never the user's cache
    monkeypatch.delenv("BLOCKMASK_APP_ALLOW", raising=False)
    warnings.simplefilter("ignore")


# --- Streamlit -------------------------------------------------------------------------------
def _st() -> AppTest:
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=300)
    at.session_state["steps"] = 6
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _btn(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)


def _live(at: AppTest) -> str:
    return next(c.value for c in at.caption if c.value.startswith("**Current mask:**"))


def test_streamlit_point_loads_k_and_mask_and_live_point_moves():
    at = _st()
    assert any("Budget 50 %" in m.value and "held-out test seeds" in m.value for m in at.markdown)
    live0 = _live(at)
    assert "MACs 100.0 %" in live0 or "not generated yet" in live0
    sb = next(s for s in at.selectbox if s.key == "fr_point")
    sb.set_value(PLAN3)
    _ok(_btn(at, "fr_load").click().run())
    ed = at.session_state["editor"]
    assert ed.shape[0] == 3 and at.session_state["steps"] == 3 and ed.mask.all() and "planner 50 %" in ed.source
    assert any("Loaded frontier point" in s.value for s in at.success)
    at.session_state["frontier_pick"] = PLAN_RULE  # what a click on the plot does
    _ok(at.run())
    ed = at.session_state["editor"]
    assert ed.shape[0] == 6 and at.session_state["steps"] == 6 and not ed.mask.all()
    assert ed.undo_stack  # loading is undoable
    before = _live(at)
    at.session_state["mask_click"] = [(2, 0)]  # a cell toggle
    _ok(at.run())
    assert _live(at) != before and "MACs" in _live(at)


def test_streamlit_bad_point_budget_and_report_are_one_error():
    at = _st()
    ed0 = at.session_state["editor"]
    mask0, steps0 = ed0.mask.copy(), ed0.steps
    at.session_state["frontier_pick"] = FOREIGN
    _ok(at.run())
    assert [e.value for e in at.error] == [f"Frontier point: no point {FOREIGN!r} on the tiny-unet frontier (K_ref=6). "
                                           "The current mask is kept."]
    assert (at.session_state["editor"].mask == mask0).all() and at.session_state["steps"] == steps0
    next(s for s in at.slider if s.key == "fr_budget").set_value(0.05)
    _ok(at.run())
    assert len(at.error) == 1 and "below the tiny-unet frontier's cheapest" in at.error[0].value
    assert (at.session_state["editor"].mask == mask0).all()
    _ok(_btn(at, "exp_report_none").click().run())
    assert len(at.error) == 2 and "Nothing generated yet" in at.error[1].value  # with the budget's error
    assert (at.session_state["editor"].mask == mask0).all()


def test_streamlit_race_five_lanes_and_report_button():
    at = _st()
    next(s for s in at.slider if s.key == "fr_budget").set_value(0.6)
    _ok(_btn(at, "race_go").click().run())
    rc = at.session_state["race"]
    assert [ln.role for ln in rc.lanes] == ["plain", "fewer steps", "best rule", "planner", "current mask"]
    assert all(ln.image is not None for ln in rc.lanes)
    metrics = [m for m in at.metric if m.label in ("MACs", "time", "PSNR vs plain")]
    assert len(metrics) == 15 and all(m.value for m in metrics)
    assert not any(b.key == "exp_report_none" for b in at.button)  # the report can be downloaded now
    assert "race" in _live(at)  # the live point has the race's PSNR


def test_streamlit_no_frontier_one_info_line(monkeypatch, tmp_path):
    monkeypatch.setenv("BLOCKMASK_FRONTIER_DIR", str(tmp_path))
    at = _st()
    assert any("No frontier for this model yet" in i.value for i in at.info)
    assert not any(s.key == "fr_point" for s in at.selectbox)
    mask0 = at.session_state["editor"].mask.copy()
    at.session_state["frontier_pick"] = PLAN3
    _ok(at.run())
    assert [e.value for e in at.error] == ["Frontier point: there is no frontier for this model, so no point to "
                                           "load. The current mask is kept."]
    assert (at.session_state["editor"].mask == mask0).all()


# --- Gradio ----------------------------------------------------------------------------------
@pytest.fixture
def s():
    return h.new_session(TINY, 6)


def test_gradio_point_loads_k_and_mask(s):
    md, plot, dd, bmd = gx.frontier_view(s, 0.5)
    assert "held-out test seeds" in md and "not generated yet" in md and dd["value"] == PLAN3
    out = gx.load_point(s, PLAN3, 0.5)
    ns = out[0]
    assert ns.editor.shape[0] == 3 and ns.editor.mask.all() and out[10] == 3 and out[11] == "ddim"
    assert "planner 50 %" in out[2]  # the readout names the loaded point
    out = gx.load_point(ns, "DeepCache b1 N=3", 0.5)
    ns2 = out[0]
    assert ns2.editor.steps == 6 and not ns2.editor.mask.all() and ns2.editor.undo_stack


def test_gradio_plot_click_loads_the_point(s):
    """A click on the plot (the page's plotly_click sends the point's customdata) loads it like Load point."""
    import json

    out = gx.click_point(s, json.dumps({"point": PLAN_RULE, "at": 1}), 0.5)
    assert out[0].editor.steps == 6 and not out[0].editor.mask.all() and "planner 60 %" in out[2]
    mask0 = s.editor.mask.copy()
    for bad, match in [("{nope", "cannot read"), (json.dumps({"x": 1}), "cannot read"),
                       (json.dumps({"point": FOREIGN}), "no point")]:
        with pytest.raises(gr.Error, match=match):
            gx.click_point(s, bad, 0.5)
    assert (s.editor.mask == mask0).all()


def test_gradio_live_point_moves_after_toggle(s):
    import gradio_edits as ge

    x0 = gx.live(s, gx._frontier(s)).macs_ratio
    ge.toggle_cell(s, 2, 0)
    x1 = gx.live(s, gx._frontier(s)).macs_ratio
    assert x1 != x0
    fig = gx.frontier_plot(s, 0.5)[1]["value"]
    assert next(t for t in fig.data if t.name == "current mask").x[0] == pytest.approx(x1)


def test_gradio_bad_inputs_one_error_session_unchanged(s):
    mask0, steps0 = s.editor.mask.copy(), s.editor.steps
    for call, match in [(lambda: gx.load_point(s, FOREIGN, 0.5), "no point"),
                        (lambda: gx.load_point(s, PLAN3, 7), "MAC budget must be a number in 0..1"),
                        (lambda: gx.budget_point(s, 0.05), "below the tiny-unet frontier's cheapest"),
                        (lambda: gx.budget_point(s, float("nan")), "MAC budget"),
                        (lambda: gx.run_race(s, 40, 0, 1, progress=NOOP), "MAC budget"),
                        (lambda: gx.export_report(s, 0.5), "Nothing generated yet")]:
        with pytest.raises(gr.Error, match=match) as e:
            call()
        assert "\n" not in str(e.value)
        assert (s.editor.mask == mask0).all() and s.editor.steps == steps0 and s.race is None


def test_gradio_race_and_exports(s):
    out = gx.run_race(s, 0.6, 0, 2, 0, progress=NOOP)
    assert out[0].race is not None and len(out[1]) == 5
    lanes = out[2:17]
    assert all(img is not None for img in lanes[0::3]) and all("MACs" in md and "PSNR" in md for md in lanes[2::3])
    files = gx.export_figures(s, 0.6)
    assert [Path(f).suffix for f in files] == [".png", ".svg", ".zip"]
    assert Path(files[0]).read_bytes()[:4] == b"\x89PNG" and "grid.svg" in zipfile.ZipFile(files[2]).namelist()
    rep = Path(gx.export_report(s, 0.6)).read_text()
    assert "Race at 60 % budget" in rep and "current mask" in rep and "data:image/png;base64" in rep


def test_gradio_no_frontier(monkeypatch, tmp_path, s):
    monkeypatch.setenv("BLOCKMASK_FRONTIER_DIR", str(tmp_path))
    md, plot, dd, bmd = gx.frontier_view(s, 0.5)
    assert md.startswith("No frontier for this model yet") and plot["visible"] is False
    with pytest.raises(gr.Error, match="no frontier"):
        gx.load_point(s, PLAN3, 0.5)
    rc = gx.run_race(s, 0.5, 0, 1, progress=NOOP)[0].race  # the race still runs its three lanes
    assert [ln.image is not None for ln in rc.lanes] == [True, True, False, False, True]
    assert np.isfinite(rc.lanes[1].psnr)
