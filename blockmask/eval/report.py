"""Tables and Pareto plots of evaluation rows, as pandas DataFrames: CSV in and out, markdown,
plotly HTML and PNG (kaleido).

Rows are plain dicts (one per method, :data:`COLUMNS`); :func:`frame` turns them into the DataFrame
every output is made from. :func:`read_csv` checks a whole file before anything is written, and
:func:`write_report` renders every file first and refuses to write over its own input.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from blockmask.core.errors import BlockmaskError
from blockmask.io.files import atomic_write_all, text_writer

COLUMNS = ["method", "steps", "macs_ratio", "speedup", "n", "fid", "kid", "is", "mse", "psnr", "seconds", "device"]
REQUIRED = ["method", "steps", "macs_ratio", "speedup", "n", "fid"]
NUMERIC = {"steps": int, "n": int, "macs_ratio": float, "speedup": float, "fid": float, "kid": float, "is": float,
           "mse": float, "psnr": float, "seconds": float}
FILES = {"csv": "results.csv", "markdown": "results.md", "html": "pareto.html", "png": "pareto.png"}


def frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as a DataFrame with :data:`COLUMNS` (values kept as they are: ints stay ints, None is empty)."""
    def cell(v):  # NaN (e.g. an IS that could not be computed) stays "nan", not an empty cell
        return "nan" if isinstance(v, float) and math.isnan(v) else v

    return pd.DataFrame([{c: cell(r.get(c)) for c in COLUMNS} for r in rows], columns=COLUMNS, dtype=object)


def _fmt(v, col):
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isinf(v):
            return "inf"
        return f"{v:.4f}" if col in ("kid", "mse") else f"{v:.3f}" if col in ("macs_ratio", "speedup") else f"{v:.2f}"
    return str(v)


def to_csv(rows: list[dict]) -> str:
    return frame(rows).to_csv(index=False, na_rep="", lineterminator="\n")


def display_frame(rows: list[dict]) -> pd.DataFrame:
    """The table as people read it (formatted strings): results.md, the apps' tables."""
    return pd.DataFrame({
        "method": [r["method"] for r in rows],
        "steps": [str(r["steps"]) for r in rows],
        "MACs": [f"{r['macs_ratio']:.1%}" for r in rows],
        "speedup": [f"{r['speedup']:.2f}x" for r in rows],
        "FID (N)": [f"{r['fid']:.2f} ({r['n']})" for r in rows],
        "KID": [_fmt(r.get("kid"), "kid") for r in rows],
        "IS": [_fmt(r.get("is"), "is") for r in rows],
        "PSNR vs orig (dB)": [_fmt(r.get("psnr"), "psnr") for r in rows],
    })


def to_markdown(rows: list[dict]) -> str:
    text = display_frame(rows).to_markdown(index=False, tablefmt="github", disable_numparse=True)
    devices = sorted({r["device"] for r in rows if r.get("device")})
    if devices:  # speed is a property of the machine: say which one
        text += f"\n\nSpeedups measured on: {'; '.join(devices)} (batch of the benchmark, same process, after warm-up)."
    return text + "\n"


def read_csv(path) -> list[dict]:
    """Rows of a ``results.csv`` written by :func:`to_csv` (numbers parsed back; empty cells are None).
    Any problem (missing, unnamed or empty required columns, a non-number) is one BlockmaskError."""
    p = Path(path)
    if not p.is_file():
        raise BlockmaskError(f"cannot read {path}: no such file")
    try:
        df = pd.read_csv(p, dtype=str, keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BlockmaskError(f"{path} is not a readable CSV ({first[:120]})") from None
    except OSError as e:
        raise BlockmaskError(f"cannot read {path}: {e.strerror or e}") from None
    cols = [str(c) for c in df.columns]
    unnamed = [i + 1 for i, c in enumerate(cols) if not c.strip() or c.startswith("Unnamed:")]
    if unnamed:
        raise BlockmaskError(f"{path} has a column without a name (column {unnamed[0]}); not a blockmask results.csv")
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise BlockmaskError(f"{path} is not a blockmask results.csv (missing columns: {', '.join(sorted(missing))})")
    if df.empty:
        raise BlockmaskError(f"{path} holds no rows")
    empty = [c for c in REQUIRED if (df[c].str.strip() == "").all()]
    if empty:
        raise BlockmaskError(f"{path}: column {empty[0]!r} is empty")
    df = df[[c for c in cols if c in COLUMNS]]
    rows = []
    for i, rec in enumerate(df.to_dict("records"), start=2):
        row = {}
        for k, v in rec.items():
            v = v.strip()
            if v == "":
                if k in REQUIRED:
                    raise BlockmaskError(f"{path} line {i}: {k} is empty")
                row[k] = None
            elif k in NUMERIC:
                try:
                    num = float(v)
                    row[k] = int(num) if NUMERIC[k] is int else num
                except (ValueError, OverflowError):
                    raise BlockmaskError(f"{path} line {i}: {k}={v!r} is not a number") from None
                if NUMERIC[k] is int and not num.is_integer():  # never truncate 5.7 steps to 5
                    raise BlockmaskError(f"{path} line {i}: {k}={v!r} is not an integer")
            else:
                row[k] = v
        rows.append(row)
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


def write_report(rows: list[dict], out_dir, title: str = "", *, source=None) -> dict:
    """Write results.csv, results.md, pareto.html and (when kaleido works) pareto.png. Everything is
    rendered before the first file is written; ``source`` (the CSV the rows came from) is never
    overwritten."""
    out = Path(out_dir)
    paths = {k: out / name for k, name in FILES.items()}
    if source is not None:
        src = Path(source).resolve()
        clash = [p for p in paths.values() if p.resolve() == src]
        if clash:
            raise BlockmaskError(f"output folder {out} would overwrite the input {source}; choose another -o")
    if not rows:
        raise BlockmaskError("no result rows to report")
    csv_text, md_text = to_csv(rows), to_markdown(rows)
    fig = pareto_figure(rows, title)
    html = fig.to_html(include_plotlyjs=True)  # self-contained (plotly.js inlined): opens offline
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise BlockmaskError(f"cannot create output folder {out}: {e.strerror or e}") from None
    # all or nothing: a full disk leaves no partial set (the PNG alone may fail: kaleido needs a Chromium)
    try:
        result = _write_all(paths, csv_text, md_text, html, fig)
    except BaseException:
        if created:
            try:
                out.rmdir()
            except OSError:
                pass
        raise
    written = {k: str(paths[k]) for k in ("csv", "markdown", "html")}
    if result[paths["png"]] is None:
        written["png"] = str(paths["png"])
    else:
        written["png_error"] = result[paths["png"]]
    return written


def _write_all(paths, csv_text, md_text, html, fig) -> dict:
    return atomic_write_all([(paths["csv"], text_writer(csv_text), True), (paths["markdown"], text_writer(md_text), True),
                             (paths["html"], text_writer(html), True),
                             (paths["png"], lambda tmp: fig.write_image(tmp, format="png"), False)])
