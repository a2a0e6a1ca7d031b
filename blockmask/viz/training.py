"""Mask training from the apps: a thin wrapper around :func:`blockmask.learning.run.run_training`
(METHOD.md §2–3) that reports progress as (fraction, text) with a time estimate measured on the
steps already trained, records a live loss/MAC curve, can be cancelled, and returns a mask for the
editor."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import plotly.graph_objects as go

from blockmask.core.errors import BlockmaskError
from blockmask.learning.run import RunOptions, run_training
from blockmask.learning.train import TrainConfig
from blockmask.viz.context import Draw, ModelContext
from blockmask.viz.prompts import condition

Progress = Callable[[float, str], None]
ESTIMATE_NOTE = ("The time estimate is measured: it appears in the progress bar once the first sampling step has "
                 "trained (each later step costs about the same).")
ALL_ONES_NOTE = ("Training kept every unit (the mask is all ones, no MACs saved): λ is too small for this model "
                 "and K. Try a larger λ or a MAC budget.")


class Cancelled(BlockmaskError):
    """The user cancelled a training run (nothing was loaded)."""


@dataclasses.dataclass
class Curve:
    """What the live training plot shows: one point per trained sampling step."""

    k: list = dataclasses.field(default_factory=list)
    loss: list = dataclasses.field(default_factory=list)
    macs: list = dataclasses.field(default_factory=list)  # cumulative MAC ratio of rows 0..k
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def add(self, rep) -> None:
        self.k.append(rep.k)
        self.loss.append(rep.loss_last)
        self.macs.append(rep.macs_ratio)

    def eta_s(self, total: int) -> float | None:
        """Seconds left, from the measured time per trained step (None before the first step)."""
        if not self.k:
            return None
        per = (time.perf_counter() - self.started) / len(self.k)
        return per * max(0, total - len(self.k))


def eta_text(secs: float | None) -> str:
    if secs is None:
        return "estimating after the first step…"
    return f"about {secs / 60:.1f} min left" if secs > 90 else f"about {secs:.0f} s left"


def curve_figure(c: Curve) -> go.Figure:
    """Loss (left) and cumulative MAC ratio (right) over the trained steps."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=c.k, y=c.loss, name="loss (last iteration)", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=c.k, y=c.macs, name="MACs so far (fraction)", mode="lines", yaxis="y2",
                             line=dict(dash="dash")))
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=20, b=10), xaxis_title="sampling step k",
                      yaxis=dict(title="loss", type="log"), yaxis2=dict(title="MACs", overlaying="y", side="right",
                                                                        range=[0, 1.05], tickformat=".0%"),
                      legend=dict(orientation="h", yanchor="top", y=-0.3, x=0))
    return fig


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What the apps' training panel sets: ``steps`` (K), the MAC penalty ``lam`` (λ) or a MAC budget
    ``target_macs`` (a fraction; λ is then searched), ``iters`` optimiser iterations per step on a noise
    batch of ``batch``."""

    steps: int
    lam: float = 1.0
    target_macs: float | None = None
    iters: int = 20
    batch: int = 4


def train(ctx: ModelContext, settings: TrainSettings, draw: Draw = Draw(), *, progress: Progress | None = None,
          curve: Curve | None = None, should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, str, dict]:
    """Train a K×N mask for this model (rectified); returns (mask, source label, meta with Δ_k/λ_k).

    ``draw``: the seed, class label, guidance and (text models) prompt the run trains on; its
    ``num_images`` is not used. ``curve`` collects one point per trained step; ``should_stop()``
    returning True cancels the run (raises :class:`Cancelled`; the model lock and temp files are
    released). Holds the model's lock for the whole run (masked hooks are per instance): other users of
    the same model wait. Raises BlockmaskError for invalid settings. A text model trains on
    ``draw.prompt`` (a :class:`~blockmask.viz.prompts.Prompt`: typed prompts, embeddings, or random
    embeddings asked for) and is refused without one.
    """
    s, class_label, guidance_scale = settings, draw.class_label, draw.guidance_scale
    target_macs = s.target_macs
    cfg = TrainConfig(steps=int(s.steps), iters=int(s.iters), batch=int(s.batch), lam=float(s.lam), seed=int(draw.seed),
                      guidance_scale=float(guidance_scale),
                      class_labels=None if class_label is None else (int(class_label),))
    curve = curve if curve is not None else Curve()
    cond = None
    if ctx.takes_text:
        cond = condition(ctx, class_label, float(guidance_scale), draw.prompt)

    def cb(rep):
        if should_stop is not None and should_stop():
            raise Cancelled("training cancelled; the editor keeps its mask")
        curve.add(rep)
        if progress is not None:
            left = None if target_macs else curve.eta_s(rep.steps - 1)  # a budget search runs several times
            progress((rep.k + 1) / rep.steps, f"step {rep.k + 1}/{rep.steps}: kept {rep.kept:.0%}, MACs so far "
                                              f"{rep.macs_ratio:.0%}, loss {rep.loss_last:.4f} · {eta_text(left)}")

    curve.started = time.perf_counter()
    with ctx.lock, tempfile.TemporaryDirectory(prefix="blockmask-train-") as d:
        mf, summary = run_training(ctx.wb, cfg, Path(d) / "trained.json", RunOptions(target_macs=target_macs),
                                   callback=cb, progress=False, condition=cond)
    label = f"trained here (λ={cfg.lam:g}{f', budget {target_macs:.0%}' if target_macs else ''}, " \
            f"{summary['train_seconds']:.0f} s)"
    return mf.mask, label, mf.meta


def estimate_note(ctx: ModelContext, steps: int, iters: int, batch: int) -> str:
    """What to say before a run starts (the real estimate is measured during the run)."""
    where = "GPU" if ctx.wb.device.type == "cuda" else "CPU"
    return f"{steps - 1} steps × {iters} iterations × batch {batch} on this {where}. {ESTIMATE_NOTE}"
