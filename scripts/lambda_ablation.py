"""Ablation: timestep-aware λ_k (docs/RESULTS.md, "Ablation: timestep-aware λ_k").

    OMP_NUM_THREADS=1 nice python scripts/lambda_ablation.py -o /tmp/lambda-ablation

Trains masks on mnist-ddpm (K = 20 DDIM steps, 10 iterations per step, batch 2, seed 0) with the
default recipe (feature error relative to Δ_k², MAC-weighted sparsity), no budget and no refinement
(the learned mask itself is judged), over a sweep of the λ scale, for each λ_k setting:

* ``piecewise, rank``    — Eq. 10 on Δ_k's rank (``lambda_norm="rank"``);
* ``piecewise, minmax``  — Eq. 10 on min–max normalised Δ (the paper's normalisation, the default before);
* ``constant``           — one λ for every step (the ablation);
* ``piecewise, rank, swapped`` — λ_low and λ_high swapped: the steps whose output changes *least*
  get the small λ (are protected).

Each mask's final images are compared with the plain model's on ``--num`` held-out samples (seeds
5000.., never used for training). Each setting gives a PSNR-vs-MACs curve; the table reads every
curve at ``--at-macs`` (linear interpolation between the two sweep points around it) and gives the
paired difference to constant λ there, with a bootstrap 95% interval over the images. Masks already
in ``-o`` are reused, not trained again.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from blockmask.workbench import Workbench
from blockmask.eval.evaluate import HELDOUT_SEED
from blockmask.learning.train import TrainConfig
from blockmask.learning.run import run_training

SETTINGS = {"piecewise, rank": {"lambda_mode": "piecewise", "lambda_norm": "rank"},
            "piecewise, minmax": {"lambda_mode": "piecewise", "lambda_norm": "minmax"},
            "constant": {"lambda_mode": "constant"},
            "piecewise, rank, swapped": {"lambda_mode": "piecewise", "lambda_norm": "rank", "lambda_low": 1.0,
                                         "lambda_high": 0.1}}


def images(wb, mask, steps: int, num: int, batch: int = 16) -> np.ndarray:
    out = []
    for b, start in enumerate(range(0, num, batch)):
        m = min(batch, num - start)
        out.append(wb.images(wb.generate(mask, steps=steps, seed=HELDOUT_SEED + b, num_images=m)).numpy())
    return np.concatenate(out).astype(np.float64)


def read_at(points: list[tuple[float, np.ndarray]], at: float, idx=None) -> float | None:
    """PSNR (dB) at MAC ratio ``at`` on the curve of (MACs, per-image MSE) points, images ``idx``."""
    pts = sorted((m, 10 * np.log10(1 / (mse if idx is None else mse[idx]).mean())) for m, mse in points)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if not xs[0] <= at <= xs[-1]:
        return None
    return float(np.interp(at, xs, ys))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mnist-ddpm")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--lams", default="3,6,12,24,48", help="λ scales of the sweep")
    ap.add_argument("--at-macs", type=float, default=0.5, help="read every curve at this MAC ratio")
    ap.add_argument("--num", type=int, default=64, help="held-out samples (seeds 5000..)")
    ap.add_argument("-o", "--output", required=True, help="folder for the masks and ablation.json")
    args = ap.parse_args(argv)
    wb = Workbench.load(args.model)
    plain = images(wb, None, args.steps, args.num)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    lams = [float(v) for v in args.lams.split(",")]
    curves: dict[str, list] = {}
    table = {}
    for name, fields in SETTINGS.items():
        curves[name], table[name] = [], []
        for lam in lams:
            path = out / f"{name.replace(', ', '-')}-lam{lam:g}.json"
            if path.exists():
                mf, _ = wb.load_mask(path)
            else:
                cfg = TrainConfig(steps=args.steps, iters=args.iters, batch=args.batch, lam=lam, **fields)
                mf, _ = run_training(wb, cfg, path, progress=False)
            mse = ((images(wb, mf.mask, args.steps, args.num) - plain) ** 2).mean(axis=(1, 2, 3))
            macs = wb.macs.ratio(mf.mask)
            curves[name].append((macs, mse))
            lk = np.asarray(mf.meta["lambda"], float)
            table[name].append({"lam": lam, "macs": macs, "psnr": float(10 * np.log10(1 / mse.mean())),
                                "rows_at_smaller_lambda": int((lk[1:] < lk[1:].max()).sum()),
                                "mask": mf.mask.astype(int).tolist()})
            print(f"{name}, λ={lam:g}: MACs {macs:.1%}, PSNR {table[name][-1]['psnr']:.2f} dB, "
                  f"{table[name][-1]['rows_at_smaller_lambda']} rows at the smaller λ", flush=True)
    rng = np.random.default_rng(0)
    summary = {}
    for name in SETTINGS:
        at = read_at(curves[name], args.at_macs)
        ref = read_at(curves["constant"], args.at_macs)
        boot = []
        for _ in range(1000):  # the paired difference over resampled images
            i = rng.integers(0, args.num, args.num)
            a, b = read_at(curves[name], args.at_macs, i), read_at(curves["constant"], args.at_macs, i)
            if a is not None and b is not None:
                boot.append(a - b)
        same_lam = [int((np.array(p["mask"]) != np.array(q["mask"])).sum()) for p, q in zip(table[name], table["constant"])]
        summary[name] = {"psnr_at": at, "vs_constant": None if at is None or ref is None else at - ref,
                         "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))] if boot else None,
                         "cells_differing_at_same_lambda": same_lam}
    print(f"\n| λ_k | rows at the smaller λ | (MACs, PSNR dB) at λ = {', '.join(f'{v:g}' for v in lams)} "
          f"| PSNR at {args.at_macs:.0%} MACs | vs constant λ (dB, 95% CI) | cells ≠ constant, same λ |")
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        pts = "; ".join(f"{p['macs']:.1%}, {p['psnr']:.2f}" for p in table[name])
        at = "—" if s["psnr_at"] is None else f"{s['psnr_at']:.2f}"
        vs = "—" if s["vs_constant"] is None else f"{s['vs_constant']:+.2f} [{s['ci95'][0]:+.2f}, {s['ci95'][1]:+.2f}]"
        print(f"| {name} | {table[name][0]['rows_at_smaller_lambda']} | {pts} | {at} | {vs} | "
              f"{', '.join(map(str, s['cells_differing_at_same_lambda']))} |")
    (out / "ablation.json").write_text(json.dumps({"args": vars(args), "points": table, "summary": summary}, indent=1))
    print(f"\nwrote {out}/ablation.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
