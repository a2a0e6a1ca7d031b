"""The written side of benchmarks/budget_table.py: the per-budget summary (learned mask against the
best rule at ≤ its MACs) and the files of a table folder (results.csv / .md, summary.md, the PSNR and
FID Pareto plots), each written to a temp file first. Also used by benchmarks/methods_summary.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

FID_SEED = 20000  # FID samples: batch b uses seed FID_SEED + b (neither calibration nor PSNR seeds)


RULES = ("DeepCache", "FORA", "block caching", "uniform", "cache-dit")


def summarize(df: pd.DataFrame) -> str:
    """Per learned mask: the best rule at <= its MACs (held-out PSNR), the margin, and DDIM with fewer
    steps / random at about the same MACs; markdown."""
    lines = ["| learned mask | MACs | PSNR | best rule at ≤ its MACs | its MACs | its PSNR | margin | "
             "DDIM fewer steps (MACs, PSNR) | random (PSNR) | speed learned / best rule |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    has_fid = "fid" in df.columns and df.fid.notna().any()
    if has_fid:
        lines[0] += " FID learned / best rule / DDIM fewer steps |"
        lines[1] += "---|"
    rules = df[df.family.str.startswith(RULES)]
    for _, r in df[df.family.str.startswith("learned")].iterrows():
        cap = rules[rules.macs_ratio <= r.macs_ratio + 1e-9]
        best = cap.loc[cap.psnr.idxmax()] if len(cap) else None
        tag = r.method.split()[-1]
        fewer = df[(df.family == "DDIM fewer steps")]
        fewer = fewer.iloc[(fewer.macs_ratio - r.macs_ratio).abs().argsort()[:1]] if len(fewer) else fewer
        rnd = df[df.method == f"random @ {tag}"]
        cells = [r.method, f"{r.macs_ratio:.1%}", f"{r.psnr:.2f}"]
        if best is not None:
            cells += [best.method, f"{best.macs_ratio:.1%}", f"{best.psnr:.2f}", f"{r.psnr - best.psnr:+.2f} dB"]
        else:
            cells += ["—"] * 4
        cells.append(f"{fewer.method.iloc[0]} ({fewer.macs_ratio.iloc[0]:.1%}, {fewer.psnr.iloc[0]:.2f})" if len(fewer) else "—")
        cells.append(f"{rnd.psnr.iloc[0]:.2f}" if len(rnd) else "—")
        cells.append(f"{r.speedup / best.speedup:.2f}" if best is not None else "—")
        if has_fid:
            f = lambda v: "—" if v != v else f"{v:.2f}"  # noqa: E731  (NaN: not measured)
            cells.append(" / ".join([f(r.fid), f(best.fid) if best is not None else "—",
                                     f(fewer.fid.iloc[0]) if len(fewer) else "—"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_outputs(df: pd.DataFrame, dest: Path, *, title: str) -> None:
    """results.csv / results.md / summary.md / pareto.{html,png}, each written to a temp file first."""
    import os

    df = df.sort_values("macs_ratio").reset_index(drop=True)
    df["note"] = df["note"].astype(object).where(df["note"].notna(), "")
    dest.mkdir(parents=True, exist_ok=True)

    def put(name, write):
        tmp = dest / f".{name}.tmp"
        write(tmp)
        os.replace(tmp, dest / name)

    put("results.csv", lambda t: df.to_csv(t, index=False))
    show = df.assign(MACs=df.macs_ratio.map("{:.1%}".format), PSNR=df.psnr.map("{:.2f}".format),
                     speed=[f"{a:.2f}× ({lo:.2f}–{hi:.2f})" for a, lo, hi in
                            zip(df.speedup, df.speedup_min, df.speedup_max)])
    cols = ["method", "family", "MACs", "PSNR", "speed"]
    if "fid" in df.columns and df.fid.notna().any():
        show["FID"] = [f"{v:.2f}" if v == v else "" for v in df.fid]
        show["KID"] = [f"{v:.4f}" if v == v else "" for v in df.kid]
        cols += ["FID", "KID"]
    bench = (" / ".join(dict.fromkeys(df.bench[df.method != "original"].dropna()))
             if "bench" in df.columns and df.bench.notna().any() else "batch 8, 5 interleaved rounds")
    psnr_n = int(df.psnr_n.dropna().iloc[0]) if "psnr_n" in df.columns and df.psnr_n.notna().any() else 64
    foot = f"\n\nSpeed: {df.device[0]}, {bench}, median (min–max). PSNR: N={psnr_n} held-out samples."
    if "FID" in cols:
        foot += (f" FID/KID: N={int(df.fid_n.max())} samples from seed {FID_SEED} against the MNIST test split "
                 "(offline MNIST-classifier features); blank = not measured.")
    put("results.md", lambda t: t.write_text(show[cols + ["note"]].to_markdown(index=False) + foot + "\n"))
    import plotly.express as px

    def plot(data, y, label, name, title_, log=False):  # MACs vs a metric, one line per family: NAME.html / .png
        fig = px.line(data.sort_values(["family", "macs_ratio"]), x="macs_ratio", y=y, color="family", markers=True,
                      hover_name="method", labels={"macs_ratio": "MACs (fraction of the original)", y: label},
                      title=title_)
        fig.update_layout(template="plotly_white", width=1000, height=600)
        if log:  # labelled ticks 1, 2, 3, 5, 10, … (plotly's own log ticks print only the leading digit)
            ticks = [m * 10 ** e for e in range(-1, 4) for m in (1, 2, 3, 5)]
            fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{v:g}" for v in ticks])
        put(f"{name}.html", lambda t: fig.write_html(t, include_plotlyjs="cdn"))
        try:
            put(f"{name}.png", lambda t: fig.write_image(t, format="png"))
        except Exception as e:  # kaleido needs a Chromium
            print(f"no PNG: {str(e).splitlines()[0][:120]}", file=sys.stderr)

    plot(df, "psnr", "PSNR vs original (dB, held-out seeds)", "pareto", title)
    if "fid" in df.columns and df.fid.notna().any():
        fd = df[df.fid.notna()]
        plot(fd, "fid", f"FID (N={int(fd.fid_n.max())})", "pareto-fid", title.replace("fidelity", "FID"),
             log=fd.fid.max() > 5 * fd.fid.min())  # a broken row (FID 60+) would flatten the rest
    put("summary.md", lambda t: t.write_text(summarize(df)))
    print((dest / "results.md").read_text())
    print((dest / "summary.md").read_text())
