"""``blockmask train --steps auto``: the budget planner (:mod:`blockmask.learning.planner`, ``blockmask plan``)
under the train command's name. The step count K and the mask are chosen together for a MAC budget
relative to the plain model at a reference step count; plain DDIM with fewer steps is always a
candidate, and the choice is checked on validation seeds it never saw."""

from __future__ import annotations

from blockmask.core.errors import BlockmaskError
from blockmask.io.files import OutputLock, check_output_file
from blockmask.io.maskfile import MaskFile
from blockmask.learning.planner import Planner
from blockmask.learning.run import RefineConfig
from blockmask.learning.train import TrainConfig


def run_budget_auto(wb, cfg: TrainConfig, output, *, target_macs: float, ref_steps: int, refine=None,
                    condition=None, progress: bool = True, **planner) -> tuple[MaskFile, dict]:
    """Plan ``target_macs`` × the plain ``ref_steps``-step MACs and write the schedule as a mask file.
    ``cfg``'s iterations and batch are the learned candidates'; ``refine.batch``, when not its
    default, is the calibration sample count (at least 2; else the planner's 64); ``planner``: more
    :class:`~blockmask.learning.planner.Planner` options."""

    if condition is not None and condition.prompt_embeds is not None:
        raise BlockmaskError("--steps auto plans class-conditional and unconditional models (text models with "
                             "--random-prompts); drop the prompts")
    output = check_output_file(output)
    opts = {"train_iters": cfg.iters, "train_batch": cfg.batch, "recipes": (cfg.recipe,) if cfg.recipe == "paper"
            else ("blockmask", "paper"), **planner}
    if refine is not None:
        if refine.batch != RefineConfig().batch:  # --calib-batch given: the calibration samples
            opts.setdefault("calib", max(2, refine.batch))
        opts.setdefault("calib_seed", refine.seed)
        opts.setdefault("valid_seed", max(refine.validate_seed, refine.seed + opts.get("calib", 64)) + 10_000)
    p = Planner(wb, ref_steps=ref_steps, unit="macs", progress=progress, **opts)
    try:
        p.check(target_macs)
        with OutputLock(output):
            s = p.plan(target_macs)
            mf = s.to_mask_file(output)
    finally:
        p.close()
    return mf, {"output": str(output), "steps": s.steps, "macs_vs_ref": s.macs_ratio, "family": s.family,
                "provenance": s.provenance, "validation": s.validation, "calibration": s.calibration,
                "train_seconds": s.plan_seconds, "macs": mf.meta["macs"]}
