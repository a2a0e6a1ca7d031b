"""Event handlers of the Gradio demo (app/gradio_demo.py), kept free of layout so tests call them
directly. Each handler takes the per-user :class:`Session` (``gr.State``) plus widget values and
returns plain values. Every input is checked first: a bad one raises ``gr.Error`` with one line
naming it, and the session is left exactly as it was (nothing half-applied, no file left behind).
Loaded models are shared across users (a bounded LRU cache, read-only) and only models the
operator offers can be loaded (:mod:`blockmask.viz.access`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import gradio as gr

from blockmask.hooks.costs import format_macs
from blockmask.core.errors import BlockmaskError
from blockmask.core.schedulers import SCHEDULERS
from blockmask.viz import MaskEditor, figures, presets, tables
from blockmask.viz.access import LRU, MaskPolicy, ModelPolicy, load_failed
from blockmask.viz.compare import MAX_IMAGES, compare, compute_delta, default_lambda, delta_from_meta, upscale
from blockmask.viz import prompts as prompt_src
from blockmask.viz.prompts import Prompt, load_prompt
from blockmask.viz.context import ModelContext, default_model_spec, load_context, model_choices, with_scheduler
from blockmask.viz.presenter import reuse_text
from blockmask.viz.context import Draw
from gradio_checks import Refused, apply, choice, number, read_upload, whole
from spaces_compat import gpu  # spaces.GPU on ZeroGPU, a no-op elsewhere


MAX_STEPS = 1000
MAX_DOWNLOADS = 256  # mask files kept in the download folder (all users)
ALLOW_EXTRA: list[str] = []  # --allow-model SPEC of app/gradio_demo.py
ALLOW_MASKS: list[str] = []  # --allow-mask ID of app/gradio_demo.py
_MODELS: LRU[ModelContext] = LRU()
_SCHEDULED: LRU[ModelContext] = LRU(8)
_DOWNLOADS = tempfile.TemporaryDirectory(prefix="blockmask-dl-")  # removed when the app exits
ACTIONS = {"Toggle": None, "Set computed": True, "Set reused": False}
GRID_MODES = {None: "toggle", True: "on", False: "off"}


def policy() -> ModelPolicy:
    return ModelPolicy.from_env(model_choices(), ALLOW_EXTRA)


def get_context(spec: str, scheduler: str) -> ModelContext:
    """Shared, read-only model context (LRU of loaded models; schedulers share the weights)."""
    base = _MODELS.get(spec, lambda: load_context(spec, "ddim", device="auto"))
    if scheduler == base.scheduler_name:
        return base
    return _SCHEDULED.get((base.key, scheduler), lambda: with_scheduler(base, scheduler))


@dataclasses.dataclass
class Session:
    """Per-user state: the model choice, the mask editor and this user's results."""

    spec: str
    scheduler: str
    editor: MaskEditor
    delta: dict = dataclasses.field(default_factory=dict)  # (ctx key, K) → Δ_k
    show_pre: bool = False
    results: dict = dataclasses.field(default_factory=dict)  # this user's comparisons (compare(session=…))
    shown: tuple = ()  # key of the comparison on screen (mask hash first): stale when the mask differs
    grid_ack: int = 0  # last browser grid edit applied
    mode: str = "Toggle"  # what a click / drag on the grid does (ACTIONS)
    prompt: Prompt | None = None  # uploaded prompt embeddings (text-conditioned models only)
    prompt_text: str = ""  # typed prompts, one per line (encoded by the model's text encoder at generation)
    random_prompts: bool = False  # random embeddings, ticked on purpose
    prompt_cache: dict = dataclasses.field(default_factory=dict)  # typed prompts already encoded
    race: object = None  # the last race (blockmask.viz.race.Race; app/gradio_explorer.py)
    fr_selected: str | None = None  # the frontier point last loaded (ringed on the plot)
    fr_view: tuple = ()  # (model key, budget) of the frontier point list and budget note last sent
    fr_sent: tuple = ()  # what the frontier plot last sent shows (model, mask, budget, ring, live point)

    @property
    def ctx(self) -> ModelContext:
        return get_context(self.spec, self.scheduler)


# input checks (one gr.Error line each) live in gradio_checks.py


def new_session(spec: str | None = None, steps: int | None = None, scheduler: str = "ddim",
                previous: Session | None = None) -> Session:
    """A session on (spec, K, scheduler): the model's own first shipped mask, or, when ``previous`` was
    on the same model (another K or scheduler), its edited mask resampled to the new K, history kept."""
    spec = spec or default_model_spec()
    ctx = get_context(spec, scheduler)
    steps = int(steps or presets.default_steps(ctx, fallback=20))
    if previous is not None and previous.spec == spec and previous.editor.same_model(ctx):
        ed, msgs = previous.editor.resampled(ctx, steps)
        apply(msgs)
        return dataclasses.replace(previous, scheduler=scheduler, editor=ed, shown=(), show_pre=False)
    mask, source, meta = presets.initial_mask(ctx, steps)
    return Session(spec, scheduler, MaskEditor.create(ctx, steps, mask, source=source, meta=meta))


# --- view --------------------------------------------------------------------------------------
def readout_md(s: Session) -> str:
    ctx, ed = s.ctx, s.editor
    v = ed.summary(ctx)
    lines = [f"**Model** {ctx.label} · K={ed.steps} · {s.scheduler} · device {ctx.wb.device}",
             f"**MACs per image** {format_macs(v['macs'])} of {format_macs(v['macs_base'])} "
             f"(**{100 * v['ratio']:.1f} %** of the original, ideal speedup {v['mac_speedup']:.2f}×) · "
             f"computed cells {v['computed']}/{v['cells']}"
             + (" · one model pass per step (guidance > 1 runs two: the generation readout counts ×2)"
                if ctx.supports_guidance else ""),
             f"Mask: {v['source']}{' (edited)' if v['edited'] else ''} · hash `{v['hash']}` · "
             f"{reuse_text(v['reuse'])}"]
    if ed.removed is not None:
        lines.append(f"Last rectification removed **{int(ed.removed.sum())}** cell(s) (orange-red).")
    if ctx.random_init:
        lines.append("⚠️ **Random init model**: images look like noise; masks, MACs and timing behave normally.")
    return "\n\n".join(lines)


def grid_value(s: Session) -> str:
    """The browser grid's payload (JSON) for the mask on screen."""
    ctx, ed = s.ctx, s.editor
    pre = s.show_pre and ed.pre_rectify is not None
    p = figures.grid_payload(ctx, ed.pre_rectify if pre else ed.mask, removed=None if pre else ed.removed,
                             mode=GRID_MODES[ACTIONS[s.mode]], readonly=pre, ack=s.grid_ack, delta=_delta(s)[0])
    return json.dumps(p)


def _delta(s: Session):
    ctx, ed = s.ctx, s.editor
    delta, lam = delta_from_meta(ed.meta, ed.steps)
    delta = delta if delta is not None else s.delta.get((ctx.key, ed.steps))
    if delta is not None and lam is None:
        lam = default_lambda(delta)  # what training with default settings would use
    return delta, lam


def stale_md(s: Session) -> str:
    if not s.shown:
        return "Press **Generate** to sample with the plain and the masked model."
    if s.shown[0] != s.editor.hash:
        return ("⚠️ **Stale:** the images, speed and PSNR below were computed for mask "
                f"`{s.shown[0][:12]}`; the mask is now `{s.editor.hash[:12]}`. Press **Generate** to update.")
    if s.shown[-1] != s.editor.reuse:  # compare() keys end with the reuse mode
        return (f"⚠️ **Stale:** the results below ran with {reuse_text(s.shown[-1])}; the mask now runs with "
                f"{reuse_text(s.editor.reuse)}. Press **Generate** to update.")
    return f"Images, speed and PSNR below are for the current mask `{s.editor.hash[:12]}`."


def download_path(s: Session) -> str:
    """The current mask as a JSON file (content-addressed in one temp folder removed at exit)."""
    ctx, ed = s.ctx, s.editor
    data = ed.download_bytes(ctx)
    d = Path(_DOWNLOADS.name) / ed.hash[:16]
    out = d / ed.download_name(ctx)
    if not out.exists():
        d.mkdir(exist_ok=True)
        tmp = d / f".{out.name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, out)
        _prune(Path(_DOWNLOADS.name))
    return str(out)


def _prune(root: Path) -> None:
    """Keep the newest :data:`MAX_DOWNLOADS` mask files (every edit writes one; Gradio serves its own copy)."""
    dirs = sorted(root.iterdir(), key=lambda p: p.stat().st_mtime)
    for old in dirs[:-MAX_DOWNLOADS]:
        shutil.rmtree(old, ignore_errors=True)


def view(s: Session):
    """(state, grid, readout, stale note, per-step MACs plot, per-unit plot, Δ/λ plot, Δ note, presets table,
    download)."""
    st, grid, readout, stale = quick_view(s)
    return (st, grid, readout, stale, *plots(s), presets_table(s), download_path(s))


def presets_table(s: Session):
    """The current mask against the shipped masks and baselines at this K (a DataFrame), with the current
    mask's PSNR from this session's last generation when it was for this mask."""
    r = s.results.get(s.shown) if s.shown and s.shown[0] == s.editor.hash and s.shown[-1] == s.editor.reuse else None
    measured = None if r is None else (r.psnr, f"this session: seed {s.shown[3]}, {r.num_images} image(s)")
    return tables.presets_frame(s.ctx, s.editor.steps, s.editor.mask, measured)


def quick_view(s: Session):
    """(state, grid, readout, stale note): what a grid click needs at once (the plots follow)."""
    return s, grid_value(s), readout_md(s), stale_md(s)


def plots(s: Session):
    """(per-step MACs plot, per-unit plot, Δ/λ plot, Δ note)."""
    ctx, ed = s.ctx, s.editor
    delta, lam = _delta(s)
    has = delta is not None or lam is not None
    dfig = figures.delta_figure(delta, lam, ctx.timesteps(ed.steps)) if has else None
    dnote = ("Δ_k of this model and K (from the mask file or computed here)." if has else
             "This mask carries no Δ_k: press **Compute Δ_k** for one unmasked run.")
    return (figures.step_macs_figure(ctx, ed.mask), figures.unit_fraction_figure(ctx, ed.mask),
            gr.update(value=dfig, visible=has), dnote)


def after_edit(s: Session):
    """The rest of the page after a grid edit: (plots…, presets table, download)."""
    return (*plots(s), presets_table(s), download_path(s))


def preset_choices(s: Session) -> list[tuple[str, str]]:
    return [(p.label, p.key) for p in presets.presets(s.ctx, s.editor.steps)]


def condition_updates(ctx: ModelContext):
    """(prompt-embeddings upload, class label field, guidance field) shown for the models that take them."""
    n = ctx.num_classes
    prompt = gr.update(visible=ctx.takes_text, value=None)
    lab = gr.update(visible=bool(n), label=f"Class label (0–{(n or 1) - 1})", maximum=(n or 1) - 1)
    gui = gr.update(visible=ctx.supports_guidance, value=ctx.default_guidance)
    return prompt, lab, gui


def prompt_md(s: Session) -> str:
    """What the next generation is conditioned on (text-conditioned models)."""
    return prompt_src.note(s.ctx, text=s.prompt_text, upload=s.prompt, random=s.random_prompts)


def prompt_box_updates(ctx: ModelContext):
    """(prompts text box, random-embeddings box) shown, emptied, for text-conditioned models only."""
    return gr.update(visible=ctx.takes_text, value=""), gr.update(visible=ctx.takes_text, value=False)


def set_prompt_text(s: Session, text):
    """The typed prompts (one per line); encoded when the visitor generates. (state, prompt note)."""
    s.prompt_text = str(text or "")
    return s, prompt_md(s)


def set_random_prompts(s: Session, on):
    """Random embeddings on purpose: a gr.Warning says what that means. (state, prompt note)."""
    s.random_prompts = bool(on)
    if s.random_prompts and s.ctx.takes_text:
        gr.Warning(prompt_src.RANDOM_NOTE)
    return s, prompt_md(s)


def upload_prompt(s: Session, prompt_file):
    """Prompt embeddings (.safetensors with 'prompt_embeds') for a text-conditioned model; size-limited
    like mask uploads; a bad file: gr.Error, the previous embeddings kept. (state, prompt note)."""
    if prompt_file is None:  # the upload was cleared
        s.prompt = None
        return s, prompt_md(s)
    p = Path(prompt_file if isinstance(prompt_file, (str, Path)) else getattr(prompt_file, "name", ""))
    try:
        s.prompt = load_prompt(s.ctx, read_upload(p), p.name)
    except BlockmaskError as e:
        raise Refused(f"{e}; the previous prompt is kept.") from None
    except OSError:
        raise Refused(f"{p.name}: the upload could not be read; the previous prompt is kept.") from None
    return s, prompt_md(s)


# --- model, steps, scheduler -------------------------------------------------------------------
def load_model(s: Session | None, model: str, steps, scheduler: str):
    """Switch model / K / scheduler. Anything not offered or not loadable: gr.Error, session kept."""
    k = whole(steps, "Sampling steps K", 1, MAX_STEPS)
    scheduler = choice(scheduler, "Scheduler", list(SCHEDULERS))
    pol = policy()
    try:
        spec = pol.resolve(model)
    except BlockmaskError as e:
        raise Refused(str(e)[0].upper() + str(e)[1:] + ".") from None
    if s is not None and (s.spec, s.scheduler, s.editor.steps) == (spec, scheduler, k):
        ns = s  # nothing changed: keep the user's edits
    else:
        try:
            ns = new_session(spec, k, scheduler, previous=s)
        except Exception as e:  # noqa: BLE001 — one message for missing, unreadable and broken
            raise Refused(str(load_failed(pol.name_of(spec), e)).capitalize() + "; the current model is kept.") \
                from None
    for w in ns.ctx.warnings:  # a fallback that changes meaning (default scheduler, cast weights)
        gr.Warning(w)
    choices = preset_choices(ns)
    return (*view(ns), gr.update(choices=choices, value=choices[0][1]), *prompt_box_updates(ns.ctx), prompt_md(ns),
            *condition_updates(ns.ctx))


def model_dropdown() -> tuple[list[tuple[str, str]], str, bool]:
    """(choices as (label, value), start value, custom values allowed) — values are public names."""
    pol = policy()
    return ([(pol.label(name), name) for name, _ in pol.names], pol.name_of(default_model_spec()), pol.any_spec)


# --- presets and files -------------------------------------------------------------------------
@gpu(duration=240)
def _build_on_gpu(*args, **kwargs):
    """presets.build for the presets that run the model (``method:*``): on ZeroGPU they get the GPU."""
    return presets.build(*args, **kwargs)


def load_preset(s: Session, preset: str, interval, branch, every, macs_ratio, seed, progress=gr.Progress()):
    """Load a preset; the slow producers (``method:*``) report progress in the page."""
    choice(preset, "Preset", [k for _, k in preset_choices(s)])
    params = dict(interval=whole(interval, "interval", 1, 10_000), branch=whole(branch, "branch", 0, 10_000),
                  every=whole(every, "every", 1, 10_000), macs_ratio=number(macs_ratio, "MAC budget", 0, 1),
                  seed=whole(seed, "seed", 0, 2**32 - 1))
    try:
        prompt = prompt_src.pick(s.ctx, text=s.prompt_text, upload=s.prompt, random=s.random_prompts,
                                 cache=s.prompt_cache) if preset.startswith("method:") else None
        mask, source, meta = (_build_on_gpu if preset.startswith("method:") else presets.build)(
            s.ctx, preset, s.editor.steps, **params, prompt=prompt,
            progress=(lambda f, t: progress(min(1.0, max(0.0, f)), desc=t)) if preset.startswith("method:") else None)
    except BlockmaskError as e:
        raise Refused(f"Preset: {e}.") from None
    apply(s.editor.load(mask, source=source, meta=meta))
    return view(s)


def upload_mask(s: Session, mask_file):
    """Load an uploaded blockmask/1 JSON (size checked before it is read)."""
    if mask_file is None:
        raise Refused("No file was uploaded.")
    p = Path(mask_file if isinstance(mask_file, (str, Path)) else getattr(mask_file, "name", ""))
    try:
        data = read_upload(p)
    except BlockmaskError as e:
        raise Refused(f"{e}; the current mask is kept.") from None
    except OSError:
        raise Refused(f"{p.name}: the upload could not be read; the current mask is kept.") from None
    apply(s.editor.load_upload(s.ctx, data, p.name))
    return view(s)


def load_hub_mask(s: Session, source: str):
    """Load a mask from a hub repo id or a save_pretrained folder the operator allows (--allow-mask,
    $BLOCKMASK_APP_ALLOW_MASKS); anything else or a failed load: one gr.Error, mask kept."""
    msgs = s.editor.load_source(s.ctx, str(source or ""), MaskPolicy.from_env(ALLOW_MASKS))
    apply(msgs)
    return view(s)


def download_mask(s: Session) -> str:
    """Path of a JSON file with the current mask."""
    return download_path(s)


# --- generation and Δ_k ------------------------------------------------------------------------
@gpu
def generate(s: Session, seed, num_images, class_label, guidance, repeats=3, progress=gr.Progress()):
    """(state, original, masked, zoomed difference, readout, stale note, per-step divergence plot,
    original-vs-masked table)."""
    ctx = s.ctx
    seed = whole(seed, "Seed", 0, 2**32 - 1)
    n = whole(num_images, "Images", 1, MAX_IMAGES)
    reps = whole(repeats, "Timed repeats", 1, 10)
    label = whole(class_label, "Class label", 0, ctx.num_classes - 1) if ctx.num_classes else None
    g = number(guidance, "Guidance scale", 1, 20) if ctx.supports_guidance else 1.0
    try:
        prompt = prompt_src.pick(ctx, text=s.prompt_text, upload=s.prompt, random=s.random_prompts,
                                 cache=s.prompt_cache)
        if prompt is not None and prompt.random:
            gr.Warning(prompt_src.RANDOM_NOTE)
        r = compare(ctx, s.editor.mask,
                    Draw(seed=seed, num_images=n, class_label=label, guidance_scale=g, prompt=prompt), repeats=reps,
                    progress=lambda f, t: progress(min(1.0, f), desc=t), session=s.results, reuse=s.editor.reuse)
    except BlockmaskError as e:
        raise Refused(f"Generation failed: {e}.") from None
    s.shown = r.key
    scale = max(1, -(-400 // max(1, min(r.original.shape[:2]))))  # the short side ≥ 400 px (nearest neighbour)
    psnr = "identical (∞ dB)" if math.isinf(r.psnr) else f"{r.psnr:.2f} dB"
    cond = (f" · class {label}" if label is not None else "") + (f" · guidance {g:g}" if g != 1 else "") + (
        f" · prompt {prompt.label}" if prompt is not None else "")
    md = (f"**MACs per image** original {format_macs(r.macs_original)} · masked {format_macs(r.macs_masked)} "
          f"(**{r.macs_percent:.1f} %**; {r.macs_note})\n\n**Speedup** {'⚠️ ' if r.unreliable else ''}"
          f"{r.speed_text()}\n\n"
          f"Median wall time original {r.original_s:.3f} s · masked {r.masked_s:.3f} s\n\n"
          f"**PSNR** {psnr} · **MSE** {r.mse:.3e} · {r.num_images} image(s), seed {seed}{cond}"
          + (" · from this session's results (times are from when it ran)" if r.cached else "")
          + f"\n\nDifference image amplified ×{r.diff_gain:.1f}.")
    div = None if r.errors is None else figures.divergence_figure(r.errors, ctx.timesteps(s.editor.steps))
    return (s, upscale(r.original, scale), upscale(r.masked, scale), upscale(r.difference, scale), md, stale_md(s),
            gr.update(value=div, visible=div is not None), tables.comparison_frame(r))


@gpu
def compute_delta_plot(s: Session, progress=gr.Progress()):
    ctx, ed = s.ctx, s.editor
    try:
        prompt = prompt_src.pick(ctx, text=s.prompt_text, upload=s.prompt, random=s.random_prompts,
                                 cache=s.prompt_cache)
        s.delta[(ctx.key, ed.steps)] = compute_delta(ctx, ed.steps, prompt=prompt,
                                                     progress=lambda f, t: progress(min(1.0, f), desc=t))
    except BlockmaskError as e:
        raise Refused(f"Δ_k: {e}.") from None
    return view(s)
