"""Tables and Pareto plots of evaluation rows: CSV, markdown, plotly HTML and PNG (kaleido)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from .io import atomic_write, atomic_write_text

COLUMNS = ["method", "steps", "macs_ratio", "speedup", "n", "fid", "kid", "is", "mse", "psnr", "seconds"]


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
    return "\n".join(lines) + "\n"


def pareto_figure(rows: list[dict], title: str = ""):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("FID vs MACs", "PSNR vs MACs (same seeds)"))
    for r in rows:
        x = r["macs_ratio"] * 100
        psnr = r["psnr"] if r.get("psnr") is not None and math.isfinite(r["psnr"]) else None
        fig.add_trace(go.Scatter(x=[x], y=[r["fid"]], mode="markers+text", text=[r["method"]], textposition="top center",
                                 name=r["method"], legendgroup=r["method"]), row=1, col=1)
        if psnr is not None:
            fig.add_trace(go.Scatter(x=[x], y=[psnr], mode="markers+text", text=[r["method"]], textposition="top center",
                                     name=r["method"], legendgroup=r["method"], showlegend=False), row=1, col=2)
    fig.update_xaxes(title_text="MACs (% of original)")
    fig.update_yaxes(title_text=f"FID (N={rows[0]['n']}, lower is better)", row=1, col=1)
    fig.update_yaxes(title_text="PSNR dB (higher is better)", row=1, col=2)
    fig.update_layout(title=title, width=1100, height=480, template="plotly_white")
    return fig


def write_report(rows: list[dict], out_dir, title: str = "") -> dict:
    """Write results.csv, results.md, pareto.html and (when kaleido works) pareto.png."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.csv", to_csv(rows))
    atomic_write_text(out / "results.md", to_markdown(rows))
    fig = pareto_figure(rows, title)
    atomic_write_text(out / "pareto.html", fig.to_html(include_plotlyjs="cdn"))
    written = {"csv": str(out / "results.csv"), "markdown": str(out / "results.md"), "html": str(out / "pareto.html")}
    try:
        atomic_write(out / "pareto.png", lambda tmp: fig.write_image(tmp, format="png"))
        written["png"] = str(out / "pareto.png")
    except Exception as e:  # kaleido needs a Chromium; without one the HTML is the plot
        written["png_error"] = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
    return written
