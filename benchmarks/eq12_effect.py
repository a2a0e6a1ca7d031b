"""What the paper's Eq. 12 rectification does on real architectures, beside blockmask's exact one.

    python benchmarks/eq12_effect.py MASK.json [MASK.json ...] [--num 32]

For each mask: MACs before, after exact rectification (liveness on the measured consumer graph:
the images cannot change) and after Eq. 12 as the paper states it for a chain
(``M[k,i] <- 0 if M[k,i+1] = 0 and M[k+1,i] = 1`` over the unit order), and the PSNR of each
against the plain model on held-out seeds 5000.. . On a U-Net (skip connections) and a DiT
(residual stream) Eq. 12 is not exact: it removes work that later units read.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from blockmask.workbench import Workbench
from blockmask.eval.evaluate import heldout_psnr
from blockmask.io.maskfile import MaskFile
from blockmask.core.rectify import rectify_eq12


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("masks", nargs="+")
    ap.add_argument("--num", type=int, default=32)
    args = ap.parse_args(argv)
    print("| mask | MACs | exact rectification | Eq. 12 | PSNR | PSNR exact | PSNR Eq. 12 | cells Eq. 12 removes that were live |")
    print("|---|---|---|---|---|---|---|---|")
    for path in args.masks:
        wb = Workbench.load(MaskFile.load(path).model)
        mf, _ = wb.load_mask(path)
        raw = np.array(mf.meta.get("rectified", {}).get("raw_mask") or mf.mask, bool)
        if raw.shape != mf.mask.shape:  # a file from before samplers/blocks were units: use its mask
            raw = mf.mask
        exact = wb.rectify(raw).mask
        eq12 = rectify_eq12(raw)
        wrong = int((exact & ~eq12).sum())
        p = wb.macs
        dbs = [heldout_psnr(wb, m, num=args.num) for m in (raw, exact, eq12)]
        print(f"| {path} | {p.ratio(raw):.1%} | {p.ratio(exact):.1%} | {p.ratio(eq12):.1%} | "
              f"{dbs[0]:.2f} | {dbs[1]:.2f} | {dbs[2]:.2f} | {wrong} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
