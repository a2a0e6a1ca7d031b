"""MACs of the paper's architectures (random init on the meta device: shapes only, instant).

    python benchmarks/reference_macs.py [--configs tests/configs/reference]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from blockmask.hooks.costs import measure_macs
from blockmask.io.models import from_config
from blockmask.hooks.discover import discover_units

STEPS = {"ddpm-cifar10-32": (100, 0.61), "ddpm-lsun-256": (100, 24.9), "dit-xl-2-256": (100, 11.9),
         "dit-xl-2-512": (50, 26.3), "ldm-cin256": (250, 25.0), "pixart-sigma-xl-2-1024": (50, 107.8)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--configs", default=str(Path(__file__).resolve().parents[1] / "tests/configs/reference"))
    args = ap.parse_args()
    print("| config | class | units | GMACs/fwd | units' share | steps | total T | paper T |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (steps, paper) in STEPS.items():
        path = Path(args.configs) / f"{name}.json"
        if not path.exists():
            continue
        model = from_config(path, device="meta")
        units = discover_units(model)
        p = measure_macs(model, units)
        share = p.unit_macs.sum() / p.full_step
        print(f"| {name} | {type(model).__name__} | {len(units)} | {p.full_step / 1e9:.2f} | {share:.1%} | {steps} | "
              f"{p.baseline(steps) / 1e12:.3f} | {paper} |")


if __name__ == "__main__":
    main()
