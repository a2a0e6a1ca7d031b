"""Event handlers of the Gradio demo (app/gradio_demo.py), kept free of layout so tests call them
directly. Each handler takes the per-user :class:`Session` (``gr.State``) plus widget values and
returns plain values; user mistakes become ``gr.Warning`` toasts and never lose state.
Loaded models are shared across users (module cache, read-only)."""

from __future__ import annotations

import dataclasses
import math
import tempfile
import threading
from pathlib import Path

import gradio as gr

from blockmask.costs import format_macs
from blockmask.errors import BlockmaskError
from blockmask.viz import MaskEditor, Message, figures, presets
from blockmask.viz.compare import clamp_images, compare, compute_delta, default_lambda, delta_from_meta, upscale
from blockmask.viz.context import (FALLBACK_SPEC, ModelContext, default_model_spec, load_context, spec_label,
                                   with_scheduler)

try:  # ZeroGPU on Hugging Face Spaces; a no-op elsewhere
    import spaces

    gpu = spaces.GPU
except ImportError:  # pragma: no cover - depends on the environment
    def gpu(fn):
        return fn

_MODELS: dict[str, ModelContext] = {}
_LOCK = threading.Lock()
MAX_STEPS = 1000


def get_context(spec: str, scheduler: str) -> ModelContext:
    """Shared, read-only model context (loaded once per spec, rebuilt cheaply per scheduler)."""
    with _LOCK:
        if spec not in _MODELS:
            _MODELS[spec] = load_context(spec, "ddim", device="auto")
        base = _MODELS[spec]
    return base if scheduler == base.scheduler_name else with_scheduler(base, scheduler)


@dataclasses.dataclass
class Session:
    """Per-user state: the model choice and the mask editor."""

    spec: str
    scheduler: str
    editor: MaskEditor
    delta: dict = dataclasses.field(default_factory=dict)  # (ctx key, K) → Δ_k
    show_pre: bool = False

    @property
    def ctx(self) -> ModelContext:
        return get_context(self.spec, self.scheduler)


def notify(msgs: list[Message]) -> None:
    for m in msgs:
        (gr.Warning if m.level in ("warning", "error") else gr.Info)(m.text)


def new_session(spec: str | None = None, steps: int | None = None, scheduler: str = "ddim") -> Session:
    spec = spec or default_model_spec()
    ctx = get_context(spec, scheduler)
    steps = int(steps or presets.default_steps(ctx, fallback=20))
    mask, source, meta = presets.initial_mask(ctx, steps)
    return Session(spec, scheduler, MaskEditor.create(ctx, steps, mask, source=source, meta=meta))


# --- view ------------------------------------------------------------------------------------
def readout_md(s: Session) -> str:
    ctx, ed = s.ctx, s.editor
    v = ed.summary(ctx)
    lines = [f"**Model** {ctx.label} · K={ed.steps} · {s.scheduler} · device {ctx.wb.device}",
             f"**MACs per image** {format_macs(v['macs'])} of {format_macs(v['macs_base'])} "
             f"(**{100 * v['ratio']:.1f} %** of the original, ideal speedup {v['mac_speedup']:.2f}×) · "
             f"computed cells {v['computed']}/{v['cells']}",
             f"Mask: {v['source']}{' (edited)' if v['edited'] else ''} · hash `{v['hash']}`"]
    ts = ctx.timesteps(ed.steps)
    lines.append(f"Mask image: rows = steps k=0 (t={ts[0]}, top, noisiest) … k={ed.steps - 1} (t={ts[-1]}); "
                 f"columns = units by block: {figures.column_legend(ctx)}")
    if ed.removed is not None:
        lines.append(f"Last rectification removed **{int(ed.removed.sum())}** cell(s) (orange-red).")
    if ctx.random_init:
        lines.append("⚠️ **Random init model**: images look like noise; masks, MACs and timing behave normally.")
    return "\n\n".join(lines)


def view(s: Session):
    """(state, mask image, readout, per-step MACs plot, per-unit plot, Δ/λ plot)."""
    ctx, ed = s.ctx, s.editor
    pre = s.show_pre and ed.pre_rectify is not None
    img = figures.mask_image(ctx, ed.pre_rectify if pre else ed.mask, None if pre else ed.removed)
    delta, lam = delta_from_meta(ed.meta, ed.steps)
    delta = delta if delta is not None else s.delta.get((ctx.key, ed.steps))
    if delta is not None and lam is None:
        lam = default_lambda(delta)  # what training with default settings would use
    dfig = figures.delta_figure(delta, lam, ctx.timesteps(ed.steps)) if (delta is not None or lam is not None) else None
    return (s, img, readout_md(s), figures.step_macs_figure(ctx, ed.mask), figures.unit_fraction_figure(ctx, ed.mask),
            dfig)


def preset_choices(s: Session) -> list[tuple[str, str]]:
    return [(p.label, p.key) for p in presets.presets(s.ctx, s.editor.steps)]


# --- model, steps, scheduler -----------------------------------------------------------------
def load_model(s: Session | None, spec: str, steps, scheduler: str):
    """Switch model / K / scheduler; on any problem warn and keep the current session."""
    spec = (spec or "").strip() or default_model_spec()
    try:
        k = int(steps)
        if not 1 <= k <= MAX_STEPS:
            raise ValueError
    except (TypeError, ValueError):
        gr.Warning(f"Sampling steps must be a whole number in 1..{MAX_STEPS}, got {steps!r}; nothing changed.")
        return _with_presets(s or new_session())
    try:
        ns = new_session(spec, k, scheduler)
        if s is not None and (s.spec, s.scheduler, s.editor.steps) == (ns.spec, ns.scheduler, k):
            return _with_presets(s)  # nothing changed: keep the user's edits
        return _with_presets(ns)
    except Exception as e:  # noqa: BLE001 — an unloadable model must not break the app
        why = str(e) if isinstance(e, BlockmaskError) else f"{type(e).__name__}: {str(e)[:200]}"
        keep = s if s is not None else new_session(FALLBACK_SPEC, k, "ddim")
        gr.Warning(f"Could not load {spec!r}: {why}. Still using {spec_label(keep.spec)}.")
        return _with_presets(keep)


def _with_presets(s: Session):
    choices = preset_choices(s)
    return (*view(s), gr.update(choices=choices, value=choices[0][1]))


# --- edits -----------------------------------------------------------------------------------
def click_cell(s: Session, mode: str, evt: gr.SelectData):
    """The mask image was clicked at pixel evt.index = [x, y]: edit the cell under it."""
    x, y = evt.index[:2]
    cell = figures.cell_at(s.ctx, s.editor.steps, x, y)
    if cell is None:
        gr.Info("That click fell between cells (on a block separator).")
        return view(s)
    value = {"Toggle": None, "Set computed": True, "Set reused": False}.get(mode)
    notify(s.editor.toggle(*cell) if value is None else s.editor.set_cells([cell], value))
    return view(s)


def toggle_cell(s: Session, k, i):
    try:
        notify(s.editor.toggle(int(k), int(i)))
    except (TypeError, ValueError):
        gr.Warning(f"Step and unit must be whole numbers, got {k!r}, {i!r}.")
    return view(s)


def set_region(s: Session, k0, k1, i0, i1, action: str):
    value = {"Toggle": None, "Set computed": True, "Set reused": False}.get(action)
    notify(s.editor.set_region(k0, k1, i0, i1, value))
    return view(s)


def set_row(s: Session, k, on: bool):
    notify(s.editor.set_row(k, on))
    return view(s)


def set_column(s: Session, i, on: bool):
    notify(s.editor.set_column(i, on))
    return view(s)


def undo(s: Session):
    notify(s.editor.undo())
    return view(s)


def redo(s: Session):
    notify(s.editor.redo())
    return view(s)


def reset(s: Session):
    notify(s.editor.reset())
    return view(s)


def rectify(s: Session):
    notify(s.editor.rectify(s.ctx))
    return view(s)


def show_pre(s: Session, flag: bool):
    s.show_pre = bool(flag)
    return view(s)


# --- presets and files -----------------------------------------------------------------------
def load_preset(s: Session, key: str, interval, branch, every, macs_ratio, seed):
    try:
        mask, source, meta = presets.build(s.ctx, key, s.editor.steps, interval=interval, branch=branch, every=every,
                                           macs_ratio=macs_ratio, seed=seed)
        notify(s.editor.load(mask, source=source, meta=meta))
    except BlockmaskError as e:
        gr.Warning(f"Preset: {e}")
    return view(s)


def upload_mask(s: Session, path):
    if path is None:
        return view(s)
    p = Path(path if isinstance(path, (str, Path)) else getattr(path, "name", ""))
    try:
        data = p.read_bytes()
    except OSError as e:
        gr.Warning(f"Could not read the uploaded file: {e}")
        return view(s)
    notify(s.editor.load_upload(s.ctx, data, p.name))
    return view(s)


def download_mask(s: Session) -> str:
    """Path of a temp JSON file with the current mask (for gr.DownloadButton / the API)."""
    d = Path(tempfile.mkdtemp(prefix="blockmask-"))
    out = d / s.editor.download_name(s.ctx)
    out.write_bytes(s.editor.download_bytes(s.ctx))
    return str(out)


# --- generation and Δ_k ----------------------------------------------------------------------
@gpu
def generate(s: Session, seed, num_images, class_label, guidance, progress=gr.Progress(track_tqdm=True)):
    """(original, masked, difference) PNG-ready arrays and a readout; state unchanged."""
    ctx = s.ctx
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise gr.Error(f"Seed must be a whole number, got {seed!r}.") from None
    n, msg = clamp_images(num_images)
    if msg:
        gr.Warning(msg[0].upper() + msg[1:] + ".")
    label = None
    if ctx.num_classes:
        try:
            label = int(class_label)
        except (TypeError, ValueError):
            raise gr.Error(f"Class label must be a whole number 0..{ctx.num_classes - 1}.") from None
    try:
        g = float(guidance) if ctx.supports_guidance and guidance is not None else 1.0
        r = compare(ctx, s.editor.mask, seed=seed, num_images=n, class_label=label, guidance_scale=g,
                    progress=lambda f, t: progress(min(1.0, f), desc=t))
    except BlockmaskError as e:
        raise gr.Error(str(e)) from None
    scale = max(1, 256 // max(r.original.shape[1], 1))
    psnr = "identical (∞ dB)" if math.isinf(r.psnr) else f"{r.psnr:.2f} dB"
    md = (f"**MACs per image** original {format_macs(r.macs_original)} · masked {format_macs(r.macs_masked)} "
          f"(**{r.macs_percent:.1f} %**)\n\n**Wall time** original {r.original_s:.3f} s · masked {r.masked_s:.3f} s · "
          f"**speedup {r.speedup:.2f}×**\n\n**PSNR** {psnr} · **MSE** {r.mse:.3e} · {r.num_images} image(s), "
          f"seed {seed}" + (" · masked run from cache" if r.cached else "")
          + f"\n\nDifference image amplified ×{r.diff_gain:.1f}.")
    return upscale(r.original, scale), upscale(r.masked, scale), upscale(r.difference, scale), md


@gpu
def compute_delta_plot(s: Session, progress=gr.Progress(track_tqdm=True)):
    ctx, ed = s.ctx, s.editor
    try:
        s.delta[(ctx.key, ed.steps)] = compute_delta(ctx, ed.steps, progress=lambda f, t: progress(min(1.0, f), desc=t))
    except BlockmaskError as e:
        gr.Warning(str(e))
    return view(s)

