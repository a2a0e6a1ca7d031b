"""The reuse mode (hold | forecast, blockmask.core.forecast) in the presenter and both apps: forecast changes the
masked images, a loaded mask file or frontier point sets the control, the exported file carries it, a
frontier point with reuse forecast races under forecast, and an unknown mode is one BlockmaskError /
st.error / gr.Error line. Tiny random-init U-Net, K=6, a synthetic frontier ($BLOCKMASK_FRONTIER_DIR)."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from blockmask.core.errors import BlockmaskError, OptionError
from blockmask.viz import MaskEditor, compare, frontier, presenter, race
from blockmask.viz.context import Draw, load_context
from frontier_fixture import tiny_frontier

APP = Path(__file__).resolve().parents[1] / "app"
TINY = "config:" + str(Path(__file__).resolve().parent / "configs" / "tiny-unet.json")
K = 6
PLAN_RULE = "tiny-unet-006ref-b60p00-plan.json"  # DeepCache b0 N=3 at 6 steps: recorded here as forecast
sys.path.insert(0, str(APP))
import gradio_edits as ge  # noqa: E402
import gradio_explorer as gx  # noqa: E402
import gradio_handlers as h  # noqa: E402

NOOP = lambda *a, **k: None  # noqa: E731 — a gr.Progress stand-in


@pytest.fixture(scope="module")
def ctx():
    return load_context(TINY, device="cpu")


@pytest.fixture(scope="module")
def fdir(tmp_path_factory, ctx):
    d = tmp_path_factory.mktemp("frontier")
    fr = tiny_frontier(ctx.wb)
    fr.points["reuse"] = np.where(fr.points.name == PLAN_RULE, "forecast", "hold")
    fr.save(d / "tiny-unet-006ref.json")
    return d


@pytest.fixture(autouse=True)
def _env(monkeypatch, fdir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BLOCKMASK_APP_MODEL", TINY)
    monkeypatch.setenv("BLOCKMASK_FRONTIER_DIR", str(fdir))
    monkeypatch.setenv("BLOCKMASK_FRONTIER_CACHE", str(fdir / "computed"))
    monkeypatch.delenv("BLOCKMASK_APP_ALLOW", raising=False)
    warnings.simplefilter("ignore")


def two_then_reuse(ctx) -> np.ndarray:
    """Every other unit computed at steps 0 and 1, reused after: a forecast has two values to extrapolate."""
    m = np.ones((K, ctx.n_units), bool)
    m[2:, ::2] = False
    return m


def mask_bytes(ctx, reuse) -> bytes:
    mf = ctx.wb.mask_file(two_then_reuse(ctx), {"reuse": "hold"})
    d = mf.to_json()
    d["meta"]["reuse"] = reuse
    return json.dumps(d).encode()


def spy_reuse(monkeypatch) -> list:
    """The reuse mode of every masked sampling run (race lanes, generation)."""
    import blockmask.sampling.sample as sm
    from blockmask.viz import compare, race

    seen, real = [], sm.sample

    def sample(*a, **kw):
        if kw.get("mask") is not None:
            seen.append(kw["options"].reuse if "options" in kw else "hold")
        return real(*a, **kw)

    for where in (compare, race):  # the modules the apps' runs call it from
        monkeypatch.setattr(where, "sample", sample)
    return seen


# --- presenter -------------------------------------------------------------------------------
def test_forecast_changes_masked_images_not_macs(ctx):
    m = two_then_reuse(ctx)
    hold = compare.compare(ctx, m, Draw(seed=1, num_images=1), repeats=1)
    fc = compare.compare(ctx, m, Draw(seed=1, num_images=1), repeats=1, reuse="forecast")
    np.testing.assert_array_equal(hold.original, fc.original)  # the plain run reuses nothing
    assert not np.array_equal(hold.masked, fc.masked) and hold.psnr != fc.psnr
    assert fc.macs_masked == hold.macs_masked  # a forecast costs no MACs
    assert (hold.reuse, fc.reuse, fc.key[-1]) == ("hold", "forecast", "forecast") and hold.key != fc.key
    assert "forecast (first-order)" in fc.speed_text() and "hold last value" in hold.macs_note
    with pytest.raises(BlockmaskError, match="reused units must be 'hold'"):
        compare.compare(ctx, m, repeats=1, reuse="sideways")


def test_editor_mode_load_save_rectify_and_bad_mode(ctx):
    ed = MaskEditor.create(ctx, K)
    assert ed.reuse == "hold" and ed.summary(ctx)["reuse"] == "hold"
    assert ed.load_upload(ctx, mask_bytes(ctx, "forecast"), "fc.json")[0].level == "success"
    assert ed.reuse == "forecast" and json.loads(ed.download_bytes(ctx))["meta"]["reuse"] == "forecast"
    ed.rectify(ctx)
    np.testing.assert_array_equal(ed.mask, ctx.wb.rectify(two_then_reuse(ctx), reuse="forecast").mask)
    ed2, _ = ed.resampled(ctx, K + 2)
    assert ed2.reuse == "forecast"  # changing K keeps the mode
    assert ed.set_reuse("hold")[0].level == "info" and ed.set_reuse("hold") == []
    assert json.loads(ed.download_bytes(ctx))["meta"]["reuse"] == "hold"
    with pytest.raises(presenter.ReuseModeError) as e:
        ed.set_reuse("sideways")
    assert isinstance(e.value, OptionError) and "\n" not in str(e.value) and ed.reuse == "hold"
    mask0 = ed.mask.copy()
    msgs = ed.load_upload(ctx, mask_bytes(ctx, "sideways"), "bad.json")
    assert [m.level for m in msgs] == ["error"] and "meta.reuse" in msgs[0].text
    assert ed.reuse == "hold" and (ed.mask == mask0).all()
    assert ed.load(two_then_reuse(ctx), source="x", meta={"reuse": 3})[0].level == "error"


def test_frontier_point_loads_and_races_under_its_mode(ctx, monkeypatch):
    fr = frontier.find(ctx)
    got = frontier.load_point(fr, ctx, PLAN_RULE)
    assert got.meta["reuse"] == "forecast" and frontier.load_point(fr, ctx, "DeepCache b0 N=3").meta["reuse"] == "hold"
    ed = MaskEditor.create(ctx, K)
    ed.load(got.mask, source=got.source, meta=got.meta)
    assert ed.reuse == "forecast" and "forecast" in ed.source
    seen = spy_reuse(monkeypatch)
    rc = race.run(ctx, fr, 0.6, ed.mask, Draw(num_images=1), reuse="hold")
    lanes = {ln.role: ln for ln in rc.lanes}
    assert lanes["planner"].reuse == "forecast" and "forecast" in lanes["planner"].name
    assert lanes["best rule"].reuse == "hold" and lanes["current mask"].reuse == "hold"
    assert seen == ["hold", "forecast", "hold"]  # best rule, planner, current mask
    with pytest.raises(BlockmaskError, match="reused units must be"):
        race.run(ctx, fr, 0.6, ed.mask, Draw(num_images=1), reuse=None)


# --- Streamlit -------------------------------------------------------------------------------
def _st() -> AppTest:
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=300)
    at.session_state["steps"] = K
    at.run()
    return _ok(at)


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _reuse_radio(at: AppTest):
    return next(r for r in at.radio if r.key == "reuse_mode")


def test_streamlit_control_upload_export_generate(ctx, monkeypatch):
    at = _st()
    r = _reuse_radio(at)
    assert r.label == "Reused units" and r.value == "hold" and "last two computed values" in r.help
    _ok(at.file_uploader[0].set_value(("fc.json", mask_bytes(ctx, "forecast"), "application/json")).run())
    assert _reuse_radio(at).value == "forecast" and at.session_state["editor"].reuse == "forecast"
    assert any("reused units: forecast (first-order)" in c.value for c in at.caption)  # the mask readout
    assert json.loads(at.session_state["editor"].download_bytes(ctx))["meta"]["reuse"] == "forecast"
    seen = spy_reuse(monkeypatch)
    next(n for n in at.number_input if n.key == "repeats").set_value(1)
    _ok(next(b for b in at.button if b.key == "generate").click().run())
    assert seen and set(seen) == {"forecast"} and at.session_state["result"][1].reuse == "forecast"
    _ok(_reuse_radio(at).set_value("hold").run())
    assert at.session_state["editor"].reuse == "hold"
    assert any("Stale" in w.value and "forecast" in w.value for w in at.warning)  # the result ran under forecast


def test_streamlit_bad_mode_is_one_error(ctx):
    at = _st()
    _ok(_reuse_radio(at).set_value("forecast").run())
    mask0 = at.session_state["editor"].mask.copy()
    _ok(at.file_uploader[0].set_value(("bad.json", mask_bytes(ctx, "sideways"), "application/json")).run())
    assert [e.value for e in at.error if "meta.reuse" in e.value] and len(at.error) == 1
    assert "\n" not in at.error[0].value and "kept" in at.error[0].value
    assert _reuse_radio(at).value == "forecast" and (at.session_state["editor"].mask == mask0).all()


def test_streamlit_frontier_point_sets_control_and_races_forecast(monkeypatch):
    at = _st()
    at.session_state["frontier_pick"] = PLAN_RULE
    _ok(at.run())
    assert at.session_state["editor"].reuse == "forecast" and _reuse_radio(at).value == "forecast"
    next(s for s in at.slider if s.key == "fr_budget").set_value(0.6)
    _ok(next(b for b in at.button if b.key == "race_go").click().run())
    lanes = {ln.role: ln for ln in at.session_state["race"].lanes}
    assert lanes["planner"].reuse == "forecast" and lanes["current mask"].reuse == "forecast"
    assert lanes["best rule"].reuse == "hold"


# --- Gradio ----------------------------------------------------------------------------------
@pytest.fixture
def s():
    return h.new_session(TINY, K)


def test_gradio_control_upload_export_generate(ctx, s, tmp_path):
    assert ge.reuse_value(s)["value"] == "hold" and dict(ge.reuse_choices())["forecast (first-order)"] == "forecast"
    f = tmp_path / "fc.json"
    f.write_bytes(mask_bytes(ctx, "forecast"))
    out = h.upload_mask(s, str(f))
    assert s.editor.reuse == "forecast" and ge.reuse_value(s)["value"] == "forecast"
    assert "reused units: forecast (first-order)" in out[2]  # the readout
    assert json.loads(Path(out[-1]).read_bytes())["meta"]["reuse"] == "forecast"  # the download
    gen = h.generate(s, 0, 1, 0, 1.0, 1, progress=NOOP)
    assert "forecast (first-order)" in gen[4] and s.shown[-1] == "forecast"
    ge.set_reuse(s, "hold")
    assert s.editor.reuse == "hold" and "Stale" in h.stale_md(s)
    assert json.loads(Path(h.download_path(s)).read_bytes())["meta"]["reuse"] == "hold"
    with pytest.raises(gr.Error, match="Reused units must be 'hold'") as e:
        ge.set_reuse(s, "sideways")
    assert "\n" not in str(e.value) and s.editor.reuse == "hold"
    f.write_bytes(mask_bytes(ctx, "sideways"))
    with pytest.raises(gr.Error, match="meta.reuse"):
        h.upload_mask(s, str(f))
    assert s.editor.reuse == "hold"


def test_gradio_frontier_point_sets_control_and_races_forecast(s, monkeypatch):
    out = gx.load_point(s, PLAN_RULE, 0.6)
    ns = out[0]
    assert ns.editor.reuse == "forecast" and ge.reuse_value(ns)["value"] == "forecast" and "forecast" in out[2]
    seen = spy_reuse(monkeypatch)
    gx.run_race(ns, 0.6, 0, 1, 0, progress=NOOP)
    lanes = {ln.role: ln for ln in ns.race.lanes}
    assert lanes["planner"].reuse == "forecast" and lanes["current mask"].reuse == "forecast"
    assert seen == ["hold", "forecast", "forecast"]


def test_gradio_demo_has_the_control():
    import gradio_demo

    demo = gradio_demo.build(TINY)
    fns = {f.api_name: f for f in demo.fns.values()}
    assert "set_reuse" in fns
    radio = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "reuse-mode")
    assert radio.label == "Reused units" and radio.value == "hold" and "no MACs" in radio.info
