"""Streamlit panels of issue 28 (see app/main.py): the frontier explorer (click a point to load its
schedule, a budget slider, the current mask as a live point), the race at one budget, and the export
for teaching. The work is in :mod:`blockmask.viz.frontier`, :mod:`~blockmask.viz.race` and
:mod:`~blockmask.viz.export`; here widgets are read and plain values shown.

A clicked point whose K differs from the sidebar's is loaded on the next run: the K widget can only be
set before it is drawn (:func:`apply_pending`, called by ``ensure_editor``)."""

from __future__ import annotations

import math

import numpy as np
import streamlit as st

from blockmask.core.errors import BlockmaskError
from blockmask.viz import MaskEditor, Message, export, figures, frontier, race
from blockmask.viz.context import ModelContext
from blockmask.viz.context import Draw
from st_panels import flash, show_flash

PICK_HOOK = "frontier_pick"  # session key: a point name loaded as if clicked (tests, automation)


# --- loading a point -------------------------------------------------------------------------
def request_load(ctx: ModelContext, fr, name: str) -> None:
    """Check the point now (one error line, nothing changed on failure); load it on the next run."""
    try:
        got = frontier.load_point(fr, ctx, name)
    except BlockmaskError as e:
        flash([Message("error", f"Frontier point: {e}. The current mask is kept.")], "frontier")
        st.rerun()
    st.session_state.fr_pending = {"spec": ctx.spec, "steps": got.steps, "mask": got.mask, "source": got.source,
                                   "meta": got.meta, "name": str(name)}
    st.session_state.fr_selected = str(name)
    st.rerun()


def before_widgets() -> None:
    """At the top of the page (before the sidebar): a pending point's K and scheduler (DDIM, as the
    frontier was measured) go into the sidebar's widgets."""
    p = st.session_state.get("fr_pending")
    if p is not None:
        st.session_state.steps = int(p["steps"])
        st.session_state.scheduler = "ddim"


def apply_pending(ctx: ModelContext, steps: int) -> MaskEditor | None:
    """Load the pending point into the editor (undoable; the editor's history is kept, resampled to the
    point's K when it differs). Returns the editor, or None when nothing was pending."""
    ss = st.session_state
    p = ss.pop("fr_pending", None)
    if p is None or p["spec"] != ctx.spec or int(p["steps"]) != steps:
        return None
    ed = ss.get("editor")
    if ed is not None and not ed.fits(ctx, steps) and ed.same_model(ctx):
        try:
            ed, _ = ed.resampled(ctx, steps)  # keep the undo history; the point replaces the mask below
        except BlockmaskError:
            ed = None
    if ed is None or not ed.fits(ctx, steps):
        ed = MaskEditor.create(ctx, steps)
    flash(ed.load(p["mask"], source=p["source"], meta=p["meta"]), "frontier")
    ss.editor = ed
    return ed


# --- the explorer ----------------------------------------------------------------------------
def _live(ctx: ModelContext, fr, ed: MaskEditor) -> frontier.Live:
    """The current mask's point: race PSNR (vs the plain ref run) for this mask, else the last Generate's
    when it was for this mask at K = ref (same reference), else not generated yet."""
    rc = st.session_state.get("race")
    if rc is not None and rc.key and rc.key[0] == ed.hash and rc.key[-1] == ctx.key and rc.lanes[-1].reuse == ed.reuse:
        return frontier.live_point(ctx, fr, ed.mask, rc.lanes[-1].psnr, f"race, seed {rc.seed}")
    res = st.session_state.get("result")
    if res is not None and res[0][0] == ed.hash and res[0][-1] == ed.reuse and ed.steps == fr.ref_steps:
        return frontier.live_point(ctx, fr, ed.mask, res[1].psnr, f"your Generate, seed {res[0][1]}")
    return frontier.live_point(ctx, fr, ed.mask)


def current_frontier(ctx: ModelContext):
    """(frontier or None, error text or None)."""
    try:
        fr = frontier.find(ctx)
        if fr is not None:
            frontier.check(fr, ctx)
        return fr, None
    except BlockmaskError as e:
        return None, str(e)


def frontier_panel(ctx: ModelContext, ed: MaskEditor) -> None:
    st.subheader("6 · Frontier: what is best at my budget?")
    fr, err = current_frontier(ctx)
    ss = st.session_state
    if (name := ss.pop(PICK_HOOK, None)) is not None and not err:
        request_load(ctx, fr, name)  # no frontier: one error line, nothing changed
    if err:
        st.error(f"Frontier file: {err}.")
        return
    if fr is None:
        show_flash("frontier")
        st.info(frontier.NO_FRONTIER)
        if st.button(f"Compute a quick frontier (reference K={frontier.quick_ref(ed.steps)})", key="fr_compute"):
            bar = st.progress(0.0, "frontier: starting…")
            try:
                frontier.compute(ctx, ed.steps, progress=lambda f, t: bar.progress(min(1.0, f), t))
            except BlockmaskError as e:
                st.error(f"Frontier: {e}. Nothing changed.")
            else:
                st.rerun()
            bar.empty()
        return
    st.caption(f"Every point is judged against the plain {fr.ref_steps}-step DDIM run on **held-out test seeds** "
               "(seeds no choice saw). Click a point to load its schedule (step count included) into the grid. "
               f"{frontier.COST_NOTE} The current mask is the blue marker; its PSNR is known once you run the race "
               f"(or Generate at K={fr.ref_steps}).")
    lo = float(fr.plans.budget.min()) if len(fr.plans) else 0.05
    budget = st.slider("MAC budget (fraction of the plain run)", 0.0, 1.0, 0.5, 0.01,
                       key="fr_budget", help=f"Selects, of the points planned for budgets at or under it, the best "
                                             f"on validation (cheapest planned point: {100 * lo:.0f} %).")
    pick = None
    try:
        pick, md = frontier.budget_md(fr, budget)
        st.markdown(md)
    except BlockmaskError as e:
        st.error(f"Budget: {e}.")
    show_flash("frontier")
    live = _live(ctx, fr, ed)
    fig = frontier.figure(fr, ctx, live, budget=budget, selected=ss.get("fr_selected") or pick)
    gen = ss.get("fr_gen", 0)
    ev = st.plotly_chart(fig, on_select="rerun", selection_mode="points", key=f"fr_fig{gen}", width="stretch")
    pts = (ev or {}).get("selection", {}).get("points", []) if isinstance(ev, dict) else \
        getattr(getattr(ev, "selection", None), "points", []) or []
    for p in pts:
        cd = p.get("customdata")
        name = cd[0] if isinstance(cd, (list, tuple)) and cd else cd
        if name:
            ss.fr_gen = gen + 1  # a fresh chart: the click is not replayed on the next run
            request_load(ctx, fr, name)
    live_txt = (f"MACs {100 * live.macs_ratio:.1f} % of the plain {fr.ref_steps}-step run · PSNR "
                + (f"identical ({live.note})" if live.psnr is not None and math.isinf(live.psnr) else
                   f"{live.psnr:.2f} dB ({live.note})" if live.psnr is not None else "not generated yet"))
    st.caption(f"**Current mask:** {live_txt}.")
    c1, c2, c3 = st.columns([4, 1, 1])
    opts = frontier.choices(fr, ctx)
    labels = dict(opts)
    names = [n for _, n in opts]
    sel = c1.selectbox("Frontier point", names, format_func=lambda n: {v: k for k, v in labels.items()}.get(n, n),
                       key="fr_point", index=names.index(pick) if pick in names else 0)
    if c2.button("Load point", key="fr_load"):
        request_load(ctx, fr, sel)
    if c3.button("Load budget's point", key="fr_load_budget", disabled=pick is None):
        request_load(ctx, fr, pick)
    with st.expander("All points (table)", expanded=False):
        st.dataframe(frontier.table(fr), hide_index=True, width="stretch", key="fr_table")
        st.caption("Shipped masks are plotted with the PSNR their files record (held-out or validation seeds of "
                   "their own, said on hover); shipped masks without a recorded PSNR are left out.")


# --- the race --------------------------------------------------------------------------------
def race_panel(ctx: ModelContext, ed: MaskEditor) -> None:
    st.subheader("7 · Race at one budget")
    fr, _ = current_frontier(ctx)
    budget = float(st.session_state.get("fr_budget", 0.5))
    st.caption(f"Same seeds for all five: plain, plain with fewer steps at the budget, the best rule peer within it, "
               f"the planner's schedule and your current mask. MACs as a fraction of the plain run; one timed run "
               f"each (noisy on a busy CPU); PSNR against the plain run. The filmstrip shows the predicted clean "
               f"image x̂₀ after 20/40/60/80/100 % of the steps, so you can see where a schedule drifts. "
               f"Budget: the slider of section 6 ({100 * budget:.0f} %)."
               + ("" if fr is not None else " No frontier for this model: the rule and planner lanes stay empty."))
    c = st.columns(3)
    seed = int(c[0].number_input("Race seed", 0, 2**31 - 1, 0, key="race_seed"))
    n = int(c[1].number_input("Race images", 1, 16, 2, key="race_images"))
    go = c[2].button("Run the race", type="primary", key="race_go")
    show_flash("race")
    if go:
        bar = st.progress(0.0, "race: starting…")
        try:
            label = int(st.session_state.get("label", 0)) if ctx.num_classes else None
            st.session_state.race = race.run(ctx, fr, budget, ed.mask,
                                             Draw(seed=seed, num_images=n, class_label=label), progress=lambda f,
                                             t: bar.progress(min(1.0, f), t), reuse=ed.reuse)
        except BlockmaskError as e:
            st.error(f"Race: {e}. Nothing changed.")
        else:
            st.rerun()  # section 6 above was drawn before the race: its live point gets the race's PSNR
        bar.empty()
    rc = st.session_state.get("race")
    if rc is None or rc.key[-1] != ctx.key:
        st.info("Press **Run the race**.")
        return
    if rc.key[0] != ed.hash or rc.budget != budget or rc.lanes[-1].reuse != ed.reuse:
        st.warning("**Stale:** this race ran for another mask, budget or reuse mode; press Run the race to update it.")
    cols = st.columns(len(rc.lanes))
    for col, ln in zip(cols, rc.lanes):
        with col.container(border=True, key=f"race_lane_{ln.role.replace(' ', '_')}"):
            st.markdown(f"**{ln.role}**  \n{ln.name} · K={ln.steps}")
            if ln.image is None:
                st.caption(ln.note or "not run")
                continue
            st.image(ln.image, width="stretch")
            st.metric("MACs", f"{100 * ln.macs_ratio:.1f} %")
            st.metric("time", f"{ln.seconds:.3f} s")
            st.metric("PSNR vs plain", "reference" if ln.role == "plain" else
                      "identical" if math.isinf(ln.psnr) else f"{ln.psnr:.2f} dB")
            if ln.film is not None:
                st.image(ln.film, caption="x̂₀ at steps " + ", ".join(map(str, ln.film_steps)), width="stretch")
            if ln.note:
                st.caption(ln.note)
    st.dataframe(rc.frame(), hide_index=True, width="stretch", key="race_table")
    st.caption(f"Seed {rc.seed}, {rc.num_images} image(s), on {rc.device}.")


# --- export ----------------------------------------------------------------------------------
def _plots(ctx: ModelContext, mask: np.ndarray, fr, live, budget: float) -> dict:
    """The page's plots for ``mask`` (built when the download is clicked, from values taken at render)."""
    figs = {"macs_per_step": figures.step_macs_figure(ctx, mask),
            "computed_per_unit": figures.unit_fraction_figure(ctx, mask)}
    if fr is not None:
        figs["frontier"] = frontier.figure(fr, ctx, live, budget=budget)
    return figs


def _report(ctx: ModelContext, ed: MaskEditor, plots: dict, res, rc) -> bytes:
    """The HTML report; ``ed`` is a snapshot and ``res`` / ``rc`` the results taken at render time (the
    download callable runs outside the script, without session state)."""
    from blockmask.viz import tables

    images, tabs, notes = [], {}, []
    if res is not None and res[0][0] == ed.hash:
        out = res[1]
        images += [("original", out.original), ("masked", out.masked), ("|difference|", out.difference)]
        tabs["Original vs masked"] = tables.comparison_frame(out)
        notes.append(f"Generate: seed {res[0][1]}, {out.num_images} image(s), {out.repeats} timed repeat(s) on "
                     f"{out.device}.")
    if rc is not None and rc.key[-1] == ctx.key:
        images += [(f"race: {ln.role}", ln.image) for ln in rc.lanes if ln.image is not None]
        images += [(f"x̂₀ {ln.role}", ln.film) for ln in rc.lanes if ln.film is not None]
        tabs[f"Race at {100 * rc.budget:.0f} % budget"] = rc.frame()
    return export.report_html(ctx, export.ReportContent(plots, images, tabs, notes), mask=ed.mask,
                              source=ed.source, summary=ed.summary(ctx), removed=ed.removed)


def export_panel(ctx: ModelContext, ed: MaskEditor) -> None:
    st.subheader("8 · Export for teaching")
    st.caption("The grid as PNG or SVG (always); every plot as PNG + SVG in one zip; a one-page HTML report of this "
               "session (model, schedule, grid, plots, images, numbers) once something has been generated.")
    stem = ed.download_name(ctx).removesuffix(".json")
    c = st.columns(4)
    snap = MaskEditor(ed.mask.copy(), ed.loaded.copy(), ed.context_key, ed.source, dict(ed.meta),
                      None if ed.removed is None else ed.removed.copy(), reuse=ed.reuse)  # downloads run later
    c[0].download_button("Grid (PNG)", lambda: export.grid_png(ctx, snap.mask, snap.removed), f"{stem}-grid.png",
                         mime="image/png", key="exp_grid_png", on_click="ignore")
    c[1].download_button("Grid (SVG)", lambda: export.grid_svg(ctx, snap.mask, snap.removed,
                                                               f"{ctx.label} · K={snap.steps}"),
                         f"{stem}-grid.svg", mime="image/svg+xml", key="exp_grid_svg", on_click="ignore")
    fr, _ = current_frontier(ctx)
    live = None if fr is None else _live(ctx, fr, ed)
    budget = float(st.session_state.get("fr_budget", 0.5))
    c[2].download_button("Plots (PNG + SVG, zip)",
                         lambda: export.figures_zip(ctx, snap.mask, _plots(ctx, snap.mask, fr, live, budget),
                                                    snap.removed), f"{stem}-plots.zip", mime="application/zip",
                         key="exp_zip", on_click="ignore")
    res, rc = st.session_state.get("result"), st.session_state.get("race")
    generated = (res is not None and res[0][0] == ed.hash) or (rc is not None and rc.key[-1] == ctx.key)
    if generated:
        c[3].download_button("HTML report", lambda: _report(ctx, snap, _plots(ctx, snap.mask, fr, live, budget),
                                                            res, rc), f"{stem}-report.html", mime="text/html",
                             key="exp_report", on_click="ignore")
    elif c[3].button("HTML report", key="exp_report_none"):
        st.error("Nothing generated yet: press Generate (section 3) or Run the race (section 7) first; the report "
                 "shows their images and numbers.")
    if note := export.static_note():
        st.caption(note)
