"""The explorer on the real shipped frontier files (assets/frontier/MODEL-050ref.json of all four bundled
models), not a synthetic one: found for their model and refused for another; every
point loads as a schedule of its own K that fits the model; in both apps a picked point (a rule plan at
K < 50, a fewer-steps plan, a peer and a shipped mask) puts exactly that K and mask in the editor and the
plot has the issue's point groups. Skipped where the bundled models are not installed."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"
sys.path.insert(0, str(APP))
import gradio_explorer as gx  # noqa: E402
import gradio_handlers as h  # noqa: E402

MODELS = ["mnist-ddpm", "mnist-dit"]  # the app picks below need a fewer-steps plan on the frontier
SHIPPED = [*MODELS, "mnist-ldm", "mnist-pixart"]  # every bundled model ships a frontier
pytestmark = pytest.mark.slow  # real bundled models loaded (seconds each)


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    from blockmask.io.models import bundled_models

    missing = [m for m in SHIPPED if m not in bundled_models()]
    if missing:
        pytest.skip(f"bundled models not installed: {missing}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("BLOCKMASK_FRONTIER_DIR", raising=False)  # the shipped files, nothing else
    warnings.simplefilter("ignore")


def _picks(fr) -> list[str]:
    """A masked plan (below K_ref where there is one), a fewer-steps plan, a rule peer."""
    p = fr.plans
    masked = p[p.family != "fewer-steps"].sort_values("steps")
    assert len(masked), "no masked plan on the frontier"
    fewer = p[p.family == "fewer-steps"].name.iloc[0]
    peer = fr.points[fr.points.kind == "peer rule"].name.iloc[0]
    return [masked.name.iloc[0], fewer, peer]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_is_found_checked_and_every_point_fits(name):
    from blockmask.core.errors import BlockmaskError
    from blockmask.viz import frontier

    ctx = h.get_context(name, "ddim")
    fr = frontier.find(ctx)
    assert fr is not None and fr.model == name and fr.ref_steps == 50
    frontier.check(fr, ctx)
    other = h.get_context(next(m for m in MODELS if m != name), "ddim")
    with pytest.raises(BlockmaskError, match="this frontier is for"):
        frontier.check(fr, other)
    for n in fr.points.name:
        got = frontier.load_point(fr, ctx, n)
        assert got.mask.shape == (got.steps, ctx.n_units) and got.mask[0].all(), n
    fig = frontier.figure(fr, ctx, frontier.live_point(ctx, fr, np.ones((50, ctx.n_units), bool)))
    names = {t.name for t in fig.data}
    assert {"planner's frontier", "plain, fewer steps", "current mask"} <= names
    unet = name in ("mnist-ddpm", "mnist-ldm")
    assert names & ({"DeepCache b0", "DeepCache b1"} if unet else {"FORA", "blocks"})


@pytest.mark.parametrize("name", MODELS)
def test_streamlit_picks_load_k_and_mask(monkeypatch, name):
    from blockmask.viz import frontier

    monkeypatch.setenv("BLOCKMASK_APP_MODEL", name)
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    fr = frontier.find(h.get_context(name, "ddim"))
    shipped = [n for _, n in frontier.choices(fr, h.get_context(name, "ddim")) if n.startswith(frontier.SHIPPED)]
    for pick in _picks(fr) + shipped[:1]:
        at.session_state["frontier_pick"] = pick  # what a click on the plot does
        at.run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        want = frontier.load_point(fr, h.get_context(name, "ddim"), pick)
        ed = at.session_state["editor"]
        assert at.session_state["steps"] == want.steps == ed.steps, pick
        np.testing.assert_array_equal(ed.mask, want.mask)


@pytest.mark.parametrize("name", MODELS)
def test_gradio_picks_load_k_and_mask(name):
    from blockmask.viz import frontier

    s = h.new_session(name)
    fr = frontier.find(s.ctx)
    for pick in _picks(fr):
        out = gx.load_point(s, pick, 0.5)
        ns = out[0]
        want = frontier.load_point(fr, ns.ctx, pick)
        assert ns.editor.steps == want.steps and out[10] == want.steps, pick  # the K box follows
        np.testing.assert_array_equal(ns.editor.mask, want.mask)
        s = ns


@pytest.mark.parametrize("path", sorted((ROOT / "assets" / "frontier").glob("*-100ref.json")), ids=lambda p: p.stem)
def test_shipped_100_step_frontiers_fit_their_model_and_answer_plan_shipped(path, tmp_path, capsys):
    """K_ref = 100 frontiers (issue 26, item 5): the file names its model's units, every plan is a
    schedule of its own K for them, and `blockmask plan MODEL --shipped --ref-steps 100` answers from it."""
    import json

    from blockmask.cli.main import main
    from blockmask.learning.frontierfile import Frontier

    name = path.stem.rsplit("-", 1)[0]
    fr = Frontier.for_model(name, 100)
    ctx = h.get_context(name, "ddim")
    assert fr is not None and fr.ref_steps == 100 and fr.units == [u.name for u in ctx.units]
    for point in fr.plans.name:
        steps, mask = fr.schedule(point)
        assert 1 <= steps <= 100 and mask.shape == (steps, ctx.n_units)
    out = tmp_path / "s.json"
    assert main(["plan", name, "--budget", "0.35", "--ref-steps", "100", "--shipped", "--json", "-o", str(out)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["source"] == "shipped frontier" and r["macs_ratio_vs_ref"] <= 0.35 * 1.02 and out.is_file()
