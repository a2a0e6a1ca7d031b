"""Tables and Pareto plots of evaluation rows: CSV, markdown, plotly HTML and PNG (kaleido)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from .io import atomic_write, atomic_write_text

COLUMNS = ["method", "steps", "macs_ratio", "speedup", "n", "fid", "kid", "is", "mse", "psnr", "seconds", "device"]
NUMERIC = {"steps": int, "n": int, "macs_ratio": float, "speedup": float, "fid": float, "kid": float, "is": float,
           "mse": float, "psnr": float, "seconds": float}


def _fmt(v, col):
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.4f}" if col in ("kid", "mse") else f"{v:.3f}" if col in ("macs_ratio", "speedup") else f"{v:.2f}"
    return str(v)


def to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({c: r.get(c) for c in COLUMNS})
    return buf.getvalue()


def to_markdown(rows: list[dict]) -> str:
    head = ["method", "steps", "MACs", "speedup", "FID (N)", "KID", "IS", "PSNR vs orig (dB)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["method"], str(r["steps"]), f"{r['macs_ratio']:.1%}", f"{r['speedup']:.2f}x",
            f"{r['fid']:.2f} ({r['n']})", _fmt(r.get("kid"), "kid"), _fmt(r.get("is"), "is"), _fmt(r.get("psnr"), "psnr"),
        ]) + " |")
    devices = sorted({r["device"] for r in rows if r.get("device")})
    if devices:  # speed is a property of the machine: say which one
        lines += ["", f"Speedups measured on: {'; '.join(devices)} (batch of the benchmark, same process, after warm-up)."]
    return "\n".join(lines) + "\n"


def read_csv(path) -> list[dict]:
    """Rows of a ``results.csv`` written by :func:`to_csv` (numbers parsed back; empty cells are None)."""
    from .errors import BlockmaskError

    try:
        text = Path(path).read_text()
    except OSError as e:
        raise BlockmaskError(f"cannot read {path}: {e.strerror or e}") from None
    rows = []
    reader = csv.DictReader(io.StringIO(text))
    missing = {"method", "steps", "macs_ratio", "speedup", "n", "fid"} - set(reader.fieldnames or [])
    if missing:
        raise BlockmaskError(f"{path} is not a blockmask results.csv (missing columns: {', '.join(sorted(missing))})")
    for i, rec in enumerate(reader, start=2):
        row = {}
        for k, v in rec.items():
            if k is None:
                continue
            if v in ("", None):
                row[k] = None
            elif k in NUMERIC:
                try:
                    row[k] = NUMERIC[k](float(v)) if NUMERIC[k] is int else float(v)
                except ValueError:
                    raise BlockmaskError(f"{path} line {i}: {k}={v!r} is not a number") from None
            else:
                row[k] = v
        rows.append(row)
    if not rows:
        raise BlockmaskError(f"{path} holds no rows")
    return rows


def pareto_figure(rows: list[dict], title: str = ""):
    """FID vs MACs and PSNR vs MACs side by side; one colour per method in both panels."""
    import plotly.colors
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    palette = plotly.colors.qualitative.D3 + plotly.colors.qualitative.Dark24  # distinct beyond 10 rows
    fig = make_subplots(rows=1, cols=2, subplot_titles=("FID vs MACs", "PSNR vs MACs (same seeds)"),
                        horizontal_spacing=0.12)
    symbols = ("circle", "square", "diamond", "triangle-up", "x", "star", "cross", "triangle-down", "pentagon")
    xs = []
    for j, r in enumerate(rows):
        x = r["macs_ratio"] * 100
        xs.append(x)
        colour = palette[j % len(palette)]
        psnr = r["psnr"] if r.get("psnr") is not None and math.isfinite(r["psnr"]) else None
        # colour + symbol per method, named in the legend (text labels of close points overlap)
        common = dict(mode="markers", marker=dict(size=12, color=colour, symbol=symbols[j % len(symbols)]),
                      hovertemplate=f"{r['method']}<br>MACs %{{x:.1f}}%<br>%{{y:.2f}}<extra></extra>",
                      name=r["method"], legendgroup=r["method"])
        fig.add_trace(go.Scatter(x=[x], y=[r["fid"]], **common), row=1, col=1)
        if psnr is not None:
            fig.add_trace(go.Scatter(x=[x], y=[psnr], showlegend=False, **common), row=1, col=2)
    pad = max(3.0, (max(xs) - min(xs)) * 0.12) if xs else 3.0
    if xs:
        fig.update_xaxes(range=[min(xs) - pad, max(xs) + pad])
    fig.update_xaxes(title_text="MACs (% of original)")
    fig.update_yaxes(title_text=f"FID (N={rows[0]['n']}, lower is better)" if rows else "FID", row=1, col=1)
    fig.update_yaxes(title_text="PSNR dB (higher is better; original = ∞, not drawn)", row=1, col=2)
    fig.update_layout(title=title, width=1200, height=max(520, 160 + 30 * len(rows)), template="plotly_white",
                      margin=dict(l=70, r=40, t=80, b=60))  # tall enough for a legend line per row
    return fig


def write_report(rows: list[dict], out_dir, title: str = "") -> dict:
    """Write results.csv, results.md, pareto.html and (when kaleido works) pareto.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.csv", to_csv(rows))
    atomic_write_text(out / "results.md", to_markdown(rows))
    fig = pareto_figure(rows, title)
    # self-contained (plotly.js inlined): opens offline
    atomic_write_text(out / "pareto.html", fig.to_html(include_plotlyjs=True))
    written = {"csv": str(out / "results.csv"), "markdown": str(out / "results.md"), "html": str(out / "pareto.html")}
    try:
        atomic_write(out / "pareto.png", lambda tmp: fig.write_image(tmp, format="png"))
        written["png"] = str(out / "pareto.png")
    except Exception as e:  # kaleido needs a Chromium; without one the HTML is the plot
        written["png_error"] = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
    return written
