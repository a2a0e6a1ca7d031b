"""The fast paths behind issue 28's latency targets (benchmarks/app_latency.py measures them in
Chromium; docs/PERFORMANCE.md has the numbers):

- Streamlit: the editor's buttons edit in on_click callbacks (so the fragment run that follows draws the
  result: Rectify → grid in one run), their message stays below them through the page rerun that follows,
  and no full garbage collection runs after each script run (``runner.postScriptGC``: ~0.3 s with a
  model loaded);
- Gradio: an editor button answers with the grid and readout only (plots and download follow in a
  second event); a grid edit answers with the frontier plot's live point too, and the readout's change
  event then sends nothing twice.

Tiny random-init U-Net with a synthetic frontier ($BLOCKMASK_FRONTIER_DIR)."""

from __future__ import annotations

import sys
import tomllib
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from frontier_fixture import write_tiny_frontier

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"
TINY = "config:" + str(Path(__file__).resolve().parent / "configs" / "tiny-unet.json")
sys.path.insert(0, str(APP))
import gradio_edits as ge  # noqa: E402
import gradio_explorer as gx  # noqa: E402
import gradio_handlers as h  # noqa: E402


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
    warnings.simplefilter("ignore")


def _dead_work(ed) -> None:
    """Make one cell of dead work: reuse the units after unit 0 at step 2, compute unit 0 there."""
    m = ed.mask.copy()
    m[2, :] = False
    m[2, 0] = True
    ed.load(m, source="test")


# --- Streamlit -------------------------------------------------------------------------------
def test_streamlit_rectify_is_a_callback_and_its_message_survives_the_page_rerun(monkeypatch):
    import streamlit as st

    at = AppTest.from_file(str(APP / "main.py"), default_timeout=300)
    at.session_state["steps"] = 6
    at.run()
    ed = at.session_state["editor"]
    _dead_work(ed)
    reruns, real = [], st.rerun
    monkeypatch.setattr(st, "rerun", lambda *a, **k: reruns.append(k))  # the script runs in this process
    next(b for b in at.button if b.key == "rectify").click().run()
    assert not at.exception, [e.value for e in at.exception]
    # applied before the script drew the grid (on_click): no second run was needed to show it
    assert reruns == []
    monkeypatch.setattr(st, "rerun", real)
    ed = at.session_state["editor"]
    assert ed.removed is not None and ed.removed.any()
    said = lambda: [m.value for m in list(at.success) + list(at.info) if "Rectification" in m.value]  # noqa: E731
    assert said()
    at.run()  # the page rerun that follows an edit in the browser: the result is still shown
    assert said()
    at.session_state["mask_click"] = [(3, 1)]  # the next edit retires it
    at.run()
    assert not said()


def test_streamlit_runs_without_a_full_gc_after_each_run():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["runner"]["postScriptGC"] is False
    from blockmask.cli import tools as cli_tools

    src = Path(cli_tools.__file__).read_text()
    assert '"--runner.postScriptGC", "false"' in src  # `blockmask app streamlit` from any directory


# --- Gradio ----------------------------------------------------------------------------------
def test_gradio_buttons_answer_with_grid_and_readout_only():
    s = h.new_session(TINY, 6)
    _dead_work(s.editor)
    out = ge.rectify(s)
    assert len(out) == 4 and out[0] is s and "removed" in out[2]  # state, grid, readout, stale note
    assert len(h.after_edit(s)) == 6  # the plots, the Δ note, the presets table, the download: after


def test_gradio_grid_edit_brings_the_live_point_and_the_change_event_sends_nothing_twice():
    import json

    s = h.new_session(TINY, 6)
    gx.frontier_view(s, 0.5)  # the page's first view: point list and budget note sent
    edit = gx.with_frontier(ge.grid_edit)
    grid = json.dumps({"edit": {"seq": 1, "k0": 2, "k1": 2, "i0": 1, "i1": 1, "mode": "toggle"}})
    out = edit(s, grid, 0.5, None)
    assert len(out) == 8
    md, plot, dropdown, bmd = out[4:]
    live = next(t for t in plot["value"].data if t.name == "current mask")
    assert np.isclose(live.x[0], gx.frontier.macs_ratio(s.ctx, gx._frontier(s), s.editor.mask))
    assert "Current mask" in md
    assert isinstance(dropdown, gr.skip().__class__) or dropdown == gr.skip()  # the point list is unchanged
    # the readout's change event right after: already on the page, nothing sent again
    assert all(o == gr.skip() for o in gx.frontier_plot(s, 0.5, None))
    # another budget: the point list and the budget note are sent again
    again = gx.frontier_plot(s, 0.6, None)
    assert again[2] != gr.skip() and again[3] != gr.skip()


def test_frontier_point_list_and_table_are_built_once_per_frontier(monkeypatch, fdir):
    """Both apps redraw the frontier after every edit: its point list and table come from a memo."""
    from blockmask.viz import frontier

    s = h.new_session(TINY, 6)
    fr = frontier.find(s.ctx)
    calls = []
    real = frontier._table
    monkeypatch.setattr(frontier, "_table", lambda f: calls.append(1) or real(f))
    frontier._MEMO.clear()
    a, b = frontier.table(fr), frontier.table(fr)
    assert calls == [1] and a.equals(b) and a is not b  # a copy each time: callers may change theirs
    assert frontier.choices(fr, s.ctx) == frontier.choices(fr, s.ctx)
