"""How many class-conditional mnist-dit samples the offline classifier recognizes as the requested
digit, per guidance scale (64 samples, DDIM 25 steps, seed 0 — the numbers in assets/models/TRAINING.md).

    python scripts/dit_accuracy.py --guidance 1 1.5 2 3 [--folder assets/models/mnist-dit]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blockmask.data.classifier import conditional_accuracy  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", default=str(REPO / "assets" / "models" / "mnist-dit"))
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    ap.add_argument("--num", type=int, default=64)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args()
    if not (Path(args.folder) / "config.json").exists():
        sys.exit(f"error: no diffusers model folder at {args.folder}")
    for g in args.guidance:
        acc = conditional_accuracy(args.folder, g, n=args.num, steps=args.steps)
        print(f"guidance {g:g}: {acc:.1%} of {args.num} samples recognized as the requested digit", flush=True)


if __name__ == "__main__":
    main()
