"""All-ones overhead: masked sampling with an all-ones mask vs the plain model, same process,
same batch, after warm-up, runs interleaved; prints the median overhead in percent.

    python benchmarks/overhead.py --model config:tests/configs/reference/ddpm-cifar10-32.json --steps 20 --batch 4
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from blockmask.workbench import Workbench


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="mnist-ddpm")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    wb = Workbench.load(args.model, device=args.device)
    ones = wb.baseline("ones", steps=args.steps)
    r = wb.bench(ones, batch=args.batch, repeats=args.repeats, warmup=1)
    overhead = (r["masked_s"] / r["plain_s"] - 1) * 100
    pair = [(m / p - 1) * 100 for p, m in zip(r["plain_all_s"], r["masked_all_s"])]
    print(json.dumps({"model": args.model, "device": r["device_name"], "batch": args.batch, "steps": args.steps,
                      "plain_s": r["plain_s"], "ones_s": r["masked_s"], "overhead_pct": overhead,
                      "pairwise_overhead_pct_median": float(np.median(pair))}, indent=1))


if __name__ == "__main__":
    main()
