"""``--steps auto``: the step count K and the mask chosen together for a MAC budget relative to the
plain model at a reference step count (beyond the paper; docs/METHOD.md). Every K of a small grid
gets the best rule-or-learned start within its share of the budget on the calibration seeds; the
best K is then refined like a fixed-K budget run (blockmask/train_run.py)."""

from __future__ import annotations

import dataclasses
import math
import time

from .mask import MaskFile
from .train import TrainConfig
from .train_run import RefineConfig, _calibrate, _check_output, _lock, _peak_memory, check_budget


def step_grid(target: float, ref_steps: int) -> list[int]:
    """Step counts worth trying for ``--steps auto``: from the fewest that the budget affords at full
    compute (plain DDIM) up to the reference count."""
    k_min = max(2, math.ceil(target * ref_steps - 1e-9))
    grid = {k_min, ref_steps} | {int(round(k_min * f)) for f in (1.25, 1.5, 2.0, 2.5)}
    return sorted(k for k in grid if k_min <= k <= ref_steps)


def run_budget_auto(wb, cfg: TrainConfig, output, *, target_macs: float, ref_steps: int,
                    refine: RefineConfig | None = None, condition=None, progress: bool = True,
                    steps: list[int] | None = None) -> tuple[MaskFile, dict]:
    """``--steps auto``: choose the step count K and the mask together for a budget of
    ``target_macs`` × the plain model's MACs at ``ref_steps``; judged, like the masks, by the final
    samples' error to the plain ``ref_steps``-step model on the calibration seeds. K = the fewest
    steps is plain DDIM with fewer steps (all ones), so the choice can only match or beat it there."""
    rc = refine or RefineConfig()
    check_budget(wb, ref_steps, target_macs)
    output = _check_output(output)
    with _lock(wb, output):
        return _run_budget_auto(wb, cfg, output, target_macs=target_macs, ref_steps=ref_steps, rc=rc,
                                condition=condition, progress=progress, steps=steps)


def _run_budget_auto(wb, cfg, output, *, target_macs, ref_steps, rc, condition, progress, steps):
    t0 = time.perf_counter()
    tried = []
    best = None
    for k in steps or step_grid(target_macs, ref_steps):
        ratio = min(1.0, target_macs * ref_steps / k)
        c = dataclasses.replace(cfg, steps=k)
        mask, meta = _calibrate(wb, c, None, ratio, rc, condition, False, ref_steps=ref_steps, refine=False)
        tried.append({"steps": k, "macs_ratio_at_k": ratio, "start": meta["start"], "error": meta["error"]})
        if progress:
            print(f"K={k}: MAC ratio {ratio:.3f} at K, best start {meta['start']}, error {meta['error']:.4g}",
                  flush=True)
        if best is None or meta["error"] < best[2]:
            best = (k, mask, meta["error"])
    k = best[0]
    c = dataclasses.replace(cfg, steps=k)
    mask, meta = _calibrate(wb, c, None, min(1.0, target_macs * ref_steps / k), rc, condition, progress,
                            ref_steps=ref_steps, refine=True)
    mask = wb.rectify(mask).mask
    p = wb.macs
    total = p.total(mask)
    mf = wb.mask_file(mask, {"training": {**cfg.to_json(), "steps": k, "scheduler": wb.scheduler_name},
                             "budget": {"target_macs": target_macs, "ref_steps": ref_steps, "steps_auto": tried,
                                        "macs_vs_ref": total / p.baseline(ref_steps)},
                             "calibration": meta, "train_seconds": time.perf_counter() - t0})
    mf.save(output)
    return mf, {"output": str(output), "steps": k, "macs_vs_ref": total / p.baseline(ref_steps), "tried": tried,
                "train_seconds": time.perf_counter() - t0, "macs": mf.meta["macs"], "cells_removed": 0,
                "per_step_seconds": 0.0, "lambda_scale": cfg.lam, **_peak_memory(wb.device)}
