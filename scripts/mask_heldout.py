"""Record each shipped mask's held-out PSNR in its file (``meta.heldout``), for the apps' preset lists.

    python scripts/mask_heldout.py assets/masks/mnist-ddpm-050steps-b*.json [--num 32]

PSNR of the mask's final images against the plain model's on ``--num`` samples from seed 5000
(never a calibration seed: budget runs calibrate on seeds 1000..), at the guidance scale the mask was
trained at (its meta.training, else 1); see blockmask.eval.evaluate.heldout_psnr.
"""

from __future__ import annotations

import argparse
import sys

from blockmask.workbench import Workbench
from blockmask.eval.evaluate import HELDOUT_SEED, heldout_psnr
from blockmask.io.maskfile import MaskFile


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("masks", nargs="+")
    ap.add_argument("--num", type=int, default=32)
    args = ap.parse_args(argv)
    benches: dict[str, Workbench] = {}
    for path in args.masks:
        mf = MaskFile.load(path)
        wb = benches.setdefault(mf.model, Workbench.load(mf.model))
        mf, _ = wb.load_mask(path)
        g = float((mf.meta.get("training") or {}).get("guidance_scale", 1.0))
        db = heldout_psnr(wb, mf.mask, num=args.num, guidance=g)
        mf.meta["heldout"] = {"psnr": db, "num": args.num, "seed": HELDOUT_SEED, "guidance_scale": g}
        mf.save(path)
        print(f"{path}: MACs {wb.macs.ratio(mf.mask):.1%}, held-out PSNR {db:.2f} dB (N={args.num})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
