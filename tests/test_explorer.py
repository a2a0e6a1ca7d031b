"""Issue 28 items 1, 2 and 5 in the presenter (blockmask.viz.frontier, race, export): finding a model's
frontier file, loading a point, the live point, the figure, the race's five lanes and x̂₀ filmstrip, and
the PNG/SVG/HTML exports. A synthetic frontier of the tiny U-Net (tests/frontier_fixture.py)."""

from __future__ import annotations

import io
import math
import zipfile

import numpy as np
import pytest

from blockmask.core.errors import BlockmaskError
from blockmask.viz import export, frontier, race
from blockmask.viz.context import load_context
from blockmask.viz.context import Draw
from conftest import tiny_spec
from frontier_fixture import tiny_frontier, write_tiny_frontier


@pytest.fixture(scope="module")
def ctx():
    return load_context(tiny_spec("tiny-unet"), "ddim", device="cpu")


@pytest.fixture
def fr(ctx, tmp_path, monkeypatch):
    write_tiny_frontier(tmp_path, ctx.wb)
    monkeypatch.setenv(frontier.ENV_DIR, str(tmp_path))
    return frontier.find(ctx)


def test_find_names_and_missing(ctx, tmp_path, monkeypatch):
    assert frontier.model_name(ctx) == "tiny-unet"
    monkeypatch.setenv(frontier.ENV_DIR, str(tmp_path))
    assert frontier.find(ctx) is None  # nothing there, nothing shipped for a config model
    assert "no frontier for this model yet" in frontier.NO_FRONTIER.lower() and "--dense" in frontier.NO_FRONTIER
    (tmp_path / "tiny-unet-006ref.json").write_text("{")
    with pytest.raises(BlockmaskError, match="malformed"):
        frontier.find(ctx)


def test_same_name_other_model_gets_no_frontier(ctx, tmp_path, monkeypatch):
    """A frontier file of the same name but other units is passed over (not an error), and a folder
    model that shares a bundled model's name is not given the bundled model's shipped frontier (the
    CI failure of stop 36: a test folder named mnist-pixart with 8 units)."""
    from types import SimpleNamespace

    monkeypatch.setenv(frontier.ENV_DIR, str(tmp_path))
    write_tiny_frontier(tmp_path, ctx.wb)
    assert frontier.find(ctx) is not None
    assert frontier.find(SimpleNamespace(spec=ctx.spec, units=list(ctx.units)[:-1])) is None
    monkeypatch.setenv(frontier.ENV_DIR, str(tmp_path / "empty"))
    monkeypatch.setattr(frontier, "cache_dir", lambda: tmp_path / "empty")
    folder = SimpleNamespace(spec=str(tmp_path / "mnist-ddpm"), units=list(ctx.units))
    assert frontier.model_name(folder) == "mnist-ddpm" and frontier.find(folder) is None
    bundled = SimpleNamespace(spec="mnist-ddpm", units=list(ctx.units))  # right name, other units
    assert frontier.find(bundled) is None


def test_foreign_frontier_is_refused(ctx, tmp_path, monkeypatch):
    other = tiny_frontier(ctx.wb, model="mnist-ddpm")
    with pytest.raises(BlockmaskError, match="not for 'tiny-unet'"):
        frontier.load_point(other, ctx, other.plans.name.iloc[0])
    with pytest.raises(BlockmaskError, match="no frontier"):
        frontier.load_point(None, ctx, "x")


def test_load_point_gives_k_and_mask(ctx, fr):
    got = frontier.load_point(fr, ctx, "tiny-unet-006ref-b50p00-plan.json")  # plain 3 steps
    assert got.steps == 3 and got.mask.shape == (3, ctx.n_units) and got.mask.all()
    got = frontier.load_point(fr, ctx, "DeepCache b0 N=3")
    assert got.steps == 6 and (got.mask == fr.masks["DeepCache b0 N=3"]).all() and "DeepCache" in got.source
    assert got.meta["frontier"]["model"] == "tiny-unet"
    with pytest.raises(BlockmaskError, match="no point 'mnist-ddpm-050ref-b35.json'"):
        frontier.load_point(fr, ctx, "mnist-ddpm-050ref-b35.json")
    names = [n for _, n in frontier.choices(fr, ctx)]
    assert names[:3] == list(fr.plans.name) and "DDIM 3 steps" in names and "DeepCache b1 N=5" in names


def test_budget_and_live_point(ctx, fr):
    name, md = frontier.budget_md(fr, 0.62)
    assert name == "tiny-unet-006ref-b60p00-plan.json" and "held-out test seeds" in md and "test PSNR" in md
    for bad in (0.1, 0, 3, float("nan")):
        with pytest.raises(BlockmaskError):
            frontier.budget_md(fr, bad)
    m = np.ones((6, ctx.n_units), bool)
    a = frontier.live_point(ctx, fr, m)
    assert a.macs_ratio == pytest.approx(1.0) and a.psnr is None and "not generated" in a.note
    m[1:, :5] = False
    b = frontier.live_point(ctx, fr, m, 30.0, "race")
    assert b.macs_ratio < a.macs_ratio and b.psnr == 30.0
    k3 = frontier.live_point(ctx, fr, np.ones((3, ctx.n_units), bool))
    assert k3.macs_ratio == pytest.approx(0.5)  # against the plain K_ref run, not its own K


def test_figure_traces_and_customdata(ctx, fr):
    m = np.ones((6, ctx.n_units), bool)
    fig = frontier.figure(fr, ctx, frontier.live_point(ctx, fr, m), budget=0.6, selected="DDIM 3 steps")
    names = [t.name for t in fig.data]
    assert names[:2] == ["planner's frontier", "plain, fewer steps"]
    assert {"DeepCache b0", "DeepCache b1", "current mask", "selected"} <= set(names)
    assert list(fig.data[0].customdata) == list(fr.plans.sort_values("macs_ratio").name)
    live = next(t for t in fig.data if t.name == "current mask")
    assert "not generated yet" in live.text[0] and live.x[0] == pytest.approx(1.0)
    assert "held-out test seeds" in fig.layout.yaxis.title.text and "MACs" in fig.layout.xaxis.title.text
    tab = frontier.table(fr)
    assert len(tab) == len(fr.points) and "test PSNR (dB, held-out)" in tab.columns
    assert (tab["its budget gets instead"] == "").all()  # the fixture's plans improve with the budget


def test_figure_line_is_what_each_budget_gets(ctx, fr):
    """A plan superseded by a cheaper plan that validation rates higher (frontier_merge leaves such
    plans) is off the frontier's line, drawn faint, and the table names what its budget gets instead."""
    from blockmask.learning.frontierfile import Frontier

    pts = fr.points.copy()
    cheap, rich = fr.plans.name.iloc[0], fr.plans.name.iloc[1]
    pts.loc[pts.name == cheap, "valid_psnr"] = float(fr.plans.valid_psnr.max()) + 1.0
    g = Frontier(fr.model, fr.ref_steps, fr.units, pts, fr.masks, fr.meta)
    fig = frontier.figure(g, ctx)
    line = next(t for t in fig.data if t.name == "planner's frontier")
    faint = next(t for t in fig.data if t.name == "planned, superseded by a cheaper point")
    assert cheap in list(line.customdata) and rich not in list(line.customdata) and rich in list(faint.customdata)
    assert frontier.load_point(g, ctx, rich) is not None  # still loadable from the faint marker
    tab = frontier.table(g).set_index("point")
    rich_row = g.points[g.points.name == rich].iloc[0]
    assert tab.loc[frontier.point_label(rich_row), "its budget gets instead"].startswith("planner 50 %")


def test_race_five_lanes_same_seeds(ctx, fr):
    cur = fr.masks["DeepCache b1 N=2"]
    r = race.run(ctx, fr, 0.6, cur, Draw(seed=1, num_images=2))
    assert [ln.role for ln in r.lanes] == list(race.ENTRIES)
    plain, fewer, rule, plan, mine = r.lanes
    assert plain.steps == 6 and plain.mask is None and math.isinf(plain.psnr)
    assert fewer.steps == 3 and fewer.macs_ratio == pytest.approx(0.5)
    assert rule.name.startswith("DeepCache") and rule.macs_ratio <= 0.6 + 1e-9
    assert plan.name == "planner 60 %: DeepCache b0 N=3" and (plan.mask == fr.masks["DeepCache b0 N=3"]).all()
    assert "over the 60 % budget" in mine.note
    for ln in r.lanes:
        assert ln.image is not None and ln.seconds > 0 and ln.film is not None
        assert ln.film_steps == tuple(k + 1 for k in race.film_rows(ln.steps))
    assert fewer.film_steps == (1, 2, 3) and plain.film_steps[-1] == 6
    df = r.frame()
    assert list(df.run) == list(race.ENTRIES) and df["PSNR vs plain (dB)"].iloc[0] == "reference"
    with pytest.raises(BlockmaskError, match=r"\(0, 1\]"):
        race.run(ctx, fr, 7, cur)
    with pytest.raises(BlockmaskError, match="below"):
        race.run(ctx, fr, 0.2, cur)


def test_race_without_frontier_and_filmstrip_is_x0(ctx):
    cur = np.ones((6, ctx.n_units), bool)
    r = race.run(ctx, None, 0.5, cur, Draw(num_images=1))
    assert [ln.image is None for ln in r.lanes] == [False, False, True, True, False]
    assert "no frontier" in r.lanes[2].note
    # the last frame is x̂₀ of the last step: for DDIM the clean image itself
    last = r.lanes[0].film[:, -r.lanes[0].image.shape[1]:]
    assert np.abs(last.astype(int) - r.lanes[0].image.astype(int)).max() <= 1


def test_exports(ctx, fr):
    m = fr.masks["DeepCache b0 N=3"]
    png = export.grid_png(ctx, m)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    svg = export.grid_svg(ctx, m, title="t").decode()
    assert svg.startswith("<svg") and svg.count("<rect") == m.size + 1 and "reused" in svg
    figs = {"frontier": frontier.figure(fr, ctx)}
    names = zipfile.ZipFile(io.BytesIO(export.figures_zip(ctx, m, figs))).namelist()
    assert {"grid.png", "grid.svg"} <= set(names)
    assert {"frontier.png", "frontier.svg"} <= set(names) or "README.txt" in names  # kaleido or the reason
    ed_summary = {"hash": "abc", "ratio": 0.4, "computed": 3, "cells": 9, "mac_speedup": 2.5}
    content = export.ReportContent(figs, images=[("img", np.zeros((8, 8, 3), np.uint8))], notes=["seed 0"])
    html = export.report_html(ctx, content, mask=m, source="frontier point", summary=ed_summary).decode()
    assert html.startswith("<!doctype html>") and "tiny-unet" in html and "frontier point" in html
    assert html.count("data:image/png;base64") >= 2 and "seed 0" in html


@pytest.mark.slow
def test_real_frontier_file_from_the_benchmark(ctx, tmp_path, monkeypatch):
    """What benchmarks/frontier.py --dense writes (not the synthetic fixture) drives the explorer."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    subprocess.run([sys.executable, "benchmarks/frontier.py", tiny_spec("tiny-unet"), "--dry-run", "--dense", "-o",
                    str(tmp_path)], cwd=ROOT, check=True, capture_output=True, timeout=600,
                   env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})
    monkeypatch.setenv(frontier.ENV_DIR, str(tmp_path))
    fr = frontier.find(ctx)
    assert fr is not None and fr.model == "tiny-unet" and fr.ref_steps == 6
    names = [n for _, n in frontier.choices(fr, ctx)]
    for name in names:
        got = frontier.load_point(fr, ctx, name)
        assert got.mask.shape == (got.steps, ctx.n_units)
    b = float(fr.plans.budget.max())
    name, md = frontier.budget_md(fr, b)
    assert name == fr.plans.name.iloc[-1] and "test PSNR" in md
    frontier.figure(fr, ctx, frontier.live_point(ctx, fr, np.ones((6, ctx.n_units), bool)), budget=b)
    r = race.run(ctx, fr, b, np.ones((6, ctx.n_units), bool), Draw(num_images=1))
    assert all(ln.image is not None for ln in r.lanes[:2]) and r.lanes[3].image is not None
    assert len(frontier.table(fr)) == len(fr.points)
