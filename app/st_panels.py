"""Streamlit panels of the blockmask explorer (see app/main.py; the generation panel is in
app/st_generate.py). Each ``*_panel`` reads its widgets, calls the presenter (:mod:`blockmask.viz`) and
shows plain values; per-user state is in ``st.session_state``, the :class:`ModelContext` is shared and
never mutated here."""

from __future__ import annotations

import time

import streamlit as st

from blockmask.hooks.costs import format_macs
from blockmask.core.errors import BlockmaskError
from blockmask.viz import MaskEditor, Message, figures, presenter, presets, tables, training
from blockmask.viz.access import ENV_ALLOW_MASKS, MAX_UPLOAD_BYTES, MaskPolicy, check_upload_size
from blockmask.viz.compare import compute_delta, default_lambda, delta_from_meta
from blockmask.viz.context import ModelContext
from blockmask.viz.context import Draw
from blockmask.viz.training import TrainSettings
from mask_grid import MODES, mask_grid, parse_edit, pending_edit

CLICK_MODES = {"Toggle": None, "Set computed": True, "Set reused": False}
SELECTION_HOOK = "mask_click"  # session key: a list of (k, i) cells applied like a box selection (tests, automation)
FLUSH_S = 0.06  # seconds the editor waits before rerunning the page (see the end of _editor_fragment)
GRID_HOOK = "mask_grid_edit"  # session key: one edit in the grid's own format, applied as if the browser sent it


def show(m: Message) -> None:
    {"success": st.success, "warning": st.warning, "error": st.error}.get(m.level, st.info)(m.text)


def flash(msgs: list[Message], where: str = "top") -> None:
    """Keep messages for the next run (after st.rerun) so they are not lost; ``where`` names the panel
    whose :func:`show_flash` shows them, next to the button just used (issue 28)."""
    st.session_state.flash = list(st.session_state.get("flash", [])) + [(where, m) for m in msgs]
    st.session_state.editor_msgs = []  # an edit from elsewhere: the chart's last messages no longer apply
    st.session_state.editor_note = None  # ... nor the editor buttons' last result


def show_flash(where: str) -> None:
    """Show (once) the kept messages for ``where``."""
    kept = list(st.session_state.get("flash", []))
    for w, m in kept:
        if w == where:
            show(m)
    st.session_state.flash = [(w, m) for w, m in kept if w != where]


# --- presets, upload, download ---------------------------------------------------------------
def preset_panel(ctx: ModelContext, ed: MaskEditor, mask_policy: MaskPolicy | None = None) -> None:
    st.subheader("1 · Start from a mask")
    st.caption("Shipped masks are made for one model and step count (only this model's are listed), each with "
               "where it came from (rule, refined rule, learned, planner) and its held-out PSNR; baselines are "
               "hand-made schedules from the literature.")
    items = presets.presets(ctx, ed.steps)
    c1, c2, c3 = st.columns([2, 3, 2])
    with c1:
        pick = st.selectbox("Preset", items, format_func=lambda p: p.label, key="preset_pick")
        st.caption(pick.help)
    params = {}
    with c2:
        cols = st.columns(max(1, len(pick.params)))
        for col, name in zip(cols, pick.params):
            default = presets.PARAM_DEFAULTS[name]
            if name == "macs_ratio":
                params[name] = col.number_input("MAC budget (fraction)", 0.0, 1.0, float(default), 0.05, key="p_ratio")
            else:
                params[name] = col.number_input(name, 0 if name in ("seed", "branch") else 1, 10_000, int(default), key=f"p_{name}")
        if not pick.params:
            st.caption("No parameters.")
        if st.button("Load preset", type="primary", key="load_preset"):
            bar = st.progress(0.0, f"{pick.label}: starting…") if pick.key.startswith("method:") else None
            try:
                mask, source, meta = presets.build(
                    ctx, pick.key, ed.steps, **params, prompt=current_prompt(ctx),
                    progress=None if bar is None else (lambda f, t: bar.progress(min(1.0, max(0.0, f)), t)))
                flash(ed.load(mask, source=source, meta=meta), "preset")
            except BlockmaskError as e:
                flash([Message("error", f"Preset {pick.label}: {e}")], "preset")
            st.rerun()
        show_flash("preset")
    with c3:
        gen = st.session_state.get("upload_gen", 0)
        up = st.file_uploader(f"Upload mask JSON (max {MAX_UPLOAD_BYTES // 1_000_000} MB)", type=["json"],
                              key=f"upload{gen or ''}", max_upload_size=max(1, MAX_UPLOAD_BYTES // 1_000_000),
                              help="A blockmask/1 file for this model and step count; anything else is refused "
                                   "and the current mask is kept.")
        if up is not None and st.session_state.get("last_upload") != up.file_id:
            st.session_state.last_upload = up.file_id
            try:
                check_upload_size(up.size, up.name)  # before the bytes are read
                msgs = ed.load_upload(ctx, up.getvalue(), up.name)
            except BlockmaskError as e:
                msgs = [Message("error", f"{e}; the current mask is kept.")]
            if any(m.level == "error" for m in msgs):
                st.session_state.upload_gen = gen + 1  # a refused file does not stay listed
            flash(msgs, "files")
            st.rerun()
        hub = st.text_input("Load mask from the hub", key="hub_mask", placeholder="owner/name",
                            help="A hub repo id (owner/name, or owner/name:path/in/repo.json) or a folder written by "
                                 "MaskFile.save_pretrained. Only what the operator allows (--allow-mask or "
                                 f"${ENV_ALLOW_MASKS}); anything else is refused and the current mask is kept.")
        if st.button("Load from hub", key="hub_load"):
            flash(ed.load_source(ctx, hub, mask_policy or MaskPolicy.from_env()), "files")
            st.rerun()
        show_flash("files")
        st.download_button("Download current mask", ed.download_bytes(ctx), ed.download_name(ctx),
                           mime="application/json", key="download")
    with st.expander("Compare the presets at this K (table)", expanded=False):
        st.dataframe(tables.presets_frame(ctx, ed.steps, ed.mask, _measured(ed)), hide_index=True, width="stretch",
                     key="presets_table")
        st.caption("Shipped masks for this model and the baselines at their default parameters, one row per "
                   "distinct mask (identical masks share a row), against the current mask. PSNR is what each mask "
                   "file records (held-out seeds); the current mask's is from your last Generate.")


def _measured(ed: MaskEditor):
    """(PSNR, where) of this session's last generation when it was for the current mask."""
    res = st.session_state.get("result")
    if res is None or res[0][0] != ed.hash or res[0][-1] != ed.reuse:
        return None
    out = res[1]
    return out.psnr, f"this session: seed {res[0][1]}, {out.num_images} image(s)"


# --- the editable mask -----------------------------------------------------------------------
def _apply_grid_edit(edit) -> None:
    """Apply one edit of the browser grid (click = one cell, drag = a region); also the test hook.
    Its messages stay next to the grid (``editor_msgs``) until the next edit."""
    ss = st.session_state
    ed = ss.get("editor")
    if ed is None or edit is None:
        return
    ss.editor_note = None  # the buttons' last result no longer describes the mask
    parsed = parse_edit(edit, ed.shape)
    if parsed is None:
        ss.editor_msgs = [presenter.error("The mask grid sent an edit this app cannot read; nothing changed.")]
        return
    k0, k1, i0, i1, value, seq = parsed
    if k0 == k1 and i0 == i1 and value is None:
        msgs = ed.toggle(k0, i0)
    else:
        msgs = ed.set_region(k0, k1, i0, i1, value)
    ss.editor_msgs = list(msgs)
    ss.grid_ack = max(int(ss.get("grid_ack", 0)), seq)


def _on_grid_edit() -> None:  # the component's callback: runs before the fragment reruns
    _apply_grid_edit(pending_edit())


def _apply_hook(ed: MaskEditor) -> None:
    """Edits queued under ``GRID_HOOK`` / ``SELECTION_HOOK`` (tests, automation)."""
    if (edit := st.session_state.pop(GRID_HOOK, None)) is not None:
        _apply_grid_edit(edit)
    cells = [tuple(c) for c in st.session_state.pop(SELECTION_HOOK, None) or []]
    if not cells:
        return
    mode = CLICK_MODES[st.session_state.get("click_mode", "Toggle")]
    msgs = ed.toggle(*cells[0]) if len(cells) == 1 and mode is None else ed.set_cells(cells, mode)
    st.session_state.editor_msgs = list(msgs)
    st.session_state.editor_note = None


def readouts(ctx: ModelContext, ed: MaskEditor) -> None:
    s = ed.summary(ctx)
    c = st.columns(4)
    c[0].metric("MACs per image", format_macs(s["macs"]), f"{100 * s['ratio'] - 100:+.1f} % vs plain",
                delta_color="inverse", help=f"plain model: {format_macs(s['macs_base'])}")
    c[1].metric("MACs % of original", f"{100 * s['ratio']:.1f} %")
    c[2].metric("Computed cells", f"{s['computed']} / {s['cells']}")
    c[3].metric("Ideal speedup (MACs)", f"{s['mac_speedup']:.2f}×")
    g = float(st.session_state.get("guidance", ctx.default_guidance)) if ctx.supports_guidance else 1.0
    cfg = (f" · one model pass per step: with guidance {g:g} a generation runs two, "
           f"{format_macs(2 * s['macs'])} per image (×2 CFG, section 3)" if g > 1 else "")
    st.caption(f"Mask: {s['source']}{' (edited)' if s['edited'] else ''} · hash {s['hash']} · "
               f"{presenter.reuse_text(s['reuse'])}{cfg}")


def editor_panel(ctx: ModelContext, ed: MaskEditor) -> None:
    st.subheader("2 · Edit the mask")
    st.session_state.app_hash = ed.hash  # the mask the rest of this page is drawn for
    st.session_state.reuse_mode = ed.reuse  # the editor decides (a loaded file or point sets it)
    st.radio(presenter.REUSE_TITLE, list(presenter.REUSE_LABELS), format_func=presenter.REUSE_LABELS.get,
             horizontal=True, key="reuse_mode", help=presenter.REUSE_HELP, on_change=_set_reuse)
    _editor_fragment(ctx, ed)


def _set_reuse() -> None:
    """on_change of the reuse control (outside the editor fragment: the whole page follows the mode)."""
    ss = st.session_state
    if (ed := ss.get("editor")) is None:
        return
    try:
        msgs = ed.set_reuse(ss.get("reuse_mode"))
    except BlockmaskError as e:
        msgs = [Message("error", f"{str(e)[0].upper()}{str(e)[1:]}; the mode is kept.")]
    flash(msgs, "editor")


@st.fragment
def _editor_fragment(ctx: ModelContext, ed: MaskEditor) -> None:
    """The editor reruns on its own when the grid is edited (a Streamlit fragment): the readouts update
    without waiting for the rest of the page (the grid itself has already redrawn in the browser). Once they are drawn, a changed mask
    reruns the whole page so images and plots follow (see the end of this function)."""
    _apply_hook(ed)
    for m in st.session_state.get("editor_msgs", []):
        show(m)
    readouts(ctx, ed)
    st.caption("Rows are sampling steps (top = noisiest, with the scheduler timestep t); columns are units in "
               "execution order, grouped by block (dotted lines). **Click** a cell to change it, or **drag** across "
               "cells to change a whole region (action below). Hover for unit name, step, timestep and unit MACs. "
               "Dark blue = computed, grey = reused from the cache, orange-red = removed by rectification.")
    mode = CLICK_MODES[st.radio("Click / drag action", list(CLICK_MODES), horizontal=True, key="click_mode")]
    show_pre = st.session_state.get("show_pre", False) and ed.pre_rectify is not None
    mask = ed.pre_rectify if show_pre else ed.mask
    delta = delta_from_meta(ed.meta, ed.steps)[0]
    delta = delta if delta is not None else st.session_state.get("delta", {}).get((ctx.key, ed.steps))
    payload = figures.grid_payload(ctx, mask, removed=None if show_pre else ed.removed, mode=MODES[mode],
                                   readonly=show_pre, ack=st.session_state.get("grid_ack", 0), delta=delta)
    mask_grid(payload, on_edit=_on_grid_edit)
    if show_pre:
        st.caption("Showing the mask before rectification (read-only): untick the box below to edit.")
    c1, c2, c3 = st.columns([3, 3, 3])
    # The buttons edit in on_click callbacks (:func:`_button_edit`): a callback runs before this fragment
    # reruns, so the grid drawn in that same run already shows the result (Rectify → redrawn in one run).
    with c1:
        st.markdown("**Whole step**")
        st.number_input("step k", 0, ed.steps - 1, min(1, ed.steps - 1), key="row_k")
        a, b = st.columns(2)
        a.button("Compute step", key="row_on", on_click=_button_edit, args=(ctx, "row_on"))
        b.button("Reuse step", key="row_off", on_click=_button_edit, args=(ctx, "row_off"))
    with c2:
        st.markdown("**Whole unit**")
        # keyed by model: a switch never leaves another model's unit in the box (issue 28)
        st.selectbox("unit", range(ed.shape[1]), format_func=lambda j: f"{j}: {ctx.units[j].name}",
                     key=_unit_key(ctx, ed))
        a, b = st.columns(2)
        a.button("Compute unit", key="col_on", on_click=_button_edit, args=(ctx, "col_on"))
        b.button("Reuse unit", key="col_off", on_click=_button_edit, args=(ctx, "col_off"))
    with c3:
        st.markdown("**History**")
        a, b, c = st.columns(3)
        a.button("Undo", key="undo", disabled=not ed.undo_stack, on_click=_button_edit, args=(ctx, "undo"))
        b.button("Redo", key="redo", disabled=not ed.redo_stack, on_click=_button_edit, args=(ctx, "redo"))
        c.button("Reset", key="reset", help="Back to the loaded mask", on_click=_button_edit, args=(ctx, "reset"))
    st.markdown("**Rectification** — removes *dead work*: computed cells whose output nobody reads (no live unit "
                "uses it at that step, and its cache is overwritten before any later step reads it). Exact: the "
                "images do not change.")
    a, b = st.columns([1, 3])
    a.button("Rectify", key="rectify", type="primary", on_click=_button_edit, args=(ctx, "rectify"))
    b.checkbox("Show the mask before rectification", key="show_pre", disabled=ed.pre_rectify is None,
               help="Removed cells are drawn in orange-red on the rectified mask.")
    note = st.session_state.get("editor_note")
    if note is not None and note[0] == ed.hash:  # the last button's result, while its mask is shown
        for m in note[1]:
            show(m)
    show_flash("editor")
    if st.session_state.get("app_hash") != ed.hash:  # edited here: now bring the rest of the page up to date
        # A rerun clears the messages Streamlit has not sent yet (ForwardMsgQueue.clear), so give the server
        # a moment to send this fragment's readouts first; without it about half the clicks showed the new
        # MACs only after the whole page had rerun (median 345 ms vs 97 ms, benchmarks/app_latency.py).
        time.sleep(FLUSH_S)
        st.rerun()


def _unit_key(ctx: ModelContext, ed: MaskEditor) -> str:
    return f"col_i:{ctx.spec}:{ed.shape[1]}"


def _button_edit(ctx: ModelContext, what: str) -> None:
    """on_click of the editor's buttons (step, unit, history, Rectify). Their messages stay below the
    buttons while the mask they describe is shown (``editor_note``: the page rerun that follows would
    drop a one-time message)."""
    ss = st.session_state
    ed = ss.get("editor")
    if ed is None:
        return
    k, i = int(ss.get("row_k", 1)), int(ss.get(_unit_key(ctx, ed), 0) or 0)
    msgs = {"row_on": lambda: ed.set_row(k, True), "row_off": lambda: ed.set_row(k, False),
            "col_on": lambda: ed.set_column(i, True), "col_off": lambda: ed.set_column(i, False),
            "undo": ed.undo, "redo": ed.redo, "reset": ed.reset, "rectify": lambda: ed.rectify(ctx)}[what]()
    ss.editor_msgs = []
    ss.editor_note = (ed.hash, list(msgs))


def _edit(msgs: list[Message], where: str = "editor") -> None:
    flash(msgs, where)
    st.rerun()


# --- analysis plots --------------------------------------------------------------------------
def analysis_panel(ctx: ModelContext, ed: MaskEditor) -> None:
    st.subheader("4 · Where does the mask save work?")
    t1, t2, t3 = st.tabs(["Δ_k and λ_k", "MACs per step", "Computed fraction per unit"])
    ts = ctx.timesteps(ed.steps)
    with t1:
        st.caption("Δ_k: relative change of the model output between consecutive steps (METHOD.md Eq. 9). Where it "
                   "is small, reusing cached unit outputs is safe; training gives those steps a large sparsity "
                   "weight λ_k (Eq. 10) and protects the sensitive ones.")
        delta, lam = delta_from_meta(ed.meta, ed.steps)
        store = st.session_state.setdefault("delta", {})
        dkey = (ctx.key, ed.steps)
        if delta is None and dkey in store:
            delta = store[dkey]
        if delta is None:
            st.info("This mask has no Δ_k in its metadata.")
            if st.button("Compute Δ_k (one unmasked run)", key="delta_btn"):
                bar = st.progress(0.0, "unmasked run…")
                try:
                    store[dkey] = compute_delta(ctx, ed.steps, prompt=current_prompt(ctx),
                                                progress=lambda f, t: bar.progress(min(1.0, f), t))
                except BlockmaskError as e:
                    st.error(str(e))
                else:
                    st.rerun()  # redraw the tab without the "no Δ_k" note and its button
                bar.empty()
        if delta is not None and lam is None:
            lam = default_lambda(delta)
            st.caption("λ_k shown is what training with default settings would use for this Δ_k.")
        if delta is not None or lam is not None:
            st.plotly_chart(figures.delta_figure(delta, lam, ts), width="stretch", key="delta_fig")
    with t2:
        st.caption("MACs of each step under the current mask; the dashed line is the plain model.")
        st.plotly_chart(figures.step_macs_figure(ctx, ed.mask), width="stretch", key="step_macs_fig")
    with t3:
        st.caption("How often each unit is computed over the K steps (colour = block).")
        st.plotly_chart(figures.unit_fraction_figure(ctx, ed.mask), width="stretch", key="unit_frac_fig")


def current_prompt(ctx: ModelContext):
    """The prompt section 3 resolved on this run of the page (None: none, or another model's)."""
    key, prompt = st.session_state.get("current_prompt", (None, None))
    return prompt if key == ctx.spec else None


def train_panel(ctx: ModelContext, ed: MaskEditor) -> None:
    with st.expander("5 · Train a mask (optional)"):
        st.caption("Learns the mask one sampling step at a time (METHOD.md §2): at each step, scores decide which "
                   "units may reuse their cache while the output stays close to the plain model; λ sets how hard "
                   "sparsity is pushed (larger λ → fewer MACs, lower fidelity). The result is rectified and loaded "
                   "into the editor (undo brings your mask back).")
        c = st.columns(4)
        lam = c[0].number_input("λ scale", 0.0, 100.0, 1.0, 0.1, format="%.3f", key="t_lam")
        use_budget = c[1].checkbox("Target a MAC budget", False, key="t_use_budget",
                                   help="Searches λ until the rectified mask reaches the budget (several runs).")
        budget = c[1].number_input("MAC budget (fraction)", 0.05, 1.0, 0.6, 0.05, key="t_budget",
                                   disabled=not use_budget)
        iters = c[2].number_input("iterations per step", 1, 500, 20, key="t_iters")
        batch = c[3].number_input("batch (noise seeds)", 1, 64, 4, key="t_batch")
        if ed.steps < 2:
            st.warning("Training needs at least 2 sampling steps.")
            return
        note = training.estimate_note(ctx, ed.steps, int(iters), int(batch))
        (st.warning if ctx.wb.device.type == "cpu" else st.caption)(
            f"{note}{' A budget search runs training several times.' if use_budget else ''} "
            + ("Training on CPU is slow and blocks generation on this model for everyone until it ends."
               if ctx.wb.device.type == "cpu" else ""))
        show_flash("train")
        if st.session_state.get("t_cancel"):
            st.info("Training cancelled; the editor keeps its mask.")
        if ctx.num_classes or ctx.supports_guidance or ctx.takes_text:
            st.caption("Training uses the class label, guidance scale and prompt set in section 3.")
        if st.button("Start training", key="t_start"):
            st.button("Cancel training", key="t_cancel",
                      help="Stops the run at once (this reruns the page); nothing is loaded.")
            bar = st.progress(0.0, "measuring Δ_k (one unmasked run)…")
            chart = st.empty()
            curve = training.Curve()

            def tick(f, t):
                bar.progress(min(1.0, f), t)
                chart.plotly_chart(training.curve_figure(curve), key=f"t_curve_{len(curve.k)}")

            try:
                label = int(st.session_state.get("label", 0)) if ctx.num_classes else None
                g = float(st.session_state.get("guidance", 1.0)) if ctx.supports_guidance else 1.0
                mask, source, meta = training.train(ctx,
                                                    TrainSettings(ed.steps, lam=lam, target_macs=budget if use_budget else None,
                                                                  iters=iters, batch=batch),
                                                    Draw(class_label=label, guidance_scale=g, prompt=current_prompt(ctx)),
                                                    progress=tick, curve=curve)
                msgs = ed.load(mask, source=source, meta=meta)
                if mask.all():
                    msgs.append(Message("warning", training.ALL_ONES_NOTE))
                _edit(msgs, "train")
            except BlockmaskError as e:
                st.error(f"Training failed: {e}")
            finally:
                bar.empty()
