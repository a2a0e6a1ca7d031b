"""How many class-conditional samples of a bundled model the offline classifier recognizes as the requested
digit, per guidance scale (64 samples, DDIM 25 steps, seed 0 — the numbers in assets/models/TRAINING.md).
Works on every class-conditional model folder: mnist-dit (pixel space), mnist-ldm and mnist-pixart
(decoded through their VAE).

    python scripts/dit_accuracy.py --guidance 1 1.5 2 3 [--folder assets/models/mnist-dit]
    python scripts/dit_accuracy.py --folder assets/models/mnist-ldm --guidance 1 1.5 2 3 --seed 1 --set-default

``--set-default`` writes the scale with the highest accuracy into the folder's blockmask.json as
``default_guidance_scale`` (what the apps, ``blockmask sample`` and the quality test use). Choose it on
another seed than the test's (the test samples seed 0): ``--seed 1``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from blockmask.data.classifier import conditional_accuracy  # noqa: E402
from blockmask.workbench import Workbench  # noqa: E402


def set_default_guidance(folder: Path, guidance: float) -> None:
    """Rewrite blockmask.json with ``default_guidance_scale`` (temp file, then rename)."""
    path = folder / "blockmask.json"
    info = json.loads(path.read_text()) if path.is_file() else {}
    info["default_guidance_scale"] = float(guidance)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(info, indent=1) + "\n")
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", default=str(REPO / "assets" / "models" / "mnist-dit"))
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0])
    ap.add_argument("--num", type=int, default=64)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set-default", action="store_true",
                    help="write the most accurate guidance scale to the folder's blockmask.json")
    args = ap.parse_args()
    folder = Path(args.folder)
    if not ((folder / "config.json").exists() or (folder / "model_index.json").exists()):
        sys.exit(f"error: no diffusers model folder at {args.folder}")
    wb = Workbench.load(str(folder))
    accs = {}
    for g in args.guidance:
        accs[g] = conditional_accuracy(wb, g, n=args.num, steps=args.steps, seed=args.seed)
        print(f"guidance {g:g}: {accs[g]:.1%} of {args.num} samples recognized as the requested digit "
              f"(seed {args.seed})", flush=True)
    if args.set_default:
        best = max(accs, key=lambda g: (accs[g], -g))  # ties: the weaker guidance
        set_default_guidance(folder, best)
        print(f"default_guidance_scale = {best:g} written to {folder / 'blockmask.json'}", flush=True)


if __name__ == "__main__":
    main()
