"""Gradio handlers of issue 28 (app/gradio_demo.py): the frontier explorer, the race at one budget and
the export for teaching. Like :mod:`gradio_handlers` they take the per-user :class:`Session` plus widget
values, check every input first (one ``gr.Error`` line, the session left as it was) and return plain
values; the work is in :mod:`blockmask.viz.frontier`, :mod:`~blockmask.viz.race` and
:mod:`~blockmask.viz.export`.

``gr.Plot`` has no click event in this Gradio (only ``change``): a small script in the page
(``FRONTIER_CLICK_JS`` in app/gradio_demo.py) sends Plotly's own click to :func:`click_point`; a point
can also be chosen in a dropdown (every point of the plot, labelled as on hover) or by the budget
slider, then loaded with a button.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import math
from pathlib import Path

import gradio as gr
from spaces_compat import gpu  # spaces.GPU on ZeroGPU, a no-op elsewhere

import gradio_handlers as h
from blockmask.core.errors import BlockmaskError
from blockmask.viz import export, figures, frontier, race, tables
from blockmask.viz.compare import MAX_IMAGES, upscale
from blockmask.viz.context import Draw
from gradio_checks import Refused, apply, number, whole
from gradio_handlers import Session

LANES = len(race.ENTRIES)


def _frontier(s: Session):
    """The session model's frontier or None; a broken or foreign file is one gr.Error."""
    try:
        fr = frontier.find(s.ctx)
        if fr is not None:
            frontier.check(fr, s.ctx)
        return fr
    except BlockmaskError as e:
        raise Refused(f"Frontier file: {e}.") from None


def _budget(budget) -> float:
    return number(budget, "MAC budget", 0, 1)


def _race_of(s: Session):
    rc = s.race
    return rc if rc is not None and rc.key and rc.key[-1] == s.ctx.key else None


def live(s: Session, fr) -> frontier.Live:
    """The current mask's point: the race's PSNR for this mask, else the last Generate's when it was for
    this mask at K = ref (the same reference run), else not generated yet."""
    ed = s.editor
    rc = _race_of(s)
    if rc is not None and rc.key[0] == ed.hash and rc.lanes[-1].reuse == ed.reuse:
        return frontier.live_point(s.ctx, fr, ed.mask, rc.lanes[-1].psnr, f"race, seed {rc.seed}")
    r = s.results.get(s.shown) if s.shown and s.shown[0] == ed.hash and s.shown[-1] == ed.reuse else None
    if r is not None and ed.steps == fr.ref_steps:
        return frontier.live_point(s.ctx, fr, ed.mask, r.psnr, f"your Generate, seed {s.shown[3]}")
    return frontier.live_point(s.ctx, fr, ed.mask)


def _live_md(lv: frontier.Live, fr) -> str:
    psnr = (f"identical ({lv.note})" if lv.psnr is not None and math.isinf(lv.psnr) else
            f"{lv.psnr:.2f} dB ({lv.note})" if lv.psnr is not None else "not generated yet")
    return f"**Current mask:** MACs {100 * lv.macs_ratio:.1f} % of the plain {fr.ref_steps}-step run · PSNR {psnr}."


def frontier_view(s: Session, budget=0.5, point=None, *, edit: bool = False):
    """(status markdown, plot, point dropdown, budget markdown) for the session's model. ``edit``: after a
    mask edit the point list and the budget note are left as they are (``gr.skip()``) when they were last
    sent for this model and budget: only the live point moves (issue 28: plot updated < 500 ms)."""
    fr = _frontier(s)
    if fr is None:
        s.fr_view = ()
        return (frontier.NO_FRONTIER, gr.update(value=None, visible=False), gr.update(choices=[], value=None),
                "")
    b = _budget(budget)
    lv = live(s, fr)
    md = (f"Points judged against the plain {fr.ref_steps}-step DDIM run on **held-out test seeds**. "
          f"{frontier.COST_NOTE} Choose a point below (or move the budget) and press **Load point**.\n\n"
          + _live_md(lv, fr))
    try:
        pick, bmd = frontier.budget_md(fr, b)
    except BlockmaskError as e:
        pick, bmd = None, f"⚠️ {str(e)[0].upper()}{str(e)[1:]}."
    sent = (s.ctx.key, s.editor.hash, b, s.fr_selected or pick, lv)
    if edit and s.fr_view == (s.ctx.key, b):
        if s.fr_sent == sent:  # already on the page (sent with the edit itself, :func:`with_frontier`)
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        s.fr_sent = sent
        return md, gr.update(value=frontier.figure(fr, s.ctx, lv, budget=b, selected=sent[3]), visible=True), \
            gr.skip(), gr.skip()
    fig = frontier.figure(fr, s.ctx, lv, budget=b, selected=sent[3])
    s.fr_sent = sent
    opts = frontier.choices(fr, s.ctx)
    names = [n for _, n in opts]
    value = point if point in names else (pick if pick in names else names[0] if names else None)
    s.fr_view = (s.ctx.key, b)
    return md, gr.update(value=fig, visible=True), gr.update(choices=opts, value=value), bmd


def frontier_plot(s: Session, budget=0.5, point=None):
    """After any edit: the frontier outputs again (the live point follows the mask; the point list and
    budget note only when the model or budget changed)."""
    try:
        return frontier_view(s, budget, point, edit=True)
    except gr.Error:  # a slider value the visitor is still typing: the page keeps its last plot
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()


def with_frontier(fn):
    """``fn(s, *values)`` → its outputs, then the frontier outputs after the edit, in one reply: the live
    point moves without waiting for a second event (the readout's ``change`` then finds it sent). The
    inputs are (state, *values, budget, point): the API keeps ``fn``'s parameters first."""
    def edit(s: Session, *args):
        *values, budget, point = args
        out = fn(s, *values)
        return (*out, *frontier_plot(s, budget, point))
    sig = inspect.signature(fn)  # the API shows fn's parameter names, then these two
    extra = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=d)
             for n, d in (("budget", 0.5), ("point", None))]
    edit.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *extra])
    edit.__name__, edit.__doc__ = fn.__name__, fn.__doc__
    return edit


def budget_point(s: Session, budget, point=None):
    """The budget slider moved: (frontier outputs) with the budget's planned point selected; an absurd
    budget is one gr.Error line."""
    b = _budget(budget)
    fr = _frontier(s)
    if fr is not None:
        try:
            name, _ = frontier.budget_md(fr, b)
        except BlockmaskError as e:
            raise Refused(f"Budget: {e}.") from None
        point = name
    return frontier_view(s, b, point)


def load_point(s: Session, point, budget=0.5):
    """Load a frontier point's schedule (K and mask) into the editor; the scheduler becomes DDIM (as the
    frontier was measured). A point not on this model's frontier: gr.Error, session unchanged.
    Returns (views…, steps, scheduler, preset dropdown, frontier outputs…)."""
    b = _budget(budget)
    try:
        got = frontier.load_point(_frontier(s), s.ctx, point)
    except BlockmaskError as e:
        raise Refused(f"Frontier point: {e}. The current mask is kept.") from None
    ns = s
    if (s.scheduler, s.editor.steps) != ("ddim", got.steps):
        ctx = h.get_context(s.spec, "ddim")
        ed = s.editor
        if ed.same_model(ctx):
            try:
                ed, _ = ed.resampled(ctx, got.steps)  # the undo history follows; the point replaces the mask
            except BlockmaskError:
                ed = None
        else:
            ed = None
        if ed is None:
            from blockmask.viz import MaskEditor

            ed = MaskEditor.create(ctx, got.steps)
        ns = dataclasses.replace(s, scheduler="ddim", editor=ed, shown=(), show_pre=False)
    apply(ns.editor.load(got.mask, source=got.source, meta=got.meta))
    ns.fr_selected = str(point)
    choices = h.preset_choices(ns)
    return (*h.view(ns), ns.editor.steps, ns.scheduler, gr.update(choices=choices, value=choices[0][1]),
            *frontier_view(ns, b, point))


@gpu(duration=240)  # sampling runs: on ZeroGPU they need the GPU
def compute_frontier(s: Session, budget=0.5, progress=gr.Progress()):
    """Compute a quick frontier for the session's model (none shipped); (frontier outputs). A model that
    has one already, or a failed run: gr.Error, nothing changed."""
    b = _budget(budget)
    try:
        frontier.compute(s.ctx, s.editor.steps, progress=lambda f, t: progress(min(1.0, f), desc=t))
    except BlockmaskError as e:
        raise Refused(f"Frontier: {e}. Nothing changed.") from None
    return frontier_view(s, b)


def click_point(s: Session, clicked, budget=0.5):
    """A click on the frontier plot (``{"point": name, "at": ms}`` from the page's plotly_click): as
    :func:`load_point`; a click the page could not name is one gr.Error, nothing changed."""
    try:
        name = json.loads(clicked or "null")["point"]
    except (TypeError, ValueError, KeyError):
        raise Refused("Frontier point: the plot sent a click this app cannot read. The current mask is kept.") from None
    return load_point(s, name, budget)


# --- the race --------------------------------------------------------------------------------
def _lane_md(ln: race.Lane) -> str:
    if ln.image is None:
        return f"**{ln.role}**\n\n{ln.name}\n\n{ln.note or 'not run'}"
    psnr = "reference" if ln.role == "plain" else "identical" if math.isinf(ln.psnr) else f"{ln.psnr:.2f} dB"
    film = f"\n\nx̂₀ at steps {', '.join(map(str, ln.film_steps))}" if ln.film_steps else ""
    return (f"**{ln.role}**\n\n{ln.name} · K={ln.steps}\n\nMACs **{100 * ln.macs_ratio:.1f} %** · time "
            f"**{ln.seconds:.3f} s** · PSNR **{psnr}**" + (f"\n\n_{ln.note}_" if ln.note else "") + film)


def race_outputs(s: Session):
    """(table, then per lane: final image, filmstrip, markdown) of the session's race (or blanks)."""
    rc = _race_of(s)
    if rc is None:
        return (None, *([None, None, "Press **Run the race**."] * LANES))
    out = [rc.frame()]
    for ln in rc.lanes:
        img = None if ln.image is None else upscale(ln.image, max(1, -(-160 // max(1, ln.image.shape[0]))))
        film = None if ln.film is None else upscale(ln.film, max(1, -(-96 // max(1, ln.film.shape[0]))))
        out += [img, film, _lane_md(ln)]
    return tuple(out)


@h.gpu
@gpu(duration=240)  # five sampling lanes: on ZeroGPU they need the GPU
def run_race(s: Session, budget, seed, num_images, class_label=0, progress=gr.Progress()):
    """Run the five lanes at ``budget``. Returns (state, table, lane outputs…, frontier outputs…)."""
    b = _budget(budget)
    seed = whole(seed, "Race seed", 0, 2**31 - 1)
    n = whole(num_images, "Race images", 1, MAX_IMAGES)
    ctx = s.ctx
    label = whole(class_label, "Class label", 0, ctx.num_classes - 1) if ctx.num_classes else None
    fr = _frontier(s)
    try:
        s.race = race.run(ctx, fr, b, s.editor.mask, Draw(seed=seed, num_images=n, class_label=label),
                          progress=lambda f, t: progress(min(1.0, f), desc=t), reuse=s.editor.reuse)
    except BlockmaskError as e:
        raise Refused(f"Race: {e}. Nothing changed.") from None
    return (s, *race_outputs(s), *frontier_view(s, b))


# --- export ----------------------------------------------------------------------------------
def _out_dir(data: bytes) -> Path:
    d = Path(h._DOWNLOADS.name) / ("x" + hashlib.sha1(data).hexdigest()[:16])
    d.mkdir(parents=True, exist_ok=True)
    return d


def _write(name: str, data: bytes) -> str:
    p = _out_dir(data) / name
    if not p.exists():
        p.write_bytes(data)
    return str(p)


def _plots(s: Session, budget: float) -> dict:
    figs = {"macs_per_step": figures.step_macs_figure(s.ctx, s.editor.mask),
            "computed_per_unit": figures.unit_fraction_figure(s.ctx, s.editor.mask)}
    fr = _frontier(s)
    if fr is not None:
        figs["frontier"] = frontier.figure(fr, s.ctx, live(s, fr), budget=budget)
    return figs


def export_figures(s: Session, budget=0.5):
    """The grid (PNG, SVG) and every plot (PNG + SVG in a zip): file paths for a gr.File."""
    b = _budget(budget)
    ctx, ed = s.ctx, s.editor
    stem = ed.download_name(ctx).removesuffix(".json")
    return [_write(f"{stem}-grid.png", export.grid_png(ctx, ed.mask, ed.removed)),
            _write(f"{stem}-grid.svg", export.grid_svg(ctx, ed.mask, ed.removed, f"{ctx.label} · K={ed.steps}")),
            _write(f"{stem}-plots.zip", export.figures_zip(ctx, ed.mask, _plots(s, b), ed.removed))]


def export_report(s: Session, budget=0.5):
    """The one-page HTML report (a file path); nothing generated yet for this mask: gr.Error."""
    b = _budget(budget)
    ctx, ed = s.ctx, s.editor
    r = s.results.get(s.shown) if s.shown and s.shown[0] == ed.hash else None
    rc = _race_of(s)
    if r is None and rc is None:
        raise Refused("Nothing generated yet: press Generate or Run the race first; the report shows their images "
                      "and numbers.")
    images, tabs, notes = [], {}, []
    if r is not None:
        images += [("original", r.original), ("masked", r.masked), ("|difference|", r.difference)]
        tabs["Original vs masked"] = tables.comparison_frame(r)
        notes.append(f"Generate: seed {s.shown[3]}, {r.num_images} image(s), {r.repeats} timed repeat(s) on "
                     f"{r.device}.")
    if rc is not None:
        images += [(f"race: {ln.role}", ln.image) for ln in rc.lanes if ln.image is not None]
        images += [(f"x̂₀ {ln.role}", ln.film) for ln in rc.lanes if ln.film is not None]
        tabs[f"Race at {100 * rc.budget:.0f} % budget"] = rc.frame()
    html = export.report_html(ctx, export.ReportContent(_plots(s, b), images, tabs, notes), mask=ed.mask,
                              source=ed.source, summary=ed.summary(ctx), removed=ed.removed)
    stem = ed.download_name(ctx).removesuffix(".json")
    return _write(f"{stem}-report.html", html)
