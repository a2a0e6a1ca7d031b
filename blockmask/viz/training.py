"""Mask training from the apps: a thin wrapper around :func:`blockmask.train_run.run_training`
(METHOD.md §2–3) that reports progress as (fraction, text) and returns a mask for the editor."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .context import ModelContext

Progress = Callable[[float, str], None]


def estimate_note(ctx: ModelContext, steps: int, iters: int, batch: int) -> str:
    """A rough expectation to show before starting (one forward+backward per iteration and step)."""
    work = (steps - 1) * iters * batch * ctx.macs.full_step * 3  # fwd + bwd ≈ 3 forwards
    rate = 5e11 if ctx.wb.device.type == "cuda" else 1e10  # MAC/s, order of magnitude
    secs = work / rate
    where = "GPU" if ctx.wb.device.type == "cuda" else "CPU"
    if secs > 90:
        return f"≈ {secs / 60:.1f} min on this {where} (rough order of magnitude)"
    return f"≈ {secs:.0f} s on this {where}"


def train(ctx: ModelContext, steps: int, *, lam: float = 1.0, target_macs: float | None = None, iters: int = 20,
          batch: int = 4, seed: int = 0, class_label: int | None = None, guidance_scale: float = 1.0,
          progress: Progress | None = None) -> tuple[np.ndarray, str, dict]:
    """Train a K×N mask for this model (rectified); returns (mask, source label, meta with Δ_k/λ_k).

    Holds the model's lock for the whole run (masked hooks are per instance): other users of the
    same model wait. Raises BlockmaskError for invalid settings.
    """
    from ..train import TrainConfig
    from ..train_run import run_training

    cfg = TrainConfig(steps=int(steps), iters=int(iters), batch=int(batch), lam=float(lam), seed=int(seed),
                      guidance_scale=float(guidance_scale),
                      class_labels=None if class_label is None else (int(class_label),))

    def cb(rep):
        if progress is not None:
            progress((rep.k + 1) / rep.steps, f"step {rep.k + 1}/{rep.steps}: kept {rep.kept:.0%}, "
                                              f"MACs so far {rep.macs_ratio:.0%}, loss {rep.loss_last:.4f}")

    with ctx.lock, tempfile.TemporaryDirectory(prefix="blockmask-train-") as d:
        mf, summary = run_training(ctx.wb, cfg, Path(d) / "trained.json", target_macs=target_macs, callback=cb,
                                   progress=False)
    label = f"trained here (λ={cfg.lam:g}{f', budget {target_macs:.0%}' if target_macs else ''}, " \
            f"{summary['train_seconds']:.0f} s)"
    return mf.mask, label, mf.meta
