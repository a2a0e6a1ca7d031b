"""blockmask explorer (Streamlit): edit a K×N block mask, rectify it, compare original vs masked.

    streamlit run app/main.py

A thin view over :mod:`blockmask.viz`: widgets are read here, all work happens in the presenter.
Loaded models are shared across sessions (``st.cache_resource``, never mutated per user); each
user's mask, history and results live in ``st.session_state``. Set $BLOCKMASK_APP_MODEL to start
on another model spec (the tests use a tiny random-init config). Visitors choose among the models the
operator offers (bundled ones, plus ``--allow-model SPEC`` / $BLOCKMASK_APP_ALLOW):

    streamlit run app/main.py -- --allow-model ./my-unet --allow-model google/ddpm-cifar10-32

Masks from the hub or a folder (the "Load mask from the hub" field) only when the operator allows them:
``--allow-mask someone/`` (a prefix), ``--allow-mask someone/my-mask`` or $BLOCKMASK_APP_ALLOW_MASKS.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

import argparse  # noqa: E402

import streamlit as st  # noqa: E402

from blockmask.core.errors import BlockmaskError  # noqa: E402
from blockmask.core.schedulers import SCHEDULERS  # noqa: E402
from blockmask.viz import MaskEditor, Message, presets  # noqa: E402
from blockmask.viz.access import ENV_ALLOW, MaskPolicy, ModelPolicy, load_failed  # noqa: E402
from blockmask.viz.tour import TOUR  # noqa: E402
from blockmask.viz.context import (FALLBACK_SPEC, ModelContext, default_model_spec, load_context,  # noqa: E402
                                   model_choices, spec_label, with_scheduler)
from st_explorer import apply_pending, before_widgets, export_panel, frontier_panel, race_panel  # noqa: E402
from st_generate import generate_panel  # noqa: E402
from st_panels import analysis_panel, editor_panel, preset_panel, show_flash, train_panel  # noqa: E402

OTHER = "Other: hub id or local path…"  # offered only when the operator allows any spec ('*')
INTRO = ("Each **cell** of the mask is one network unit (a ResNet block or attention layer) at one sampling step. "
         "**Computed** cells run the unit; **reused** cells skip it and return the output cached at the last step "
         "where it ran. Neighbouring steps see nearly the same input, so many units change little between steps "
         "and their cached output is a good stand-in: fewer MACs, nearly the same image. With **Reused units: "
         "forecast** a reused cell returns a first-order forecast from the unit's last two computed values instead "
         "(no extra MACs).")


@st.cache_resource(show_spinner="Loading model, measuring units, MACs and the consumer graph…", max_entries=4)
def get_model(spec: str) -> ModelContext:
    """One loaded model per spec, shared by every session (read-only)."""
    return load_context(spec, "ddim", device="auto")


@st.cache_resource(max_entries=16)
def get_context(spec: str, scheduler: str) -> ModelContext:
    return with_scheduler(get_model(spec), scheduler)


def _flags() -> argparse.Namespace:
    """``--allow-model SPEC`` / ``--allow-mask ID`` given after ``--`` (repeatable)."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--allow-model", action="append", default=[])
    ap.add_argument("--allow-mask", action="append", default=[])
    return ap.parse_known_args(sys.argv[1:])[0]


def policy() -> ModelPolicy:
    """The models this app offers: bundled ones plus ``--allow-model`` (after ``--``) and $BLOCKMASK_APP_ALLOW."""
    return ModelPolicy.from_env(model_choices(), _flags().allow_model)


def mask_policy() -> MaskPolicy:
    """Hub ids / folders visitors may load masks from: ``--allow-mask`` and $BLOCKMASK_APP_ALLOW_MASKS."""
    return MaskPolicy.from_env(_flags().allow_mask)


def sidebar(pol: ModelPolicy) -> tuple[str, int, str]:
    """Model (public name), step count and scheduler from the sidebar (plain values)."""
    sb = st.sidebar
    sb.header("Model")
    choices = pol.choices() + ([OTHER] if pol.any_spec else [])
    pick = sb.selectbox("Model", choices, format_func=lambda n: n if n == OTHER else pol.label(n),
                        key="model_pick",
                        help="Bundled models are trained on MNIST; 'random init' builds the architecture with random "
                             f"weights (images are noise, but masks, MACs and speed behave the same). The operator "
                             f"offers more with --allow-model or ${ENV_ALLOW}.")
    spec = pick
    if pick == OTHER:
        spec = sb.text_input("Hub id or local folder", key="custom_spec", placeholder="google/ddpm-cifar10-32",
                             help="Loads when the folder exists or the hub is reachable; otherwise you get a message "
                                  "and the app keeps the previous model.").strip()
    sb.header("Sampling")
    steps = sb.number_input("Sampling steps K", 1, 1000, key="steps", step=1,
                            help="Rows of the mask. A mask only fits the step count it was made for.")
    sched = sb.selectbox("Scheduler", list(SCHEDULERS), key="scheduler",
                         help="Which diffusers scheduler places the K steps. Timesteps are shown on the mask rows.")
    return spec, int(steps), sched


def resolve_context(pol: ModelPolicy, name: str, sched: str) -> ModelContext:
    """Load the chosen model; on failure report it (one message for missing and unreadable) and keep
    the last model that worked."""
    good = st.session_state.get("good_spec", default_model_spec())
    if not name:
        st.sidebar.info("Type a hub id or folder to load another model.")
        return get_context(good, sched)
    try:
        spec = pol.resolve(name)
    except BlockmaskError as e:
        st.error(f"{e}. Still using {spec_label(good)}.")
        return get_context(good, sched)
    try:
        ctx = get_context(spec, sched)
        st.session_state.good_spec = spec
        for w in ctx.warnings:  # a fallback that changes meaning (default scheduler, cast weights)
            st.warning(w)
        return ctx
    except Exception as e:  # noqa: BLE001 — never let a model load take the app down
        why = load_failed(pol.name_of(spec), e)
        if spec == good:  # nothing loaded yet (or the last good model broke): use the random-init fallback
            good = FALLBACK_SPEC
            st.session_state.good_spec = good
        st.error(f"{str(why)[0].upper()}{str(why)[1:]}. Using {spec_label(good)} instead.")
    return get_context(good, sched)


def init_state() -> None:
    ss = st.session_state
    if "steps" not in ss:
        try:
            ss.steps = presets.default_steps(get_model(default_model_spec()), fallback=20)
        except Exception:  # noqa: BLE001 — the sidebar reports load errors
            ss.steps = 20
    ss.setdefault("scheduler", "ddim")
    ss.setdefault("flash", [])  # (panel, Message) pairs: each panel shows its own (st_panels.show_flash)
    before_widgets()  # a clicked frontier point's K and scheduler, before their widgets are drawn


def ensure_editor(ctx: ModelContext, steps: int) -> MaskEditor:
    """The user's editor for (model, scheduler, K): after a K or scheduler change on the same model, the
    edited mask resampled to the new K (history kept); after a model switch, the model's own first
    shipped mask (or all ones). A frontier point just clicked (app/st_explorer.py) is loaded instead."""
    if (ed := apply_pending(ctx, steps)) is not None:
        return ed
    ed = st.session_state.get("editor")
    if ed is not None and not ed.fits(ctx, steps) and ed.same_model(ctx):
        try:
            ed, msgs = ed.resampled(ctx, steps)
        except BlockmaskError as e:
            msgs = [Message("warning", f"Could not resample the mask to K={steps} ({e}); starting afresh.")]
            ed = None
        else:
            st.session_state.editor = ed
            st.session_state.pop("result", None)
        for m in msgs:  # next to the K / scheduler control just changed
            (st.sidebar.warning if m.level == "warning" else st.sidebar.info)(m.text)
    if ed is None or not ed.fits(ctx, steps):
        try:
            mask, source, meta = presets.initial_mask(ctx, steps)
        except BlockmaskError as e:
            st.warning(f"Could not build the initial mask: {e}")
            mask, source, meta = None, "all ones", {}
        ed = MaskEditor.create(ctx, steps, mask, source=source, meta=meta)
        st.session_state.editor = ed
        st.session_state.pop("result", None)
    return ed


def main() -> None:
    st.set_page_config(page_title="blockmask explorer", layout="wide")
    init_state()
    pol = policy()
    name, steps, sched = sidebar(pol)
    ctx = resolve_context(pol, name, sched)
    ed = ensure_editor(ctx, steps)
    st.title("blockmask: which units can reuse their cache?")
    st.caption(f"Model: **{ctx.label}** · device {ctx.wb.device} · K={steps} · {sched}")
    if ctx.random_init:
        st.warning("This model is **random init** (no trained weights installed): images look like noise, but the "
                   "mask editor, MACs, rectification and timing work exactly as with a trained model.")
    with st.expander("What am I looking at?", expanded=False):
        st.markdown(INTRO)
    with st.expander("Guided tour (4 steps, for a class)", expanded=False):
        step = st.segmented_control("Tour step", [t for t, _ in TOUR], default=TOUR[0][0], key="tour_step",
                                    label_visibility="collapsed")
        st.markdown(dict(TOUR).get(step or TOUR[0][0]))
    show_flash("top")  # model / K changes; the panels show their own messages next to their buttons
    preset_panel(ctx, ed, mask_policy())
    editor_panel(ctx, ed)
    generate_panel(ctx, ed)
    analysis_panel(ctx, ed)
    train_panel(ctx, ed)
    frontier_panel(ctx, ed)
    race_panel(ctx, ed)
    export_panel(ctx, ed)


main()
