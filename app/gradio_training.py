"""Training from the Gradio demo (app/gradio_demo.py): a generator handler that runs
:func:`blockmask.viz.training.train` in a worker thread, streams gr.Progress and a live loss/MAC curve,
stops at the next step when the user cancels, and loads the finished mask into the editor."""

from __future__ import annotations

import threading

import gradio as gr

from blockmask.core.errors import BlockmaskError
from blockmask.viz import prompts as prompt_src
from blockmask.viz import training
from blockmask.viz.context import Draw
from blockmask.viz.training import TrainSettings
from gradio_checks import Refused, apply, number, whole
from gradio_handlers import Session, view
from spaces_compat import gpu


TRAIN_GPU_S = 300  # ZeroGPU: the longest a training run may hold the GPU (the default is 60 s)
CANCELLED = "Training cancelled; the editor keeps its mask."


def cancelled() -> str:
    """The training status after Cancel (the cancelled generator can no longer update it)."""
    return CANCELLED


@gpu(duration=TRAIN_GPU_S)
def train_mask(s: Session, lam, use_budget, budget, iters, batch, class_label, guidance, progress=gr.Progress()):
    """Train a mask here (a generator: live curve while it runs; Cancel stops it at the next step).
    Yields (state, grid, …views…, curve plot, training status); the finished mask is loaded."""
    ctx, ed = s.ctx, s.editor
    if ed.steps < 2:
        raise Refused("Training needs at least 2 sampling steps.")
    lam = number(lam, "λ", 0, 100)
    target = number(budget, "MAC budget", 0.05, 1) if bool(use_budget) else None
    iters = whole(iters, "Iterations per step", 1, 500)
    batch = whole(batch, "Batch", 1, 64)
    label = whole(class_label, "Class label", 0, ctx.num_classes - 1) if ctx.num_classes else None
    g = number(guidance, "Guidance scale", 1, 20) if ctx.supports_guidance else 1.0
    try:
        prompt = prompt_src.pick(ctx, text=s.prompt_text, upload=s.prompt, random=s.random_prompts,
                                 cache=s.prompt_cache)
    except BlockmaskError as e:
        raise Refused(f"Training failed: {e}.") from None
    if prompt is not None and prompt.random:
        gr.Warning(prompt_src.RANDOM_NOTE)
    curve, stop, box = training.Curve(), threading.Event(), {}

    def work():
        try:
            box["out"] = training.train(ctx,
                                        TrainSettings(ed.steps, lam=lam, target_macs=target, iters=iters, batch=batch),
                                        Draw(class_label=label, guidance_scale=g, prompt=prompt), curve=curve,
                                        should_stop=stop.is_set, progress=lambda f, t: box.__setitem__("p", (f, t)))
        except Exception as e:  # noqa: BLE001 — reported below as one line
            box["err"] = e

    worker = threading.Thread(target=work, daemon=True, name="blockmask-train")
    skip = [gr.skip()] * len(view(s))
    progress(0.0, desc="measuring Δ_k (one unmasked run)…")
    worker.start()
    try:
        while worker.is_alive():
            worker.join(0.5)
            if "p" in box:
                f, t = box["p"]
                progress(min(1.0, f), desc=t)
                yield (*skip, training.curve_figure(curve), f"Training… {t}")
    finally:
        stop.set()  # a Cancel (the generator is closed) stops the worker at its next step
    if "err" in box:
        e = box["err"]
        why = str(e) if isinstance(e, BlockmaskError) else f"{type(e).__name__}: {str(e)[:200]}"
        raise Refused(f"Training failed: {why}.")
    mask, source, meta = box["out"]
    apply(ed.load(mask, source=source, meta=meta))
    note = training.ALL_ONES_NOTE if mask.all() else f"Loaded the trained mask ({source}); Undo brings yours back."
    if mask.all():
        gr.Warning(training.ALL_ONES_NOTE)
    yield (*view(s), training.curve_figure(curve), note)
