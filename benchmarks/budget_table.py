"""Budget tables for docs/RESULTS.md: learned masks against the *real* peers at equal compute.

    python benchmarks/budget_table.py --model mnist-ddpm --steps 50 -o docs/results/budgets-mnist-ddpm-50
    python benchmarks/budget_table.py --model mnist-dit --steps 50 -o docs/results/budgets-mnist-dit-50

Other mask files (e.g. the other methods of docs/METHODS_COMPARED.md) join as rows with
``--extra FAMILY=GLOB``; ``--only`` keeps only the rows whose names contain one of its substrings.

Rows: the original; every shipped learned mask ``assets/masks/MODEL-NNNsteps-b*.json``; DeepCache
(PyPI ``DeepCache`` on a diffusers ``DDPMPipeline``, branches 0 and 1) for U-Nets; cache-dit's
DBCache (F1B0 on a ``DiTPipeline``) for the DiT; FORA, whole-block caching and uniform (blockmask
masks); DDIM with fewer steps and a random mask at each learned mask's MACs.

Every number is measured the same way for every row:

* MACs: ``FlopCounterMode`` over a whole sampling run (batch 2), as a fraction of the plain run's;
* PSNR: final samples against the plain model's, same seeds, on ``--num`` held-out samples from
  seed 5000 (the learned masks were calibrated on seeds 1000..; none of these);
* speed: plain and method runs interleaved in this process after a warm-up, ``--rounds`` rounds at
  batch ``--bench-batch``; the median of the per-round ratios and their spread (min–max).

Writes results.csv / results.md (pandas) and pareto.png / pareto.html (PSNR vs MACs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from blockmask.api import Workbench  # noqa: E402
from blockmask.costs import count_macs  # noqa: E402
from blockmask.evaluate import psnr  # noqa: E402
from blockmask.mask import MaskFile  # noqa: E402
from blockmask.models import assets_dir  # noqa: E402


def _labels(wb, n: int, start: int = 0):
    from blockmask.adapters import adapter_for

    classes = adapter_for(wb.model).num_classes(wb.model)
    return None if classes is None else [(start + i) % min(classes, 10) for i in range(n)]


class Row:
    """One method: how to make its final images (B samples from a seed) as float32 (B, C, H, W) in [0, 1]."""

    def __init__(self, name: str, family: str, run, note: str = ""):
        self.name, self.family, self.run, self.note = name, family, run, note


def our_rows(wb, steps: int, masks: dict[str, np.ndarray], family: str) -> list[Row]:
    def make(mask, k=steps):
        def run(seed, batch):
            cond = wb.condition(class_label=_labels(wb, batch), guidance_scale=1.0) if _labels(wb, 1) else None
            return wb.images(wb.generate(mask, steps=k, seed=seed, num_images=batch, condition=cond)).numpy()
        return run

    return [Row(n, family, make(m)) for n, m in masks.items()]


def deepcache_rows(wb, steps: int, branches, intervals) -> list[Row]:
    from DeepCache import DeepCacheSDHelper
    from diffusers import DDIMScheduler, DDPMPipeline

    pipe = DDPMPipeline(unet=wb.model, scheduler=DDIMScheduler.from_config(wb.loaded.scheduler.config))
    pipe.set_progress_bar_config(disable=True)

    def make(branch, interval):
        def run(seed, batch):
            h = DeepCacheSDHelper(pipe=pipe)
            h.set_params(cache_interval=interval, cache_branch_id=branch)
            h.enable()
            try:
                out = pipe(batch_size=batch, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed),
                           output_type="np").images
            finally:
                h.disable()
            return np.ascontiguousarray(out.transpose(0, 3, 1, 2)).astype(np.float32)
        return run

    return [Row(f"DeepCache b{b} N={n}", f"DeepCache b{b} (PyPI)", make(b, n)) for b in branches for n in intervals]


def cachedit_rows(wb, steps: int, thresholds, warmup: int) -> list[Row]:
    import peers

    pipe = peers.dit_pipeline(wb)

    def make(thr):
        def run(seed, batch):
            return peers.cachedit_dbcache(pipe, threshold=thr, steps=steps, labels=_labels(wb, batch), seed=seed,
                                          warmup=warmup)[0]
        return run

    return [Row(f"DBCache F1B0 thr={t:g}", "cache-dit DBCache (PyPI)", make(t), f"warm-up {warmup}") for t in thresholds]


def measure(wb, row: Row, plain: Row, *, steps: int, num: int, batch: int, reference: np.ndarray,
            plain_macs: float, rounds: int, bench_batch: int) -> dict:
    macs, _ = count_macs(lambda: row.run(0, 2))
    images = np.concatenate([row.run(5000 + j, min(batch, num - j * batch)) for j in range((num + batch - 1) // batch)])
    mse, db = psnr(images, reference)
    row.run(1, bench_batch), plain.run(1, bench_batch)  # warm-up
    ratios = []
    for r in range(rounds):
        t0 = time.perf_counter()
        plain.run(2 + r, bench_batch)
        t1 = time.perf_counter()
        row.run(2 + r, bench_batch)
        t2 = time.perf_counter()
        ratios.append((t1 - t0) / (t2 - t1))
    return {"method": row.name, "family": row.family, "macs_ratio": macs / plain_macs, "psnr": db, "mse": mse,
            "speedup": float(np.median(ratios)), "speedup_min": float(min(ratios)), "speedup_max": float(max(ratios)),
            "n": num, "note": row.note}


def extra_rows(wb, steps: int, specs: list[str]) -> list[Row]:
    """Rows for ``--extra FAMILY=GLOB``: every mask file matching GLOB, named by its stem."""
    import glob

    rows = []
    for spec in specs:
        family, sep, pattern = spec.partition("=")
        if not sep or not family or not pattern:
            raise SystemExit(f"error: --extra takes FAMILY=GLOB, got {spec!r}")
        files = sorted(glob.glob(pattern))
        if not files:
            raise SystemExit(f"error: --extra {spec!r}: no file matches {pattern}")
        masks = {Path(f).stem: wb.load_mask(f, steps=steps)[0].mask for f in files}
        rows += our_rows(wb, steps, masks, family)
    return rows


RULES = ("DeepCache", "FORA", "block caching", "uniform", "cache-dit")


def summarize(df: pd.DataFrame) -> str:
    """Per learned mask: the best rule at <= its MACs (held-out PSNR), the margin, and DDIM with fewer
    steps / random at about the same MACs; markdown."""
    lines = ["| learned mask | MACs | PSNR | best rule at ≤ its MACs | its MACs | its PSNR | margin | "
             "DDIM fewer steps (MACs, PSNR) | random (PSNR) | speed learned / best rule |",
             "|---|---|---|---|---|---|---|---|---|---|"]
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
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mnist-ddpm")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--num", type=int, default=64, help="held-out samples per row for PSNR")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved speed rounds")
    ap.add_argument("--bench-batch", type=int, default=8)
    ap.add_argument("--intervals", default="2,3,4,5,6")
    ap.add_argument("--extra", action="append", default=[], metavar="FAMILY=GLOB",
                    help="also measure the mask files matching GLOB (rows named by file stem) under FAMILY, e.g. "
                         "router=docs/results/methods-mnist-ddpm-50/masks/router-*.json (repeatable)")
    ap.add_argument("--only", help="comma-separated substrings: measure only matching rows (plus the original)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of OUTPUT/results.csv that this run does not measure (with --only)")
    ap.add_argument("--summarize", metavar="CSV", help="only print the per-budget summary of a results.csv")
    ap.add_argument("-o", "--output")
    args = ap.parse_args(argv)
    if args.summarize:
        print(summarize(pd.read_csv(args.summarize)))
        return 0
    if not args.output:
        ap.error("-o/--output is required")
    torch.manual_seed(0)
    wb = Workbench.load(args.model)
    k = args.steps
    intervals = [int(v) for v in args.intervals.split(",")]
    plain = our_rows(wb, k, {"original": None}, "original")[0]
    learned = {}
    for p in sorted((assets_dir() / "masks").glob(f"{args.model}-{k:03d}steps-b*.json")):
        mf, _ = wb.load_mask(p, steps=k)
        learned[f"learned {p.stem.rsplit('-', 1)[1]}"] = mf.mask
    rows = our_rows(wb, k, learned, "learned (blockmask)")
    unet = type(wb.model).__name__.startswith("UNet")
    if unet:
        rows += deepcache_rows(wb, k, (0, 1), intervals)
    else:
        rows += cachedit_rows(wb, k, (0.05, 0.1, 0.2, 0.3, 0.5), warmup=4)
        rows += our_rows(wb, k, {f"blocks N={n}": wb.baseline("blocks", steps=k, interval=n) for n in intervals},
                         "block caching")
    rows += our_rows(wb, k, {f"FORA N={n}": wb.baseline("fora", steps=k, interval=n) for n in intervals}, "FORA")
    rows += our_rows(wb, k, {f"uniform every {e}": wb.baseline("uniform", steps=k, every=e) for e in (2, 3)}, "uniform")
    for name, m in learned.items():
        ratio = wb.macs.ratio(m)
        fewer = max(1, round(ratio * k))
        rows += our_rows(wb, fewer, {f"DDIM {fewer} steps": None}, "DDIM fewer steps")
        rows += our_rows(wb, k, {f"random @ {name.split()[-1]}": wb.baseline("random", steps=k, macs_ratio=ratio)},
                         "random")
    rows += extra_rows(wb, k, args.extra)
    if args.only:
        keys = [s.strip() for s in args.only.split(",")]
        rows = [r for r in rows if any(s in r.name for s in keys)]
    if args.merge and (Path(args.output) / "results.csv").exists():  # rows of masks no longer shipped go
        stale = pd.read_csv(Path(args.output) / "results.csv")
        gone = set(stale.method[stale.family.isin(["learned (blockmask)", "random", "DDIM fewer steps"])])
        args._drop = gone - {r.name for r in rows}
    plain_macs, _ = count_macs(lambda: plain.run(0, 2))
    reference = np.concatenate([plain.run(5000 + j, min(args.batch, args.num - j * args.batch))
                                for j in range((args.num + args.batch - 1) // args.batch)])
    from blockmask.api import device_name

    out = []
    for r in rows:
        t0 = time.perf_counter()
        out.append(measure(wb, r, plain, steps=k, num=args.num, batch=args.batch, reference=reference,
                           plain_macs=plain_macs, rounds=args.rounds, bench_batch=args.bench_batch))
        print(f"{r.name}: MACs {out[-1]['macs_ratio']:.3f} PSNR {out[-1]['psnr']:.2f} dB "
              f"speed {out[-1]['speedup']:.2f}x ({time.perf_counter() - t0:.0f}s)", flush=True)
    df = pd.DataFrame(out)
    df["device"] = device_name(wb.device)
    dest = Path(args.output)
    if args.merge and (dest / "results.csv").exists():
        old = pd.read_csv(dest / "results.csv")
        old = old[~old.method.isin(getattr(args, "_drop", set()))]
        df = pd.concat([old[~old.method.isin(df.method)], df], ignore_index=True)
    df = df.sort_values("macs_ratio").reset_index(drop=True)
    df["note"] = df["note"].fillna("")
    dest.mkdir(parents=True, exist_ok=True)
    df.to_csv(dest / "results.csv", index=False)
    show = df.assign(MACs=df.macs_ratio.map("{:.1%}".format), PSNR=df.psnr.map("{:.2f}".format),
                     speed=[f"{a:.2f}× ({lo:.2f}–{hi:.2f})" for a, lo, hi in
                            zip(df.speedup, df.speedup_min, df.speedup_max)])
    (dest / "results.md").write_text(show[["method", "family", "MACs", "PSNR", "speed", "note"]].to_markdown(index=False)
                                     + f"\n\nSpeed: {df.device[0]}, batch {args.bench_batch}, {args.rounds} interleaved "
                                       f"rounds, median (min–max). PSNR: N={args.num} held-out samples.\n")
    import plotly.express as px

    fig = px.line(df.sort_values(["family", "macs_ratio"]), x="macs_ratio", y="psnr", color="family", markers=True,
                  hover_name="method", labels={"macs_ratio": "MACs (fraction of the original)",
                                               "psnr": "PSNR vs original (dB, held-out seeds)"},
                  title=f"{args.model}, {k} DDIM steps: fidelity at equal compute")
    fig.update_layout(template="plotly_white", width=1000, height=600)
    fig.write_html(dest / "pareto.html", include_plotlyjs="cdn")
    try:
        fig.write_image(dest / "pareto.png")
    except Exception as e:  # kaleido needs a Chromium
        print(f"no PNG: {str(e).splitlines()[0][:120]}", file=sys.stderr)
    (dest / "summary.md").write_text(summarize(df))
    print((dest / "results.md").read_text())
    print((dest / "summary.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
