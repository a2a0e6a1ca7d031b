"""Wall time of the apps' Generate button on the CPU: original + masked from the same seeds, as
``blockmask.viz.compare.compare`` runs it (warm-up included, nothing cached), with the model's
default learned mask.

    python benchmarks/app_generate.py                       # mnist-ddpm, 4 images, K = 50 and 100
    python benchmarks/app_generate.py --model mnist-dit --guidance 1.5 --steps 50
"""

from __future__ import annotations

import argparse
import time

import torch

from blockmask.viz import compare, presets
from blockmask.viz.context import Draw, load_context


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist-ddpm")
    ap.add_argument("--steps", type=int, nargs="+", default=[50, 100])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=1.0)
    args = ap.parse_args()
    ctx = load_context(args.model, "ddim", device="cpu")
    for k in args.steps:
        mask, source, _ = presets.initial_mask(ctx, k)
        compare._CACHE.clear()  # measure the work, not the app's result cache
        t0 = time.perf_counter()
        r = compare.compare(ctx, mask, Draw(seed=1, num_images=args.images, guidance_scale=args.guidance))
        wall = time.perf_counter() - t0
        print(f"{args.model} K={k} ({source}): original + masked, {args.images} images each: {wall:.2f} s "
              f"(torch threads {torch.get_num_threads()}; measured speedup {r.speedup:.2f}x)")


if __name__ == "__main__":
    main()
