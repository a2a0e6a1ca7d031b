"""Figures for the apps: plotly charts, the mask as a clickable image (Gradio), the payload of the
browser-side mask grid (Streamlit, app/components/mask_grid.js), and the mask as a plotly figure
(notebooks, static export: a scatter of square markers with ``customdata = [k, i, t]`` per cell).
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from blockmask.hooks.costs import format_macs
from blockmask.viz.context import ModelContext

COMPUTED = "#1f4e96"  # dark blue: the unit runs
REUSED = "#d9dde3"  # light grey: cached output reused
REMOVED = "#e4572e"  # orange-red: removed by rectification
ROW0 = "#0b2a5b"  # darker blue: the enforced first step
SEPARATOR = "#7a7a7a"
WEBGL_CELLS = 20000  # above this many cells use Scattergl


def short_name(name: str) -> str:
    """'down_blocks.1.attentions.0' → 'd1.a0', 'transformer_blocks.3.ff' → 'b3.ff'."""
    rep = (("down_blocks.", "d"), ("up_blocks.", "u"), ("mid_block", "mid"), ("transformer_blocks.", "b"),
           ("resnets.", "r"), ("attentions.", "a"))
    for a, b in rep:
        name = name.replace(a, b)
    return name


def column_legend(ctx: ModelContext) -> str:
    """'d0: 0 r0 · d1: 1 r0, 2 a0 · …' — which unit each mask column is, block by block."""
    parts = []
    for block, a, b in ctx.blocks():
        units = ", ".join(f"{i} {short_name(ctx.units[i].name)[len(short_name(block)) + 1:] or 'unit'}"
                          for i in range(a, b + 1))
        parts.append(f"{short_name(block)}: {units}")
    return " · ".join(parts)


def step_labels(ctx: ModelContext, steps: int) -> list[str]:
    ts = ctx.timesteps(steps)
    return [f"k={k} · t={t}" for k, t in enumerate(ts)]


def mask_figure(ctx: ModelContext, mask: np.ndarray, *, removed: np.ndarray | None = None,
                height: int | None = None, width_px: int = 900) -> go.Figure:
    """The mask as a plotly figure: K rows (steps, top = noisiest) × N columns (units, grouped by block)."""
    mask = np.asarray(mask, bool)
    k_steps, n = mask.shape
    ts = np.asarray(ctx.timesteps(k_steps))
    names = [u.name for u in ctx.units]
    macs = [format_macs(m) for m in ctx.macs.unit_macs]
    # square cells: the figure is sized from the cell size, not stretched to the page
    cell = float(np.clip(min((width_px - 170) / n, 640 / k_steps), 2, 26))
    size = max(1.5, cell - (2 if cell >= 8 else 0.5))
    margin = dict(l=120, r=20, t=60, b=100)
    plot_w = int(n * cell + margin["l"] + margin["r"])
    plot_h = height or int(k_steps * cell + margin["t"] + margin["b"])
    removed = np.zeros_like(mask) if removed is None else np.asarray(removed, bool)
    scatter = go.Scattergl if mask.size > WEBGL_CELLS else go.Scatter
    # One trace per unit column: the unit's name and MACs live on the trace (hover reads
    # %{fullData.name}), so per-point data are small numeric arrays (fast JSON: typed arrays).
    status = np.where(mask, 1, np.where(removed, 3, 2)).astype(np.int8)  # 1 computed, 2 reused, 3 removed
    status[0][mask[0]] = 0  # step 0, always computed
    colours = [ROW0, COMPUTED, REUSED, REMOVED]
    scale = [[j / 4 + e, c] for j, c in enumerate(colours) for e in (0, 0.25)]
    scale = [[min(1.0, v), c] for v, c in scale]
    ks = np.arange(k_steps, dtype=np.int32)
    kind = "scattergl" if scatter is go.Scattergl else "scatter"
    traces = [dict(  # plain dicts, validated once by plotly's schema-free path: ~10× faster for N=60
        type=kind, x=np.full(k_steps, i, np.int32), y=ks, mode="markers", name=f"{names[i]} · {macs[i]} MACs",
        customdata=np.stack([ks, np.full(k_steps, i, np.int32), ts.astype(np.int32)], axis=1),
        marker=dict(symbol="square", size=size, color=status[:, i], colorscale=scale, cmin=-0.5, cmax=3.5,
                    line=dict(width=0)),
        hovertemplate="<b>%{fullData.name}</b><br>step k=%{customdata[0]} (t=%{customdata[2]})<extra></extra>",
        showlegend=False) for i in range(n)]
    for label, colour in (("computed", COMPUTED), ("step 0 (always computed)", ROW0), ("reused (cache)", REUSED),
                          ("removed by rectification", REMOVED)):
        traces.append(dict(type="scatter", x=[None], y=[None], mode="markers", name=label, hoverinfo="skip",
                           marker=dict(symbol="square", size=12, color=colour)))
    fig = go.Figure(data=traces, skip_invalid=False, _validate=False)
    shapes, annotations = [], []
    for bi, (block, a, b) in enumerate(ctx.blocks()):
        if a > 0:
            shapes.append(dict(type="line", x0=a - 0.5, x1=a - 0.5, y0=-0.5, y1=k_steps - 0.5,
                               line=dict(color=SEPARATOR, width=1, dash="dot")))
        annotations.append(dict(x=(a + b) / 2, y=1.0, yref="paper", yanchor="bottom", showarrow=False,
                                text=short_name(block), font=dict(size=9), textangle=-45 if n > 12 else 0))
    every = max(1, int(np.ceil(k_steps / 40)))
    labels = step_labels(ctx, k_steps)
    fig.update_layout(
        height=plot_h, width=max(plot_w, 560), margin=margin, plot_bgcolor="white", autosize=False,
        legend=dict(orientation="h", yanchor="bottom", y=0, x=0, font=dict(size=11), yref="container"),
        xaxis=dict(tickvals=list(range(n)), ticktext=[short_name(x) for x in names] if n <= 60 else None,
                   tickangle=-90, tickfont=dict(size=8), range=[-0.5, n - 0.5], showgrid=False, zeroline=False,
                   side="bottom", title=None),
        yaxis=dict(tickvals=list(range(0, k_steps, every)), ticktext=labels[::every], range=[k_steps - 0.5, -0.5],
                   tickfont=dict(size=9), showgrid=False, zeroline=False, title=None),
        shapes=shapes, annotations=annotations, uirevision="mask",
    )
    return fig


def delta_figure(delta: np.ndarray | None, lam: np.ndarray | None, timesteps: list[int]) -> go.Figure:
    """Δ_k (output variation, Eq. 9) and λ_k (loss weight, Eq. 10) over sampling steps."""
    fig = go.Figure()
    k = list(range(len(timesteps)))
    hover = [f"k={i} · t={t}" for i, t in zip(k, timesteps)]
    if delta is not None:
        fig.add_trace(go.Scatter(x=k, y=delta, name="Δ_k (relative output change)", mode="lines+markers",
                                 text=hover, hovertemplate="%{text}<br>Δ=%{y:.4f}<extra></extra>"))
    if lam is not None:
        fig.add_trace(go.Scatter(x=k, y=lam, name="λ_k (sparsity weight)", mode="lines", yaxis="y2",
                                 line=dict(dash="dash", shape="hv"), text=hover,
                                 hovertemplate="%{text}<br>λ=%{y:.4g}<extra></extra>"))
    # Δ_k on a log axis: the last-step spike would otherwise flatten every other step; the legend sits
    # under the plot so it never covers the λ line on a narrow page
    fig.update_layout(height=340, margin=dict(l=10, r=10, t=20, b=10), xaxis_title="sampling step k (0 = noisiest)",
                      yaxis=dict(title="Δ_k (log)", type="log", exponentformat="power"),
                      yaxis2=dict(title="λ_k", overlaying="y", side="right", showgrid=False, nticks=5,
                                  tickformat=".2~g"),
                      legend=dict(orientation="h", yanchor="top", y=-0.25, x=0))
    return fig


def divergence_figure(errors: np.ndarray, timesteps: list[int]) -> go.Figure:
    """‖x_k(masked) − x_k(original)‖ / ‖x_k(original)‖ over the steps: where the error enters the
    trajectory (a jump marks a step whose reuse cost quality) and whether later steps damp it."""
    k = list(range(len(errors)))
    y = np.asarray(errors, float)
    y = np.where(y > 0, y, np.nan)  # identical steps (step 0) have no point on the log axis
    fig = go.Figure(go.Scatter(x=k, y=y, mode="lines+markers",
                               name="relative latent error", text=[f"k={i} · t={t}" for i, t in zip(k, timesteps)],
                               hovertemplate="%{text}<br>error %{y:.3g}<extra></extra>", marker_color=REMOVED))
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=20, b=10), xaxis_title="sampling step k (0 = noisiest)",
                      yaxis=dict(title="‖x_k masked − x_k orig‖ / ‖x_k orig‖", type="log", exponentformat="power"))
    return fig


def step_macs_figure(ctx: ModelContext, mask: np.ndarray) -> go.Figure:
    """MACs of each sampling step under the mask, against the plain model's per-step MACs."""
    per = ctx.macs.per_step(mask)
    ts = ctx.timesteps(mask.shape[0])
    fig = go.Figure(go.Bar(x=list(range(len(per))), y=per, marker_color=COMPUTED, name="masked",
                           hovertext=[f"k={k} · t={t}" for k, t in enumerate(ts)],
                           hovertemplate="%{hovertext}<br>%{y:.3s} MACs<extra></extra>"))
    plain = ctx.macs.per_step(np.ones_like(mask))  # per model call: a Heun step is two calls, its last one
    if np.allclose(plain, plain[0]):
        fig.add_hline(y=plain[0], line_dash="dash", line_color=REMOVED, annotation_text="plain model")
    else:
        fig.add_trace(go.Scatter(x=list(range(len(plain))), y=plain, mode="lines", name="plain model",
                                 line=dict(dash="dash", color=REMOVED, shape="hvh")))
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=30, b=10), xaxis_title="sampling step k",
                      yaxis_title="MACs per image", bargap=0.1)
    return fig


def unit_fraction_figure(ctx: ModelContext, mask: np.ndarray) -> go.Figure:
    """Fraction of steps each unit is computed in, coloured by block."""
    frac = np.asarray(mask, bool).mean(axis=0)
    names = [u.name for u in ctx.units]
    blocks = [u.block for u in ctx.units]
    palette = ["#1f4e96", "#4c9f70", "#b5651d", "#7b4fa0", "#c23b22", "#2a8c9c", "#8c8c2a"]
    order = list(dict.fromkeys(blocks))
    colours = [palette[order.index(b) % len(palette)] for b in blocks]
    fig = go.Figure(go.Bar(x=[short_name(x) for x in names], y=frac, marker_color=colours, hovertext=names,
                           hovertemplate="%{hovertext}<br>computed in %{y:.0%} of steps<extra></extra>"))
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=30, b=10), yaxis=dict(range=[0, 1.02], tickformat=".0%"),
                      yaxis_title="computed fraction", xaxis_tickangle=-90)
    return fig


# --- the mask as an image (Gradio's clickable grid) -----------------------------------------
def _hex(c: str) -> tuple[int, int, int]:
    return tuple(int(c[i:i + 2], 16) for i in (1, 3, 5))


def image_layout(ctx: ModelContext, steps: int, *, target: int = 720) -> dict:
    """Pixel geometry of the mask image: cell size, gaps, block separator offsets."""
    n = ctx.n_units
    cell = int(max(3, min(24, target // max(n, steps))))
    sep = 3  # extra pixels between blocks
    x0 = []
    x = 0
    starts = {a for _, a, _ in ctx.blocks()}
    for i in range(n):
        if i in starts and i > 0:
            x += sep
        x0.append(x)
        x += cell
    return {"cell": cell, "x0": x0, "width": x, "height": steps * cell}


def mask_image(ctx: ModelContext, mask: np.ndarray, removed: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 picture of the mask, one square per cell, gaps between blocks."""
    mask = np.asarray(mask, bool)
    k_steps, n = mask.shape
    lay = image_layout(ctx, k_steps)
    c = lay["cell"]
    img = np.full((lay["height"], lay["width"], 3), 255, np.uint8)
    colour = np.empty((k_steps, n, 3), np.uint8)
    colour[:] = _hex(REUSED)
    colour[mask] = _hex(COMPUTED)
    colour[0][mask[0]] = _hex(ROW0)
    if removed is not None:
        colour[np.asarray(removed, bool) & ~mask] = _hex(REMOVED)
    inner = max(1, c - 1) if c >= 4 else c  # 1-px white grid lines when cells are big enough
    for i, x in enumerate(lay["x0"]):
        col = np.repeat(colour[:, i, :], c, axis=0)  # (K*c, 3)
        block = np.broadcast_to(col[:, None, :], (k_steps * c, inner, 3)).copy()
        if inner < c:
            block[c - 1::c] = 255
        img[:, x:x + inner] = block
    return img


def cell_at(ctx: ModelContext, steps: int, x: float, y: float) -> tuple[int, int] | None:
    """(k, i) under pixel (x, y) of :func:`mask_image`, or None on a gap/outside."""
    lay = image_layout(ctx, steps)
    c = lay["cell"]
    k = int(y // c)
    if not 0 <= k < steps:
        return None
    for i, x0 in enumerate(lay["x0"]):
        if x0 <= x < x0 + c:
            return k, i
    return None


def grid_payload(ctx: ModelContext, mask: np.ndarray, *, removed: np.ndarray | None = None, mode: str = "toggle",
                 readonly: bool = False, ack: int = 0, delta: np.ndarray | None = None) -> dict:
    """Everything the browser-side mask grid (app/components/mask_grid.js) draws, as plain JSON.

    ``cells`` is one character per cell, row-major: '1' computed, '0' reused, '2' removed by
    rectification (reused now, computed before). ``ack`` is the last browser edit applied on the
    server: the browser keeps its own (optimistic) cells until the server has caught up with it.
    ``delta`` (K,) draws the Δ_k strip beside the rows (NaN → none)."""
    mask = np.asarray(mask, bool)
    k_steps, n = mask.shape
    status = np.where(mask, "1", "0").astype("<U1")
    if removed is not None:
        status[np.asarray(removed, bool) & ~mask] = "2"
    names = [u.name for u in ctx.units]
    macs = [format_macs(m) for m in ctx.macs.unit_macs]
    blocks = ctx.blocks()
    return {
        "K": k_steps, "N": n, "cells": "".join(status.ravel().tolist()),
        "rows": step_labels(ctx, k_steps), "units": [short_name(x) for x in names],
        "tips": [f"{names[i]} · {macs[i]} MACs" for i in range(n)],
        "blocks": [[short_name(b), a, e] for b, a, e in blocks],
        "colors": {"computed": COMPUTED, "reused": REUSED, "removed": REMOVED, "row0": ROW0, "sep": SEPARATOR},
        "mode": mode, "readonly": bool(readonly), "ack": int(ack),
        "delta": None if delta is None else [None if not np.isfinite(x) else float(x) for x in np.asarray(delta, float)],
    }
