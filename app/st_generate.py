"""Streamlit panel "Original vs masked" of the blockmask explorer (see app/main.py): the seed, images,
class label, guidance and prompt inputs, the side-by-side run through :func:`blockmask.viz.compare.compare`
and its speed, MAC and PSNR readouts. Per-user results are kept in ``st.session_state`` by mask hash."""

from __future__ import annotations

import math

import streamlit as st

from blockmask.hooks.costs import format_macs
from blockmask.core.errors import BlockmaskError
from blockmask.viz import MaskEditor, Message, figures, tables
from blockmask.viz.access import MAX_UPLOAD_BYTES, check_upload_size
from blockmask.viz.compare import MAX_IMAGES, clamp_images, compare, upscale
from blockmask.viz.context import ModelContext
from blockmask.viz.presenter import reuse_text
from blockmask.viz import prompts as prompt_src
from blockmask.viz.prompts import Prompt, load_prompt
from blockmask.viz.context import Draw
from st_panels import flash, show_flash


def _parse_seed(text: str) -> int | None:
    try:
        return int(str(text).strip())
    except ValueError:
        st.error(f"Seed must be a whole number, got {text!r}; keeping the previous result.")
        return None


def prompt_input(ctx: ModelContext) -> Prompt | None:
    """The prompt of a text-conditioned model (hidden for others): typed prompts, an embeddings upload, or
    random embeddings when ticked (:func:`blockmask.viz.prompts.pick`); kept per session and model."""
    if not ctx.takes_text:
        return None
    ss = st.session_state
    text = st.text_area("Prompts (one per line)", key="prompt_text", help=prompt_src.TEXT_HELP)
    rnd = st.checkbox("Random embeddings", False, key="random_prompts",
                      help="Sample on seeded random prompt embeddings instead of a prompt (on purpose only).")
    gen = ss.get("prompt_gen", 0)
    up = st.file_uploader(f"Prompt embeddings (.safetensors, max {MAX_UPLOAD_BYTES // 1_000_000} MB)",
                          type=["safetensors"], key=f"prompt_upload{gen or ''}",
                          max_upload_size=max(1, MAX_UPLOAD_BYTES // 1_000_000),
                          help="A safetensors file with 'prompt_embeds' (tokens × width), e.g. saved from a "
                               "pipeline's encode_prompt.")
    if up is not None and ss.get("last_prompt_upload") != up.file_id:
        ss.last_prompt_upload = up.file_id
        try:
            check_upload_size(up.size, up.name)
            ss.prompt = (ctx.spec, load_prompt(ctx, up.getvalue(), up.name))
        except BlockmaskError as e:
            ss.prompt_gen = gen + 1  # a refused file does not stay listed
            flash([Message("error", f"{e}; the previous prompt is kept.")], "generate")
            st.rerun()
    elif up is None and gen == ss.get("prompt_gen_seen", gen) and ss.get("prompt_seen_file"):
        ss.pop("prompt", None)  # the visitor removed the file
    ss.prompt_gen_seen, ss.prompt_seen_file = gen, up is not None
    key, upload = ss.get("prompt", (None, None))
    upload = upload if key == ctx.spec else None
    note = prompt_src.note(ctx, text=text, upload=upload, random=rnd)
    (st.warning if rnd else st.caption)(note)
    try:
        prompt = prompt_src.pick(ctx, text=text, upload=upload, random=rnd, cache=ss.setdefault("prompt_cache", {}))
    except BlockmaskError as e:
        st.error(f"Prompt: {e}")
        prompt = None
    ss.current_prompt = (ctx.spec, prompt)  # training (section 5) uses it too: st_panels.current_prompt
    return prompt


def generate_panel(ctx: ModelContext, ed: MaskEditor) -> None:
    st.subheader("3 · Original vs masked, same seeds")
    st.caption("Both runs start from the same noise; the difference image shows where the cache reuse changed "
               "the result (amplified). Wall times are measured in this process, one run after the other.")
    c = st.columns(6)
    seed_text = c[0].text_input("Seed", "0", key="seed")
    n_req = c[1].number_input(f"Images (max {MAX_IMAGES})", 0, 10_000, 2, key="num_images")
    label = None
    guidance = 1.0
    if ctx.num_classes:
        label = int(c[2].number_input(f"Class label (0–{ctx.num_classes - 1})", 0, ctx.num_classes - 1, 0, key="label"))
    if ctx.supports_guidance:
        guidance = float(c[3].number_input("Guidance scale", 1.0, 20.0, ctx.default_guidance, 0.5, key="guidance",
                                           help="Classifier-free guidance; 1 turns it off (half the MACs)."))
    reps = int(c[4].number_input("Timed repeats", 1, 10, 3, key="repeats",
                                 help="Plain and masked runs are timed alternately this many times after a "
                                      "warm-up; the speedup is the ratio of the medians, with its spread."))
    auto = c[5].checkbox("Auto-update", False, key="auto_generate",
                         help="Re-run the comparison (images and the timed repeats) after every edit. Off by default: "
                              "each run takes seconds, minutes on a busy CPU.")
    prompt = prompt_input(ctx)
    show_flash("generate")
    go = st.button("Generate", type="primary", key="generate")
    res = st.session_state.get("result")
    want = (ed.hash, seed_text, n_req, label, guidance, reps, prompt and prompt.digest, ed.reuse)
    stale = res is not None and res[0] != want
    if go or (auto and stale):
        seed = _parse_seed(seed_text)
        n, msg = clamp_images(n_req)
        if msg:
            st.warning(msg[0].upper() + msg[1:] + ".")
        if seed is not None:
            bar = st.progress(0.0, "starting…")
            try:
                out = compare(ctx, ed.mask,
                              Draw(seed=seed, num_images=n, class_label=label, guidance_scale=guidance, prompt=prompt),
                              repeats=reps, progress=lambda f, t: bar.progress(min(1.0, f), t),
                              session=st.session_state.setdefault("results", {}), reuse=ed.reuse)
                st.session_state.result = (want, out)
            except BlockmaskError as e:
                st.error(f"Generation failed: {e}")
            bar.empty()
    res = st.session_state.get("result")
    if res is None:
        st.info("Press **Generate** to sample with the plain and the masked model.")
        return
    if res[0][0] != ed.hash:
        st.warning("**Stale:** these images, speed and PSNR were computed for an earlier mask "
                   f"(`{res[0][0][:12]}`, now `{ed.hash[:12]}`); press Generate to update them.")
    elif res[0][-1] != ed.reuse:
        st.warning(f"**Stale:** these images, speed and PSNR were computed with {reuse_text(res[0][-1])}; the "
                   f"mask now runs with {reuse_text(ed.reuse)}. Press Generate to update them.")
    out = res[1]
    m = st.columns(4)
    cfg = " · ×2 CFG" if out.cfg else ""
    m[0].metric("MACs (masked)", format_macs(out.macs_masked),
                f"{out.macs_percent:.1f} % of {format_macs(out.macs_original)}{cfg}", delta_color="off",
                delta_arrow="off", help=f"Per image, whole sampling run; {out.macs_note}. The editor's readout "
                                        "counts one pass per step.")
    note = f"{out.speedup_lo:.2f}–{out.speedup_hi:.2f}× over {out.repeats}" if out.repeats > 1 else "1 run"
    if out.above_ideal:
        note = f"above the ideal: noise · {note}"
    elif out.unreliable:
        note = f"unreliable · {note}"
    m[1].metric("Speedup (median)", f"{out.speedup:.2f}×", note, delta_color="off", delta_arrow="off",
                help="Median plain ÷ median masked wall time of interleaved repeats; the range is the per-repeat "
                     "spread. It can never truly exceed the ideal (MACs): a higher reading is measurement noise.")
    m[2].metric("Ideal (MACs)", f"{out.mac_speedup:.2f}×", help="1 / MAC ratio: what a perfect implementation "
                "would gain. Noise-free.")
    m[3].metric("PSNR", "identical" if math.isinf(out.psnr) else f"{out.psnr:.1f} dB", f"MSE {out.mse:.2e}",
                delta_color="off", delta_arrow="off", help="Masked vs original images from the same seeds.")
    if out.unreliable:  # speedup above the ideal, spread repeats, a busy machine: said next to the number
        why = " A speedup above the ideal is never real: it is noise." if out.above_ideal else ""
        st.warning("**Unreliable timing:** " + "; ".join(out.unreliable) + f".{why} Try more repeats on a quieter "
                   "machine.")
    st.dataframe(tables.comparison_frame(out), hide_index=True, width="stretch", key="comparison_table")
    st.caption(f"Timed on {out.device} · batch {out.num_images} · median wall time plain {out.original_s:.3f} s, "
               f"masked {out.masked_s:.3f} s · masked run's {reuse_text(out.reuse)}.")
    if out.speedup < 1:
        st.caption("The masked run was not faster: each unit's cache hook costs a little time, which only pays off "
                   "when the mask reuses enough work (compare the ideal MAC speedup).")
    scale = max(1, -(-400 // max(1, min(out.original.shape[:2]))))
    i = st.columns(3)
    i[0].image(upscale(out.original, scale), caption="original (all units every step)")
    i[1].image(upscale(out.masked, scale), caption="masked (current mask)")
    i[2].image(upscale(out.difference, scale), caption=f"|difference| × {out.diff_gain:.1f}")
    if out.errors is not None:
        st.caption("Where the error enters: the masked run's latents against the original's after each step "
                   "(relative). A jump marks a step whose reuse cost quality; a falling curve means later steps "
                   "pull the trajectory back.")
        st.plotly_chart(figures.divergence_figure(out.errors, ctx.timesteps(ed.steps)), width="stretch",
                        key="divergence_fig")
    if out.cached:
        st.caption("Served from this session's results (same mask, seeds and settings); times are from when it ran.")
