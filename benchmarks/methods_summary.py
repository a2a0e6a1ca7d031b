"""Per-budget winners and what each method needs, for docs/METHODS_COMPARED.md (issue 17).

    python benchmarks/methods_summary.py --model mnist-ddpm -o docs/results/methods-mnist-ddpm-50

Reads OUTPUT/results.csv (written by ``benchmarks/budget_table.py`` with ``--extra`` rows for the
other methods and the learned masks in the same run), the mask files in OUTPUT/masks/ (their
training time and data use) and docs/results/methods-memory/results.csv (``--memory``, peak memory
at K = 50), and writes OUTPUT/summary.md: one row per budget with every method's held-out PSNR
and speed, the winner, and a table of what each method needs.
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


def winners(df: pd.DataFrame) -> str:
    df = df.assign(fam=df.method.map(family_of), budget=df.method.map(budget_of))
    fewer = df[df.family == "DDIM fewer steps"]
    lines = ["| budget | " + " | ".join(f"{f} (MACs, PSNR, speed)" for f in FAMILIES) +
             " | DDIM fewer steps (MACs, PSNR) | best of the four |", "|---" * (len(FAMILIES) + 3) + "|"]
    for b in sorted(df.budget.dropna().unique()):
        cells, best = [f"{int(b)}%"], None
        for f in FAMILIES:
            r = df[(df.fam == f) & (df.budget == b)]
            if not len(r):
                cells.append("—")
                continue
            r = r.iloc[0]
            cells.append(f"{r.macs_ratio:.1%}, {r.psnr:.2f} dB, {r.speedup:.2f}×")
            if r.macs_ratio <= b / 100 * 1.02 and (best is None or r.psnr > best[1]):
                best = (f, r.psnr)
        near = fewer.iloc[(fewer.macs_ratio - b / 100).abs().argsort()[:1]] if len(fewer) else fewer
        cells.append(f"{near.method.iloc[0]} ({near.macs_ratio.iloc[0]:.1%}, {near.psnr.iloc[0]:.2f} dB)" if len(near) else "—")
        cells.append(f"**{best[0]}**" if best else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def needs(model: str, masks: Path, memory: Path | None) -> str:
    from blockmask.models import assets_dir

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
    ap.add_argument("--memory", default="docs/results/methods-memory")
    ap.add_argument("-o", "--output", required=True, help="folder with results.csv and masks/")
    args = ap.parse_args(argv)
    dest = Path(args.output)
    df = pd.read_csv(dest / "results.csv")
    text = (f"## {args.model}, K = 50: held-out PSNR at each budget\n\n" + winners(df) +
            f"\n## What each method needs ({args.model})\n\n" + needs(args.model, dest / "masks", Path(args.memory)))
    (dest / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
