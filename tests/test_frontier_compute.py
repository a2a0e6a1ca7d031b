"""Issue 28, item 1: a model without a shipped frontier gets one computed in the app, with progress
(st.progress / gr.Progress), through :func:`blockmask.learning.frontiercompute.compute` — the planner's shared
sweep and benchmarks/frontier.py's peers and judging (:func:`~blockmask.learning.frontiercompute.peer_row`) at
small sizes — kept in $BLOCKMASK_FRONTIER_CACHE and then found like a shipped file. A model that has a
frontier is refused with one error line and nothing changes. Tiny random-init U-Net, reference K=6."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"
TINY = "config:" + str(ROOT / "tests" / "configs" / "tiny-unet.json")
sys.path.insert(0, str(APP))
import gradio_explorer as gx  # noqa: E402
import gradio_handlers as h  # noqa: E402


@pytest.fixture(autouse=True)
def _env(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BLOCKMASK_APP_MODEL", TINY)
    monkeypatch.setenv("BLOCKMASK_FRONTIER_DIR", str(tmp_path / "none"))  # no frontier for tiny-unet
    monkeypatch.setenv("BLOCKMASK_FRONTIER_CACHE", str(tmp_path / "computed"))
    warnings.simplefilter("ignore")


def test_compute_plans_judges_peers_on_held_out_seeds_with_progress(workbenches, tmp_path):
    from blockmask.learning.frontiercompute import TEST_SEED, compute
    from blockmask.learning.frontierfile import Frontier

    seen = []
    fr = compute(workbenches("tiny-unet"), "tiny-unet", ref_steps=6, samples=2, max_budgets=4,
                 progress=lambda f, t: seen.append((f, t)))
    assert len(fr.plans) == 4 and set(fr.peers.kind) == {"peer fewer-steps", "peer rule"}
    assert np.isfinite(fr.points.test_psnr.astype(float)).all()
    assert fr.meta["quick"] and fr.meta["test_seed"] == TEST_SEED
    assert not set(range(TEST_SEED, TEST_SEED + 2)) & set(fr.meta["calibration_seeds"] + fr.meta["validation_seeds"])
    fracs = [f for f, _ in seen]
    assert fracs == sorted(fracs) and fracs[-1] > 0.9 and any("budget" in t for _, t in seen)
    for name in fr.points.name:  # every point loads as a schedule of its own K
        k, m = fr.schedule(name)
        assert m.shape == (k, len(fr.units))
    fr.at_budget(1.0)
    assert Frontier.load(fr.save(tmp_path / "tiny-unet-006ref-frontier.json")).counts() == fr.counts()


def test_streamlit_computes_a_frontier_with_progress_then_plots_it():
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=300)
    at.session_state["steps"] = 6
    at.run()
    assert any("No frontier for this model yet" in i.value for i in at.info)
    assert not any(s.key == "fr_point" for s in at.selectbox)
    mask0 = at.session_state["editor"].mask.copy()
    next(b for b in at.button if b.key == "fr_compute").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(s.key == "fr_point" for s in at.selectbox)  # the explorer now has points to load
    assert not any(b.key == "fr_compute" for b in at.button)
    assert (at.session_state["editor"].mask == mask0).all()  # computing loads nothing


def test_gradio_computes_a_frontier_and_refuses_a_second(monkeypatch):
    s = h.new_session(TINY, 6)
    seen = []
    md, plot, dd, bmd = gx.compute_frontier(s, 0.5, progress=lambda f, desc="": seen.append(desc))
    assert plot["visible"] is True and "quick frontier" in plot["value"].layout.title.text
    assert dd["choices"] and seen and any("frontier:" in d for d in seen)
    mask0 = s.editor.mask.copy()
    with pytest.raises(gr.Error, match="already has a frontier"):
        gx.compute_frontier(s, 0.5, progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="MAC budget"):
        gx.compute_frontier(s, 7, progress=lambda *a, **k: None)
    assert (s.editor.mask == mask0).all()
