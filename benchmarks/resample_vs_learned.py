"""A mask learned at one step count, resampled to another (rows aligned on DDIM timesteps,
blockmask.core.resample), against the mask learned at that step count, at the same budget, and against
call-order resampling (row j of K' takes row floor(j K / K')): MAC ratio and held-out PSNR against the
plain model (same seeds, seeds 5000.., class labels cycling 0..9).

    BLOCKMASK_ASSETS=assets python benchmarks/resample_vs_learned.py --model mnist-ddpm --num 32
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from blockmask.adapters import adapter_for
from blockmask.workbench import Workbench
from blockmask.eval.evaluate import HELDOUT_SEED, psnr
from blockmask.core.resample import resample_mask
from blockmask.sampling.sample import Condition


def images(wb, mask, k, num, batch=16):
    out = []
    for b, start in enumerate(range(0, num, batch)):
        m = min(batch, num - start)
        cond = Condition(class_labels=[i % 10 for i in range(m)]) if adapter_for(wb.model).num_classes(wb.model) else None
        out.append(wb.images(wb.generate(mask, steps=k, seed=HELDOUT_SEED + b, num_images=m, condition=cond)).numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="mnist-ddpm")
    ap.add_argument("--num", type=int, default=32)
    ap.add_argument("--budgets", default="35,55,75")
    args = ap.parse_args()
    torch.set_num_threads(1)
    wb = Workbench.load(args.model)
    plain = {k: images(wb, None, k, args.num) for k in (50, 100)}
    print(f"| budget | K | mask | MACs vs plain | PSNR vs plain (dB), {args.num} held-out images |")
    print("|---|---|---|---|---|")
    for b in args.budgets.split(","):
        mf = {k: wb.load_mask(f"{args.model}-{k:03d}steps-b{b}")[0] for k in (50, 100)}
        for k, other in ((50, 100), (100, 50)):
            src = mf[other]
            resampled = resample_mask(src.mask, src.scheduler["timesteps"], wb.timesteps(k))
            by_order = src.mask[(np.arange(k) * other) // k]
            for label, m in ((f"learned at {k}", mf[k].mask), (f"learned at {other}, resampled on timesteps", resampled),
                             (f"learned at {other}, rows by call order", by_order)):
                p = psnr(images(wb, m, k, args.num), plain[k])[1]
                print(f"| b{b} | {k} | {label} | {wb.macs.ratio(m):.3f} | {p:.2f} |", flush=True)


if __name__ == "__main__":
    main()
