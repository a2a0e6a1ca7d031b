"""Export for teaching (issue 28, item 5): the grid and each plot as PNG and SVG, and a one-page HTML
report of a session (model, schedule, grid, plots, images, numbers).

The grid is drawn here (PIL for PNG, plain SVG rectangles), so it needs nothing extra. Plots go through
plotly's static export (kaleido, which drives a Chromium); where that is missing or fails, a plot has
no PNG/SVG (said in :func:`figure_images`' notes) and the report embeds it as interactive plotly HTML.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import html
import io
import threading
import zipfile

import numpy as np

from blockmask.viz.compare import png_bytes
from blockmask.viz.context import ModelContext
from blockmask.viz.figures import COMPUTED, REMOVED, REUSED, ROW0, image_layout, mask_image

_KALEIDO = threading.Lock()
_STATE = {"server": False, "broken": ""}


def grid_png(ctx: ModelContext, mask: np.ndarray, removed: np.ndarray | None = None, scale: int = 0) -> bytes:
    """The mask as a PNG (one square per cell, gaps between blocks), at least ~800 px wide."""

    img = mask_image(ctx, mask, removed)
    scale = scale or max(1, -(-800 // max(1, img.shape[1])))
    return png_bytes(img, scale)


def grid_svg(ctx: ModelContext, mask: np.ndarray, removed: np.ndarray | None = None, title: str = "") -> bytes:
    """The mask as an SVG (vector: sharp on a slide at any size), one <rect> per cell with a tooltip."""
    mask = np.asarray(mask, bool)
    k_steps, n = mask.shape
    lay = image_layout(ctx, k_steps)
    c, pad_top, pad_left = lay["cell"], 24 if title else 4, 4
    w, h = lay["width"] + 2 * pad_left, lay["height"] + pad_top + 4
    names = [u.name for u in ctx.units]
    gone = np.zeros_like(mask) if removed is None else np.asarray(removed, bool) & ~mask
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}">',
           f'<rect width="{w}" height="{h}" fill="white"/>']
    if title:
        out.append(f'<text x="{pad_left}" y="16" font-family="sans-serif" font-size="13">{html.escape(title)}</text>')
    for k in range(k_steps):
        for i, x in enumerate(lay["x0"]):
            col = REMOVED if gone[k, i] else (ROW0 if k == 0 and mask[k, i] else COMPUTED if mask[k, i] else REUSED)
            state = "removed" if gone[k, i] else "computed" if mask[k, i] else "reused"
            out.append(f'<rect x="{x + pad_left}" y="{k * c + pad_top}" width="{max(1, c - 1)}" '
                       f'height="{max(1, c - 1)}" fill="{col}"><title>step {k} · {html.escape(names[i])} · '
                       f'{state}</title></rect>')
    out.append("</svg>")
    return "\n".join(out).encode()


def _kaleido_ready() -> bool:
    if _STATE["broken"]:
        return False
    try:
        import kaleido

        if not _STATE["server"]:
            kaleido.start_sync_server(silence_warnings=True)  # one Chromium for every export, not one each
            _STATE["server"] = True
        return True
    except Exception as e:  # noqa: BLE001 — kaleido missing or no Chromium: PNG/SVG of plots unavailable
        _STATE["broken"] = f"{type(e).__name__}: {str(e)[:120]}"
        return False


def figure_image(fig, fmt: str = "png") -> bytes | None:
    """A plotly figure as PNG or SVG bytes through kaleido, or None where kaleido cannot run."""
    import warnings

    import plotly.io as pio

    with _KALEIDO:
        if not _kaleido_ready():
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return pio.to_image(fig, format=fmt, width=900, height=int(fig.layout.height or 450), scale=1)
        except Exception as e:  # noqa: BLE001 — one broken export must not take the app down
            _STATE["broken"] = f"{type(e).__name__}: {str(e)[:120]}"
            return None


def static_note() -> str:
    """'' when plots export to PNG/SVG, else why not (shown next to the export buttons)."""
    return "" if not _STATE["broken"] else (
        "Plots could not be exported as PNG/SVG here (kaleido/Chromium unavailable: " + _STATE["broken"] +
        "); the report embeds them as interactive plotly charts, and the grid exports as PNG/SVG regardless.")


def figures_zip(ctx: ModelContext, mask: np.ndarray, figs: dict, removed: np.ndarray | None = None,
                title: str = "") -> bytes:
    """grid.png, grid.svg and NAME.png / NAME.svg for each plot in ``figs`` (name → plotly figure)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("grid.png", grid_png(ctx, mask, removed))
        z.writestr("grid.svg", grid_svg(ctx, mask, removed, title))
        for name, fig in figs.items():
            if fig is None:
                continue
            for fmt in ("png", "svg"):
                data = figure_image(fig, fmt)
                if data is not None:
                    z.writestr(f"{name}.{fmt}", data)
        if static_note():
            z.writestr("README.txt", static_note())
    return buf.getvalue()


def _img(png: bytes, alt: str, width: str = "") -> str:
    style = f' style="width:{width}"' if width else ""
    return (f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}"'
            f'{style}>')


def _fig_html(fig, name: str) -> str:
    png = figure_image(fig, "png")
    if png is not None:
        return f"<figure>{_img(png, name, '100%')}<figcaption>{html.escape(name)}</figcaption></figure>"
    return f"<figure>{fig.to_html(full_html=False, include_plotlyjs='cdn')}" \
           f"<figcaption>{html.escape(name)} (interactive: needs the plotly script from its CDN)</figcaption></figure>"


def _table(df) -> str:
    return df.to_html(index=False, border=0, classes="t", na_rep="-", escape=True)


@dataclasses.dataclass
class ReportContent:
    """What a report shows beside the mask: ``figs`` (name → plotly figure), ``images`` ((caption,
    uint8 (H, W, 3)) pairs), ``tables`` (name → DataFrame) and ``notes`` (lines of plain text)."""

    figs: dict = dataclasses.field(default_factory=dict)
    images: list = dataclasses.field(default_factory=list)
    tables: dict = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)


def report_html(ctx: ModelContext, content: ReportContent, *, mask: np.ndarray, source: str, summary: dict,
                removed: np.ndarray | None = None) -> bytes:
    """One self-contained HTML page: the model, the schedule (K, source, hash), the grid (cells
    ``removed`` by rectification marked), then ``content``."""
    figs, images, tables, notes = content.figs, content.images, content.tables, content.notes
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    imgs = "".join(f"<figure>{_img(png_bytes(a, max(1, -(-160 // max(1, a.shape[0])))), cap)}"
                   f"<figcaption>{html.escape(cap)}</figcaption></figure>" for cap, a in (images or []))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>blockmask report</title><style>"
        "body{font-family:sans-serif;max-width:1000px;margin:1em auto;color:#222}"
        "figure{display:inline-block;margin:6px;vertical-align:top}figcaption{font-size:12px;color:#555}"
        "table.t{border-collapse:collapse;font-size:13px;margin:6px 0}"
        "table.t td,table.t th{border:1px solid #ccc;padding:3px 6px}</style></head><body>",
        "<h1>blockmask session report</h1>",
        f"<p><b>Model</b> {html.escape(ctx.label)} · scheduler {html.escape(ctx.scheduler_name)} · "
        f"device {html.escape(str(ctx.wb.device))} · {when}</p>",
        f"<p><b>Schedule</b> K={int(np.asarray(mask).shape[0])} · {html.escape(source)} · hash "
        f"<code>{html.escape(str(summary.get('hash', '')))}</code> · MACs "
        f"{100 * float(summary.get('ratio', 1)):.1f} % "
        f"of the plain model · computed cells {summary.get('computed', '?')} / {summary.get('cells', '?')} · ideal "
        f"speedup {float(summary.get('mac_speedup', 1)):.2f}× · reused units: "
        f"{html.escape(str(summary.get('reuse', 'hold')))}</p>",
        "<h2>Mask</h2><p>Rows: sampling steps (top = noisiest); columns: units in execution order. Dark blue: "
        "computed; grey: reused from the cache; orange-red: removed by rectification.</p>",
        f"<figure>{_img(grid_png(ctx, mask, removed), 'mask grid', '100%')}<figcaption>mask grid</figcaption></figure>",
    ]
    if imgs:
        parts.append(f"<h2>Images</h2>{imgs}")
    for name, df in (tables or {}).items():
        parts.append(f"<h2>{html.escape(name)}</h2>{_table(df)}")
    if figs:
        parts.append("<h2>Plots</h2>" + "".join(_fig_html(f, n) for n, f in figs.items() if f is not None))
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in notes) + "</ul>")
    parts.append("<p style='font-size:12px;color:#777'>Made by the blockmask explorer.</p></body></html>")
    return "".join(parts).encode()
