"""Masks of the other methods (docs/METHODS_COMPARED.md) for the bundled models at K=50, budgets 35..75%,
in one process per model (the same files ``blockmask method`` writes, plus a ``.log`` with its summary).

    python scripts/methods_masks.py [MODEL ...]      (default: mnist-ddpm mnist-dit; MNIST via $BLOCKMASK_MNIST)

feature-change: measured and searched per budget. router: trained once (its training does not depend on
the budget, as in L2C), then thresholded per budget (``refit``, what ``--from-scores`` does). global:
trained once at B = 0.55, then thresholded per budget (compute: a DiP-GO run per budget would retrain
with that budget's penalty).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from blockmask.learning import methods
from blockmask.workbench import Workbench
from blockmask.io.maskfile import MaskFile
from blockmask.cli.method import save

BUDGETS = (35, 45, 55, 65, 75)
TRAIN_AT = {"router": 35, "global": 55}


def main(models: list[str]) -> int:
    for model in models or ["mnist-ddpm", "mnist-dit"]:
        out = Path(f"docs/results/methods-{model}-50/masks")
        out.mkdir(parents=True, exist_ok=True)
        wb = Workbench.load(model)
        for kind in ("router", "global", "feature-change"):
            first = TRAIN_AT.get(kind)
            for b in ([first] if first else []) + [b for b in BUDGETS if b != first]:
                path = out / f"{kind}-b{b}.json"
                if path.exists():
                    continue
                try:
                    if first and b != first:
                        mask, meta = methods.refit(wb, MaskFile.load(out / f"{kind}-b{first}.json").meta,
                                                   target_macs=b / 100)
                    else:
                        mask, meta = wb.method(kind, steps=50, target_macs=b / 100, progress=True)
                except Exception as e:  # one failed mask does not stop the others
                    print(f"FAILED: {kind} {model} 0.{b}: {e}", flush=True)
                    continue
                summary = save(wb, mask, meta, path)
                (out / f"{kind}-b{b}.log").write_text(json.dumps(summary, indent=1) + "\n")
                print(path, round(summary["macs_ratio"], 4), round(summary["train_seconds"], 1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
