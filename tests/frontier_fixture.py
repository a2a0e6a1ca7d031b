"""A small synthetic frontier file for the tiny random-init U-Net (tests/configs/tiny-unet.json), with
K_ref=6: three planned points (plain 3 steps, DeepCache b0 N=3, DeepCache b1 N=2 — the masks are the
real rule masks), the peers of :func:`blockmask.learning.frontierfile.peer_points` and made-up PSNRs (what a
test needs is the shape of the file, not the numbers). Written in a second, unlike
``benchmarks/frontier.py --dry-run --dense`` (several seconds)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from blockmask.learning.frontierfile import Frontier, peer_points

REF = 6
PLANS = {"tiny-unet-006ref-b50p00-plan.json": ("DDIM 3 steps", 0.5),
         "tiny-unet-006ref-b60p00-plan.json": ("DeepCache b0 N=3", 0.6),
         "tiny-unet-006ref-b75p00-plan.json": ("DeepCache b1 N=2", 0.75)}


def tiny_frontier(wb, model: str = "tiny-unet") -> Frontier:
    peers = {c.name: c for c in peer_points(wb, REF)}
    rows, masks = [], {}

    def ratio(c):
        return c.steps / REF if c.mask is None else wb.macs.total(c.mask) / wb.macs.baseline(REF)

    for name, (src, budget) in PLANS.items():
        c = peers[src]
        r = ratio(c)
        rows.append({"kind": "plan", "name": name, "family": c.family, "provenance": src, "budget": budget,
                     "steps": c.steps, "macs_ratio": r, "valid_psnr": 10 + 20 * budget, "test_psnr": 10.5 + 20 * budget,
                     "met_by": None})
        masks[name] = c.mask
    for c in peers.values():
        r = ratio(c)
        rows.append({"kind": "peer fewer-steps" if c.family == "fewer-steps" else "peer rule", "name": c.name,
                     "family": c.family, "provenance": None, "budget": None, "steps": c.steps, "macs_ratio": r,
                     "valid_psnr": 9 + 20 * r, "test_psnr": 9 + 20 * r, "met_by": ""})
        masks[c.name] = c.mask
    return Frontier(model, REF, list(wb.unit_names), pd.DataFrame(rows), masks, {"synthetic": True})


def write_tiny_frontier(folder: Path, wb=None) -> Path:
    """``folder/tiny-unet-006ref.json`` (point ``$BLOCKMASK_FRONTIER_DIR`` at ``folder``)."""
    if wb is None:
        from blockmask.workbench import Workbench

        wb = Workbench.load("config:" + str(Path(__file__).resolve().parent / "configs" / "tiny-unet.json"))
    folder.mkdir(parents=True, exist_ok=True)
    return tiny_frontier(wb).save(folder / f"tiny-unet-{REF:03d}ref.json")
