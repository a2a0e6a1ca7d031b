"""Per-budget winners and what each method needs, for docs/METHODS_COMPARED.md (issue 17).

    python benchmarks/methods_summary.py --model mnist-ddpm -o docs/results/methods-mnist-ddpm-50

Reads OUTPUT/results.csv (written by ``benchmarks/budget_table.py`` with ``--extra`` rows for the
other methods), ``--baseline`` (the budget table of the learned masks, rules and DDIM with fewer
steps, measured on the same held-out seeds: PSNR is comparable row for row, speed only roughly,
as it comes from another process), the mask files in OUTPUT/masks/ (their
training time and data use) and docs/results/methods-memory/results.csv (``--memory``, peak memory
at K = 50), and writes OUTPUT/summary.md: one row per budget with every method's held-out PSNR
and speed, the winner, and a table of what each method needs; with ``--baseline`` also
OUTPUT/compare.html / compare.png (PSNR against MACs of every family).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FAMILIES = ("learned", "feature-change", "router", "global")


def budget_of(method: str) -> int | None:
    m = re.search(r"\bb(\d\d)$", method) or re.search(r"-b(\d\d)$", method)
    return int(m.group(1)) if m else None


def family_of(method: str) -> str | None:
    for f in FAMILIES:
        if method.startswith(f):
            return f
    return None


from budget_report import RULES  # noqa: E402  (the families that count as hand-made rules)


def winners(df: pd.DataFrame) -> str:
    """One row per budget: each family's mask at that budget, the best rule and DDIM with fewer steps
    at ≤ the budget (+2%), and the winner by held-out PSNR; with FID measured (``budget_table.py --fid``)
    each cell also shows it and a last column names the lowest FID among that budget's rows."""
    df = df.assign(fam=df.method.map(family_of), budget=df.method.map(budget_of))
    has_fid = "fid" in df.columns and df.fid.notna().any()
    fid = (lambda r: f", FID {r.fid:.2f}" if r.fid == r.fid else ", FID —") if has_fid else (lambda r: "")
    rules = df[df.family.astype(str).str.startswith(RULES)]
    fewer = df[df.family == "DDIM fewer steps"]
    what = "MACs, PSNR, FID, speed" if has_fid else "MACs, PSNR, speed"
    head = [f"{f} ({what})" for f in FAMILIES] + ["best rule ≤ B", "DDIM fewer steps ≤ B", "winner (PSNR)"]
    if has_fid:
        n = int(df.fid_n.max())
        head.append(f"lowest FID (N = {n})")
    lines = ["| budget B | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for b in sorted(df.budget.dropna().unique()):
        cap = b / 100 * 1.02
        cells, cands, fids = [f"{int(b)}%"], [], []
        for f in FAMILIES:
            r = df[(df.fam == f) & (df.budget == b)]
            if not len(r):
                cells.append("—")
                continue
            r = r.iloc[0]
            cells.append(f"{r.macs_ratio:.1%}, {r.psnr:.2f} dB{fid(r)}, {r.speedup:.2f}×")
            if r.macs_ratio <= cap:
                cands.append((f, r.psnr))
                if has_fid and r.fid == r.fid:
                    fids.append((f, r.fid))
        for pool in (rules, fewer):
            ok = pool[pool.macs_ratio <= cap]
            if len(ok):
                r = ok.loc[ok.psnr.idxmax()]
                cells.append(f"{r.method} ({r.macs_ratio:.1%}, {r.psnr:.2f} dB{fid(r)})")
                cands.append((r.method, r.psnr))
                if has_fid and r.fid == r.fid:
                    fids.append((r.method, r.fid))
            else:
                cells.append("—")
        best = max(cands, key=lambda c: c[1]) if cands else None
        cells.append(f"**{best[0]}** ({best[1]:.2f} dB)" if best else "—")
        if has_fid:
            low = min(fids, key=lambda c: c[1]) if fids and len(fids) == len(cands) else None
            cells.append(f"**{low[0]}** ({low[1]:.2f})" if low else "— (not all measured)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def needs(model: str, masks: Path, memory: Path | None) -> str:
    from blockmask.io.models import assets_dir

    mem = pd.read_csv(memory / "results.csv") if memory and (memory / "results.csv").exists() else None

    def peak(method: str) -> str:
        if mem is None:
            return "—"
        r = mem[(mem.model == model) & (mem.method == method) & (mem.K == 50)]
        return f"{r.growth_mb.iloc[0]:.0f} MB" if len(r) else "—"

    def grows(method: str) -> str:
        if mem is None:
            return "—"
        r = mem[(mem.model == model) & (mem.method == method)].sort_values("K")
        return " → ".join(f"{v:.0f}" for v in r.growth_mb) + " MB (K = " + ", ".join(str(k) for k in r.K) + ")" if len(r) else "—"

    def meta(path: Path) -> dict:
        return json.loads(path.read_text())["meta"]

    learned = [meta(p) for p in sorted((assets_dir() / "masks").glob(f"{model}-050steps-b*.json"))]
    t_ours = np.median([m["train_seconds"] for m in learned]) if learned else float("nan")
    prod = {f: [meta(p)["producer"] for p in sorted(masks.glob(f"{f}-b*.json"))] for f in FAMILIES[1:]}
    trained = {f: [p for p in v if "refit_from" not in p] for f, v in prod.items()}
    t = {f: np.median([p["train_seconds"] for p in v]) if v else float("nan") for f, v in trained.items()}
    router = trained["router"][0] if trained["router"] else {}
    data = router.get("data", {})
    rows = [
        ("learned (ours)", "none (Gaussian noise)", f"{t_ours:.0f} s per budget (per-step training + calibration)",
         peak("ours (per step)"), grows("ours (per step)")),
        ("feature-change", "none (Gaussian noise)", f"{t['feature-change']:.1f} s per budget (one unmasked run + search)",
         "forward only (no graph)", "flat (forward only)"),
        ("router", f"{data.get('unique_images', '?')} MNIST images ({data.get('split', '?')} split), "
                   f"{data.get('images_drawn', '?')} draws", f"{t['router']:.0f} s once, then a threshold per budget",
         f"{router.get('memory', {}).get('peak_rss_mb', float('nan')):.0f} MB peak RSS (process)", "flat (one step)"),
        ("global", "none (Gaussian noise)", f"{t['global']:.0f} s once ({(trained['global'] or [{}])[0].get('config', {}).get('iters', '?')} "
                   "iterations through all 50 steps), then a threshold per budget", peak("global"), grows("global")),
    ]
    out = ["| method | data | training time (this CPU, K = 50) | peak memory of learning at K = 50 | memory vs K |",
           "|---|---|---|---|---|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--baseline", help="results.csv of benchmarks/budget_table.py for the same model (learned masks, "
                                       "rules, DDIM with fewer steps), e.g. docs/results/budgets-mnist-ddpm-50/results.csv")
    ap.add_argument("--memory", default="docs/results/methods-memory")
    ap.add_argument("-o", "--output", required=True, help="folder with results.csv and masks/")
    args = ap.parse_args(argv)
    dest = Path(args.output)
    df = pd.read_csv(dest / "results.csv")
    if args.baseline:  # the learned masks, rules and fewer steps, measured by budget_table.py on the same seeds
        base = pd.read_csv(args.baseline)
        df = pd.concat([df, base[~base.method.isin(df.method)]], ignore_index=True)
        import plotly.express as px

        fam = df.family.astype(str).where(~df.family.astype(str).str.startswith("learned"), "learned (blockmask)")
        fig = px.line(df.assign(family=fam).sort_values(["family", "macs_ratio"]), x="macs_ratio", y="psnr",
                      color="family", markers=True, hover_name="method",
                      labels={"macs_ratio": "MACs (fraction of the original)",
                              "psnr": "PSNR vs original (dB, held-out seeds 5000..)"},
                      title=f"{args.model}, K = 50: the other methods beside the learned masks and the rules")
        fig.update_layout(template="plotly_white", width=1000, height=600)
        fig.write_html(dest / "compare.html", include_plotlyjs="cdn")
        try:
            fig.write_image(dest / "compare.png")
        except Exception as e:  # kaleido needs a Chromium
            print(f"no PNG: {str(e).splitlines()[0][:120]}", file=sys.stderr)
    text = (f"## {args.model}, K = 50: held-out PSNR at each budget\n\n" + winners(df) +
            f"\n## What each method needs ({args.model})\n\n" + needs(args.model, dest / "masks", Path(args.memory)))
    (dest / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
