"""The frontier explorer of both apps (issue 28, item 1): a model's planned frontier and its peers
(:class:`blockmask.learning.frontierfile.Frontier`) with the shipped masks and the current mask as a live point.

Cost is MACs only (a fraction of the plain ``ref_steps``-step run): the frontier file records no wall
times, and timing ~50 points per model is not cheap; the race (:mod:`.race`) measures seconds for the
five schedules it runs. Fidelity is PSNR against the plain run on the file's held-out test seeds.

Where the file comes from: ``$BLOCKMASK_FRONTIER_DIR`` (folders, ``os.pathsep``-separated; for tests and
operators) first, then the shipped ``assets/frontier/MODEL-050ref.json`` (:meth:`Frontier.for_model`), then
the quick frontiers the apps computed (:func:`compute`, kept in :func:`cache_dir`).
Every function here is UI-free; mistakes raise :class:`BlockmaskError` with one line.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from blockmask.core.errors import BlockmaskError
from blockmask.io.resources import assets_dir
from blockmask.learning.frontiercompute import cache_path, compute as run
from blockmask.learning.frontierfile import Frontier
from blockmask.viz import presets
from blockmask.viz.context import ModelContext
from blockmask.viz.presets import learned_masks
from blockmask.viz.provenance import provenance

ENV_DIR = "BLOCKMASK_FRONTIER_DIR"
ENV_CACHE = "BLOCKMASK_FRONTIER_CACHE"  # where computed frontiers are kept (default ~/.cache/blockmask/frontier)
NO_FRONTIER = ("No frontier for this model yet: compute a quick one here (a short reference run, a few held-out "
               "samples; seconds to minutes on a CPU), or run `python benchmarks/frontier.py MODEL --dense` for the "
               f"full one (then point ${ENV_DIR} at its output folder).")
QUICK = dict(max_ref=20, min_ref=4, samples=4, max_budgets=8)  # the in-app frontier's sizes
COST_NOTE = ("Cost is MACs (fraction of the plain run's): the frontier file records no wall times; the race "
             "below measures seconds for the five schedules it runs.")
SHIPPED = "shipped:"  # point names of shipped mask files (``shipped:FILE.json``)
RULE_COLOURS = {"DeepCache b0": "#2ca02c", "DeepCache b1": "#98df8a", "FORA": "#9467bd", "blocks": "#c5b0d5"}
_CACHE: dict = {}
_MEMO: dict = {}  # (what, id(frontier), extra) → (frontier, value): see _memo


def model_name(ctx: ModelContext) -> str:
    """The name frontier files use: a bundled model's name, a config's file stem, a folder's last part."""
    spec = ctx.spec
    if spec.startswith("config:"):
        return Path(spec[len("config:"):]).stem
    return spec.rstrip("/").split("/")[-1]


def _files(name: str) -> list[Path]:
    out = []
    for d in [x for x in os.environ.get(ENV_DIR, "").split(os.pathsep) if x]:
        p = Path(d)
        found = sorted(p.glob(f"{name}-*ref.json")) + sorted(p.glob(f"{name}-*ref-frontier.json"))
        # the 50-step reference first (the shipped one), then the rest by name
        out += sorted(found, key=lambda f: (not re.search(r"-050ref", f.name), f.name))
    return out


def find(ctx: ModelContext) -> Frontier | None:
    """The frontier of ``ctx``'s model: ``$BLOCKMASK_FRONTIER_DIR`` first, else the shipped one (for a
    bundled model named as such, not a folder that happens to share its name); None when there is none.
    A file for another model of the same name (other units) is passed over. Cached by file and
    modification time. A broken file raises BlockmaskError."""
    name = model_name(ctx)
    paths = _files(name)
    if not paths and ctx.spec == name:
        paths = [assets_dir() / "frontier" / f"{name}-050ref.json"]
    paths += sorted(cache_dir().glob(f"{name}-*ref-frontier.json"))
    for p in paths:
        if p.is_file():
            key = (str(p), p.stat().st_mtime_ns)
            if key not in _CACHE:
                _CACHE[key] = Frontier.load(p)
                while len(_CACHE) > 16:
                    _CACHE.pop(next(iter(_CACHE)))
            if fits(_CACHE[key], ctx):
                return _CACHE[key]
    return None


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "blockmask" / "frontier").expanduser()


def quick_ref(steps: int) -> int:
    """The reference step count of an in-app frontier: the editor's K, within QUICK's bounds."""
    return max(QUICK["min_ref"], min(QUICK["max_ref"], int(steps)))


def compute(ctx: ModelContext, steps: int, progress=None) -> Frontier:
    """Compute a quick frontier for ``ctx``'s model (:func:`blockmask.learning.frontiercompute.compute` at QUICK's
    sizes, reference K from :func:`quick_ref`), keep it in :func:`cache_dir` and return it. A model that
    already has a frontier is refused (one line): its file is the better one."""

    if find(ctx) is not None:
        raise BlockmaskError(f"{model_name(ctx)} already has a frontier; nothing computed")
    name = model_name(ctx)
    with ctx.lock:  # the model's hooks are not shared: one run on it at a time (as Generate and the race)
        fr = run(ctx.wb, name, ref_steps=quick_ref(steps), samples=QUICK["samples"],
                 max_budgets=QUICK["max_budgets"], progress=progress,
                 meta={"spec": ctx.spec, "computed_by": "the app (quick)"})
    try:
        fr.save(cache_path(_mkdir(cache_dir()), name, fr.ref_steps))
    except OSError as e:
        raise BlockmaskError(f"computed, but cannot keep it in {cache_dir()}: {e.strerror or e}") from None
    return fr


def _mkdir(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    return d


def fits(fr: Frontier, ctx: ModelContext) -> bool:
    """Whether ``fr`` was made for ``ctx``'s model: its name and its units."""
    return fr.model == model_name(ctx) and list(fr.units) == [u.name for u in ctx.units]


def check(fr: Frontier, ctx: ModelContext) -> None:
    """Refuse a frontier made for another model (name or units)."""
    if not fits(fr, ctx):
        name = model_name(ctx)
        raise BlockmaskError(f"this frontier is for {fr.model!r} ({len(fr.units)} units), not for {name!r} "
                             f"({ctx.n_units} units)")


def point_label(row) -> str:
    """'planner 50 %: deepcache b0 N=3 K=6' for plans (', forecast' when its reused units forecast), the
    name for peers."""
    if row["kind"] == "plan":
        fc = ", forecast" if row.get("reuse") == "forecast" else ""
        return f"planner {100 * float(row['budget']):.0f} %: {row['provenance'] or row['family']}{fc}"
    return str(row["name"])


def _memo(kind: str, fr: Frontier, extra, make):
    """``make()`` once per frontier object (and ``extra``): the apps redraw after every edit, the point
    list and the table stay the same (issue 28: frontier plot after an edit < 500 ms)."""
    key = (kind, id(fr), extra)
    hit = _MEMO.get(key)
    if hit is None or hit[0] is not fr:
        hit = _MEMO[key] = (fr, make())
        while len(_MEMO) > 64:
            _MEMO.pop(next(iter(_MEMO)))
    return hit[1]


def choices(fr: Frontier, ctx: ModelContext | None = None) -> list[tuple[str, str]]:
    """(label, point name) of every loadable point: plans by budget, then fewer steps, rules, shipped."""
    return list(_memo("choices", fr, None if ctx is None else ctx.key, lambda: _choices(fr, ctx)))


def _choices(fr: Frontier, ctx: ModelContext | None) -> list[tuple[str, str]]:
    out = [(point_label(r), r["name"]) for _, r in fr.plans.iterrows()]
    out += [(f"{r['name']} (plain)" if r["kind"] == "peer fewer-steps" else r["name"], r["name"])
            for _, r in fr.peers.iterrows()]
    if ctx is not None:
        out += [(s["label"], s["name"]) for s in shipped(ctx, fr)]
    return out


@dataclasses.dataclass(frozen=True)
class Loaded:
    steps: int
    mask: np.ndarray
    source: str
    meta: dict


def load_point(fr: Frontier | None, ctx: ModelContext, name: str) -> Loaded:
    """The schedule (K, mask and reuse mode in ``meta["reuse"]``) of point ``name`` for the editor; one-line
    BlockmaskError for a point that is not on this model's frontier (another model's, a typo) or when there
    is no frontier."""
    if fr is None:
        raise BlockmaskError("there is no frontier for this model, so no point to load")
    check(fr, ctx)
    name = str(name or "")
    if name.startswith(SHIPPED):
        hit = [s for s in shipped(ctx, fr) if s["name"] == name]
        if not hit:
            raise BlockmaskError(f"no shipped mask {name[len(SHIPPED):]!r} for {fr.model} at K={fr.ref_steps}")
        mask, source, meta = presets.build(ctx, f"learned:{name[len(SHIPPED):]}", fr.ref_steps)
        return Loaded(fr.ref_steps, mask, source, meta)
    k, mask = fr.schedule(name)
    row = fr.points[fr.points.name == name].iloc[0]
    what = point_label(row)
    meta = {"frontier": {"model": fr.model, "ref_steps": fr.ref_steps, "point": name, "kind": row["kind"],
                         "test_psnr": _num(row.get("test_psnr")), "valid_psnr": _num(row.get("valid_psnr"))},
            "reuse": fr.reuse(name)}
    return Loaded(k, mask, f"frontier point {what} (K={k})", meta)


def _num(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def shipped(ctx: ModelContext, fr: Frontier) -> list[dict]:
    """Shipped masks of this model at K = ref_steps whose file records a PSNR against the plain model
    (held-out or validation seeds, said in the label); masks without one are left out."""

    found = learned_masks(ctx, fr.ref_steps)
    key = ("shipped", ctx.key, fr.ref_steps, tuple(p.name for p, _, _, _ in found))
    if key in _CACHE:
        return _CACHE[key]
    out = []
    for p, _, _, meta in found:
        prov = provenance(meta)
        if prov.psnr is None:
            continue
        mask = np.asarray(ctx.wb.load_mask(p, steps=fr.ref_steps)[0].mask, bool)
        out.append({"name": SHIPPED + p.name, "label": f"shipped {p.stem} ({prov.kind})", "psnr": prov.psnr,
                    "what": prov.psnr_what, "macs_ratio": macs_ratio(ctx, fr, mask)})
    _CACHE[key] = out
    return out


def macs_ratio(ctx: ModelContext, fr: Frontier | None, mask: np.ndarray) -> float:
    """MACs of ``mask`` (at its own K) as a fraction of the plain ``ref_steps`` run (the frontier's x)."""
    ref = fr.ref_steps if fr is not None else np.asarray(mask).shape[0]
    return ctx.macs.total(np.asarray(mask, bool)) / ctx.macs.baseline(ref)


@dataclasses.dataclass(frozen=True)
class Live:
    """The current mask on the plot: its MAC ratio now; its PSNR only once measured."""

    macs_ratio: float
    psnr: float | None  # None: not generated yet
    note: str  # where the PSNR comes from, or "not generated yet"


def live_point(ctx: ModelContext, fr: Frontier | None, mask: np.ndarray, psnr: float | None = None,
               note: str = "") -> Live:
    """``psnr``: the last measured PSNR of this mask (inf: identical to plain), None when not generated."""
    p = None if psnr is None else float(psnr)
    return Live(macs_ratio(ctx, fr, mask), p if p is None or not math.isnan(p) else None,
                note or "not generated yet")


def budget_md(fr: Frontier, budget: float) -> tuple[str, str]:
    """(point name, markdown) for the frontier point at ``budget`` (:meth:`Frontier.at_budget`)."""
    r = fr.at_budget(budget)
    v, t = _num(r.get("valid_psnr")), _num(r.get("test_psnr"))
    met = fr.peers[fr.peers.met_by.fillna("") == r["name"]]
    beats = f" · matches or beats {', '.join(met.name)}" if len(met) else ""
    return r["name"], (f"**Budget {100 * budget:.0f} %** → planned point at {100 * float(r['budget']):.0f} %: "
                       f"**{r['provenance'] or r['family']}** ({r['family']}, K={int(r['steps'])}) · MACs "
                       f"{100 * float(r['macs_ratio']):.1f} % · validation PSNR "
                       f"{'-' if v is None else f'{v:.2f} dB'} · **test PSNR {'-' if t is None else f'{t:.2f} dB'}** "
                       f"(held-out test seeds){beats}")


def table(fr: Frontier) -> pd.DataFrame:
    """Every point, formatted as people read it (for st.dataframe / gr.Dataframe)."""
    return _memo("table", fr, None, lambda: _table(fr)).copy()


def _table(fr: Frontier) -> pd.DataFrame:
    p = fr.points
    ans = _memo("answers", fr, None, fr.answers)
    labels = {r["name"]: point_label(r) for _, r in ans.iterrows()}
    answer = dict(zip(ans.name, ans.answer))
    return pd.DataFrame({
        "point": [point_label(r) for _, r in p.iterrows()], "kind": p.kind, "family": p.family,
        "K": p.steps.astype(int), "MACs %": (100 * p.macs_ratio.astype(float)).round(1),
        "validation PSNR (dB)": p.valid_psnr.astype(float).round(2),
        "test PSNR (dB, held-out)": p.test_psnr.astype(float).round(2),
        "matched / beaten by": [point_label(fr.points[fr.points.name == m].iloc[0]) if m else ""
                                for m in p.met_by.fillna("").astype(str)],
        "its budget gets instead": [labels[answer[n]] if answer.get(n, n) != n else "" for n in p.name]})


def _rule_group(name: str) -> str:
    return next((g for g in RULE_COLOURS if name.startswith(g)), name.split(" N=")[0])


def figure(fr: Frontier, ctx: ModelContext | None = None, live: Live | None = None, budget: float | None = None,
           selected: str | None = None) -> go.Figure:
    """The explorer plot. Every clickable marker carries its point name in ``customdata``."""
    fig = go.Figure()
    ans = _memo("answers", fr, None, fr.answers)
    pl = fr.line(ans).sort_values("macs_ratio")  # (what a budget gets: Frontier.at_budget)
    hover = "%{text}<br>MACs %{x:.1%} · test PSNR %{y:.2f} dB<extra></extra>"
    fig.add_trace(go.Scatter(x=pl.macs_ratio, y=pl.test_psnr, mode="lines+markers", name="planner's frontier",
                             marker=dict(size=10, color="#d62728"), line=dict(color="#d62728", width=2),
                             customdata=pl.name, text=[point_label(r) for _, r in pl.iterrows()],
                             hovertemplate=hover))
    sup = ans[ans.answer != ans.name]
    if len(sup):
        by = {r["name"]: point_label(r) for _, r in ans.iterrows()}
        fig.add_trace(go.Scatter(x=sup.macs_ratio, y=sup.test_psnr, mode="markers",
                                 name="planned, superseded by a cheaper point",
                                 marker=dict(size=6, color="rgba(214, 39, 40, 0.35)"), customdata=sup.name,
                                 text=[f"{point_label(r)} · its budget gets {by[r.answer]} (better on validation)"
                                       for _, r in sup.iterrows()], hovertemplate=hover))
    fs = fr.points[fr.points.kind == "peer fewer-steps"].sort_values("macs_ratio")
    fig.add_trace(go.Scatter(x=fs.macs_ratio, y=fs.test_psnr, mode="lines+markers", name="plain, fewer steps",
                             marker=dict(size=6, color="#7f7f7f"), line=dict(color="#7f7f7f", dash="dot"),
                             customdata=fs.name, text=fs.name, hovertemplate=hover))
    ru = fr.points[fr.points.kind == "peer rule"]
    for g, sub in ru.groupby(ru.name.map(_rule_group), sort=False):
        fig.add_trace(go.Scatter(x=sub.macs_ratio, y=sub.test_psnr, mode="markers", name=g,
                                 marker=dict(size=9, symbol="square", color=RULE_COLOURS.get(g, "#17becf")),
                                 customdata=sub.name, text=sub.name, hovertemplate=hover))
    if ctx is not None:
        sh = shipped(ctx, fr)
        if sh:
            fig.add_trace(go.Scatter(x=[s["macs_ratio"] for s in sh], y=[s["psnr"] for s in sh], mode="markers",
                                     name="shipped masks (PSNR from their files)",
                                     marker=dict(size=10, symbol="diamond", color="#ff7f0e"),
                                     customdata=[s["name"] for s in sh],
                                     text=[f"{s['label']} · {s['what']} seeds of its file" for s in sh],
                                     hovertemplate=hover))
    ys = pd.to_numeric(fr.points.test_psnr, errors="coerce").dropna()
    lo = float(ys.min()) - 1.0 if len(ys) else 0.0
    if selected is not None and (fr.points.name == selected).any():
        r = fr.points[fr.points.name == selected].iloc[0]
        fig.add_trace(go.Scatter(x=[r.macs_ratio], y=[r.test_psnr], mode="markers", name="selected",
                                 marker=dict(size=20, color="rgba(0,0,0,0)", line=dict(width=2, color="black")),
                                 hoverinfo="skip", customdata=[selected]))
    if budget is not None:
        fig.add_vline(x=float(budget), line=dict(color="#d62728", dash="dash", width=1),
                      annotation_text=f"budget {100 * float(budget):.0f} %", annotation_position="top left")
    if live is not None:
        known = live.psnr is not None
        y = (float(ys.max()) + 1.0 if len(ys) else 1.0) if known and math.isinf(live.psnr) else (
            live.psnr if known else lo)
        fig.add_trace(go.Scatter(
            x=[live.macs_ratio], y=[y], mode="markers+text", name="current mask",
            marker=dict(size=16, symbol="star" if known else "triangle-up", color="#1f4e96",
                        line=dict(width=1, color="white")),
            text=["current mask" if known else "current mask (not generated yet)"], textposition="top center",
            customdata=[""], hovertemplate=f"current mask<br>MACs %{{x:.1%}} · "
                                           f"{'PSNR %{y:.2f} dB · ' + live.note if known else live.note}"
                                           "<extra></extra>"))
    fig.update_layout(
        height=460, margin=dict(l=60, r=20, t=40, b=50), clickmode="event+select", dragmode=False,
        title=dict(text=f"{fr.model}: quality against cost (plain DDIM {fr.ref_steps} steps = 100 %)"
                   + (f" · quick frontier, {fr.meta.get('test_samples')} test samples" if fr.meta.get("quick") else ""),
                   x=0),
        xaxis=dict(title=f"MACs, fraction of the plain {fr.ref_steps}-step run", tickformat=".0%"),
        yaxis=dict(title="PSNR vs plain (dB), held-out test seeds"),
        legend=dict(orientation="h", yanchor="bottom", y=-0.35, x=0))
    return fig
