"""A complete training run around :func:`blockmask.learning.train.train_mask`: checkpoints and resume,
rectification, MAC budgets (``target_macs``), sweeps, and the mask file with its metadata.

A MAC budget B (``target_macs``), recipe ``blockmask`` (the default):

1. the per-step trainer learns a mask at the given λ (checkpointed, resumable), brought to B by
   its scores;
2. every hand-made rule blockmask can express (DeepCache at every branch and interval, FORA,
   whole-block caching, uniform) and the learned mask are scored on the *final samples* of a few
   calibration seeds (:mod:`blockmask.learning.refine`); the best one within B is the start;
3. local moves within B (:func:`blockmask.learning.refine.refine`) improve it on the same seeds.

Recipe ``paper`` (or ``refine=False``): geometric bisection on λ until the rectified MAC ratio is
within ±2% of B, as the paper tunes its λ.

Checkpoint files are read by :mod:`blockmask.learning.checkpoints`; ``--steps auto`` is the planner (:mod:`blockmask.learning.auto`).
"""

from __future__ import annotations

import dataclasses
import math
import resource
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from blockmask.core.errors import BlockmaskError, CheckpointError, MaskError
from blockmask.core.rectify import rectify_eq12
from blockmask.core.validate import check_int
from blockmask.io.files import OutputLock, atomic_write_json, check_output_file
from blockmask.io.maskfile import MaskFile
from blockmask.learning import refine as rf
from blockmask.learning.checkpoints import CKPT_FORMAT, checkpoint_lam, checkpoint_path, load_checkpoint, load_search, search_path
from blockmask.learning.train import Observers, StepReport, TrainConfig, TrainState, train_mask
from blockmask.sampling.distributed import is_main
from blockmask.sampling.sample import Condition, SamplingRun

BUDGET_TOLERANCE = 0.02  # relative: the final MAC ratio is within ±2% of the target


def peak_memory(device: torch.device) -> dict:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def train_once(wb, cfg: TrainConfig, *, condition=None, ckpt: Path | None = None, resume: bool = False,
               callback: Callable[[StepReport], None] | None = None, progress: bool = True,
               keep_checkpoint: bool = False) -> TrainState:
    """One training run with per-step atomic checkpoints at ``ckpt`` (deleted on success unless
    ``keep_checkpoint``: then the caller deletes it once its output is in place)."""
    state = None
    if ckpt is not None:
        if resume:
            state = load_checkpoint(ckpt, wb, cfg)
        elif ckpt.exists():
            raise BlockmaskError(f"a checkpoint of an interrupted run exists at {ckpt}: pass --resume to continue "
                                 "it, or delete it")
    meta = {"format": CKPT_FORMAT, "model": wb.loaded.spec, "fingerprint": wb.loaded.fingerprint,
            "units": wb.unit_names, "scheduler": wb.scheduler_name, "config": cfg.to_json()}

    main = is_main(wb.device)
    save = None if ckpt is None or not main else (lambda st: atomic_write_json(ckpt, {**meta, "state": st.to_json()}))
    state = train_mask(wb.model, wb.scheduler(), cfg, wb.macs, condition=condition, state=state,
                       observers=Observers(checkpoint=save, callback=callback, progress=progress))
    if ckpt is not None and main and ckpt.exists() and not keep_checkpoint:
        ckpt.unlink()
    return state


def _candidates(wb, steps: int, target: float, learned: np.ndarray | None) -> dict[str, np.ndarray]:
    """Every rule, the rules filled to the budget, the cheapest mask and (if given) the learned one."""

    cost = rf.Budget(wb.macs, wb.graph)
    cands = rf.rule_masks(wb, steps)
    cheapest = np.zeros((steps, len(wb.units)), bool)
    cheapest[0] = True
    cands["reuse all"] = cheapest
    if learned is not None:
        cands["learned (per step)"] = learned
    partial = {f"{n.split(' N=')[0]} rows": cost.rectified(m)[1] for n, m in list(cands.items()) if n.endswith(" N=2")}
    partial["reuse all rows"] = cheapest[1]
    cands.update(rf.schedule_masks(cost, steps, target, partial))
    if target >= 1:
        cands["all ones"] = np.ones((steps, len(wb.units)), bool)
    return cands


def start_masks(wb, sources, steps: int) -> dict[str, np.ndarray]:
    """The masks named in ``RefineConfig.starts`` as start candidates ("start NAME"), checked against the
    model and ``steps`` (a bad one is a one-line MaskError, so callers check them before any work)."""
    out = {}
    for src in sources:
        mf, _ = wb.load_mask(src, steps=steps)
        if mf.num_steps != steps:
            raise MaskError(f"start mask {src} has {mf.num_steps} steps, the run has {steps}")
        out[f"start {Path(str(src)).stem}"] = mf.mask
    return out


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What every stage of one training run shares: its conditioning, the per-step callback and
    whether progress bars show."""

    condition: object = None
    callback: Callable[[StepReport], None] | None = None
    progress: bool = True


def _calibrate(wb, cfg: TrainConfig, learned: np.ndarray | None, target: float, rc: RefineConfig, run: RunContext,
               *, ref_steps: int | None = None, refine: bool = True):
    """Steps 2–3 of a budget run (module doc): best start among rules + learned, then refinement.
    Returns (mask, meta); meta["error"] is the final calibration error."""
    condition, progress = run.condition, run.progress

    cost = rf.Budget(wb.macs, wb.graph)
    cands = {**_candidates(wb, cfg.steps, target, learned), **start_masks(wb, rc.starts, cfg.steps)}
    cond = condition or Condition(class_labels=list(cfg.class_labels) if cfg.class_labels else None)
    cond = dataclasses.replace(cond, guidance_scale=cfg.guidance_scale)
    def calibration(seed):
        ref = None if ref_steps is None else rf.Calibration.plain_final(wb.model, wb.scheduler(), steps=ref_steps,
                                                                       seed=seed, batch=rc.batch, condition=cond)
        loop = SamplingRun(wb.model, num_steps=cfg.steps, scheduler=wb.scheduler(), seed=seed, batch=rc.batch,
                           condition=cond)
        return rf.Calibration(loop, reference=ref, decode=wb.images)  # judged on the images, as PSNR is

    calib = calibration(rc.seed)
    budget = target  # never above B: the mask is compared with rules at <= B
    name, start, err, scored = rf.best_start(calib, cands, cost, budget)
    meta = {"seed": rc.seed, "batch": rc.batch, "start": name, "start_error": err, "error": err,
            "candidates": {k: {"macs_ratio": c, "error": e} for k, (c, e) in scored.items()}}
    if not refine or rc.passes == 0:
        return start, meta
    rows = [r for m in cands.values() for r in cost.rectified(m)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=rc.passes * (cfg.steps - 1), desc=f"refining from {name}")
    mask, rep = rf.refine(calib, start, rows=rows, cost=cost, budget=budget, passes=rc.passes, time_limit=rc.time_limit,
                          progress=(lambda p, k, e: (bar.update(1), bar.set_postfix(err=f"{e:.3g}"))) if bar else None)
    if bar is not None:
        bar.close()
    meta = {**meta, "error": rep.error, "refine": rep.to_json()}
    if rep.accepted:  # refinement fits its seeds; keep it only if it also helps on seeds it never saw
        val = calibration(rc.validate_seed)
        e_start, e_refined = val.evaluate(start), val.evaluate(mask)
        kept = "refined" if e_refined < e_start else "start"
        meta["validation"] = {"seed": rc.validate_seed, "batch": rc.batch, "start_error": e_start,
                              "refined_error": e_refined, "kept": kept}
        if kept == "start":
            mask = start
    return mask, meta


def _adjust_to_budget(wb, mask, scores, target):
    """Turn cells off (lowest score first) or on (highest first) until the rectified MAC ratio is
    within tolerance of ``target``; rows ≥ 1 only."""
    p = wb.macs
    m = mask.copy()
    sc = np.asarray(scores, float)
    order = np.argsort(sc[1:], axis=None)  # ascending over rows 1..K-1
    cells = [(1 + i // m.shape[1], i % m.shape[1]) for i in order]
    ratio = p.ratio(wb.rectify(m).mask)
    if ratio > target * (1 + BUDGET_TOLERANCE):
        for k, i in cells:
            if m[k, i]:
                m[k, i] = False
                ratio = p.ratio(wb.rectify(m).mask)
                if ratio <= target:
                    break
    elif ratio < target * (1 - BUDGET_TOLERANCE):
        for k, i in reversed(cells):
            if not m[k, i]:
                m[k, i] = True
                ratio = p.ratio(wb.rectify(m).mask)
                if ratio >= target:
                    break
    return m


@dataclasses.dataclass(frozen=True)
class RefineConfig:
    """Calibrated refinement for a MAC budget (recipe ``blockmask``), see :mod:`blockmask.learning.refine`."""

    enabled: bool = True
    seed: int = 1000  # calibration seeds seed..: keep them apart from the seeds you evaluate on
    batch: int = 16  # calibration samples
    validate_seed: int = 2000  # the refined mask is kept only if it also beats its start on these seeds
    passes: int = 2  # local-search passes over the steps
    time_limit: float | None = None  # seconds for the local search (None: no limit)
    # more start candidates: mask files or shipped mask names at the same K (e.g. the next lower budget's
    # mask: a Pareto set made budget by budget then never gets worse as the budget grows)
    starts: tuple[str, ...] = ()

    def __post_init__(self):
        check_int("calibration batch", self.batch, low=1)
        check_int("refinement passes", self.passes, low=0)
        if self.time_limit is not None and not (math.isfinite(self.time_limit) and self.time_limit > 0):
            raise BlockmaskError(f"refinement time limit must be a positive number of seconds, got {self.time_limit}")


def check_output(output) -> Path:
    """The output path, refused before any work when its folder is missing or unwritable or it is a
    folder (:func:`blockmask.io.files.check_output_file`)."""
    return check_output_file(output)


def _lock(wb, output):
    """The output's lock (main process only: helpers of a multi-process launch never write)."""
    import contextlib

    if not is_main(wb.device):
        return contextlib.nullcontext()
    return OutputLock(output, companions=(checkpoint_path(output), search_path(output)))


def cheapest_ratio(wb, steps: int) -> float:
    """The MAC ratio of the cheapest mask: row 0 computed, every later row reusing every unit."""
    m = np.zeros((steps, len(wb.units)), bool)
    m[0] = True
    return wb.macs.ratio(m)


def check_budget(wb, steps: int, target: float) -> None:
    """One clear error for a budget outside (0, 1] or below what any mask of K steps can reach."""
    if not (isinstance(target, (int, float)) and math.isfinite(target) and 0 < target <= 1):
        raise BlockmaskError(f"--target-macs must be in (0, 1], got {target}")
    floor = cheapest_ratio(wb, steps)
    if target < floor * (1 - BUDGET_TOLERANCE):
        raise BlockmaskError(f"MAC budget {target:g} is unreachable at {steps} steps: the cheapest mask (every unit "
                             f"reused after step 0) costs {floor:.3f}")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """What a training run does around the per-step trainer: ``rectify`` the result, ``resume`` an
    interrupted run from the output's checkpoints, meet a MAC budget ``target_macs`` (a fraction; λ
    searched in at most ``max_trials`` trials, or calibrated refinement ``refine``, module docstring)."""

    rectify: bool = True
    resume: bool = False
    target_macs: float | None = None
    max_trials: int = 8
    refine: RefineConfig | None = None


def run_training(wb, cfg: TrainConfig, output, options: RunOptions = RunOptions(), *, condition=None,
                 callback: Callable[[StepReport], None] | None = None, progress: bool = True) -> tuple[MaskFile, dict]:
    """Train, rectify, write ``output`` atomically; returns (mask file, summary)."""
    options = dataclasses.replace(options, refine=options.refine or RefineConfig())
    if options.target_macs is not None:
        check_budget(wb, cfg.steps, options.target_macs)
    if cfg.class_labels:  # labels the model has (Workbench.condition checks them against its class count)
        wb.condition(class_label=list(cfg.class_labels))
    output = check_output(output)
    with _lock(wb, output):
        return _run_training(wb, cfg, output, options, RunContext(condition, callback, progress))


def _run_training(wb, cfg, output, options: RunOptions, run: RunContext):
    rectify, resume, target_macs, max_trials, refine = (options.rectify, options.resume, options.target_macs,
                                                        options.max_trials, options.refine)
    condition, callback, progress = run.condition, run.callback, run.progress
    t0 = time.perf_counter()
    ckpt = checkpoint_path(output)
    search = search_path(output)
    if resume and not ckpt.exists() and not search.exists():
        raise CheckpointError(ckpt, "no checkpoint to resume (--resume)")
    if not resume:
        for p in (ckpt, search):
            if p.exists():
                raise CheckpointError(p, "a checkpoint of an interrupted run exists: pass --resume to continue it, "
                                         "or delete it")
    trials = []
    paper = cfg.recipe == "paper"
    calibrated = target_macs is not None and refine.enabled and not paper

    def rect(m):
        if not rectify:
            return m
        return rectify_eq12(m) if paper else wb.rectify(m).mask

    if target_macs is None or calibrated:
        state = train_once(wb, cfg, condition=condition, ckpt=ckpt, resume=resume, callback=callback,
                           progress=progress, keep_checkpoint=True)
    else:
        state, cfg, trials = _search_lambda(wb, cfg, target_macs, max_trials, run, ckpt=ckpt, search=search,
                                            resume=resume)
    raw = np.array(state.rows, bool)
    mask = rect(raw)
    adjusted = False
    if target_macs is not None and abs(wb.macs.ratio(mask) / target_macs - 1) > BUDGET_TOLERANCE:
        raw = _adjust_to_budget(wb, raw, state.scores, target_macs)
        mask = rect(raw)
        adjusted = True
    calib_meta = None
    if calibrated:
        raw, calib_meta = _calibrate(wb, cfg, mask, target_macs, refine, run)
        mask = rect(raw)
    removed = raw & ~mask
    p = wb.macs
    seconds = time.perf_counter() - t0
    meta = {"training": {**cfg.to_json(), "scheduler": wb.scheduler_name, "device": str(wb.device)},
            "delta": state.delta, "lambda": state.lam, "scores": state.scores,
            **({"sensitivity": state.sensitivity} if state.sensitivity else {}),
            "loss_first": [l[0] if l else None for l in state.losses], "loss_last": [l[-1] if l else None for l in state.losses],
            "train_seconds": seconds, "per_step_seconds": state.seconds,
            "rectified": {"applied": rectify, "cells_removed": int(removed.sum()),
                          "macs_saved": float((removed * p.unit_macs).sum()), "raw_mask": raw.astype(int).tolist()}}
    if target_macs is not None:
        meta["budget"] = {"target_macs": target_macs, "trials": trials, "adjusted_by_scores": adjusted}
    if calib_meta is not None:
        meta["calibration"] = calib_meta
    if paper and rectify:
        meta["rectified"]["rule"] = "eq12"
    mf = wb.mask_file(mask, meta)

    if is_main(wb.device):  # every process learned the same mask; one writes it
        mf.save(output)
        for p in (ckpt, search):  # kept until the mask is in place
            if p.exists():
                p.unlink()
    summary = {"output": str(output), "train_seconds": seconds,
               "per_step_seconds": float(np.mean(state.seconds[1:])) if len(state.seconds) > 1 else 0.0,
               "macs": mf.meta["macs"], "cells_removed": int(removed.sum()), "lambda_scale": cfg.lam,
               **peak_memory(wb.device)}
    return mf, summary


def _search_lambda(wb, cfg, target, max_trials, run: RunContext, *, ckpt=None, search=None, resume=False):
    """Geometric bisection on the λ scale until the rectified MAC ratio is within tolerance.

    Checkpointed like a plain run: the trial in progress in ``ckpt`` (per step), every finished trial
    (λ, ratio, state) in ``search``. The λ sequence is a function of the finished trials' ratios, so
    ``resume`` replays them and continues the trial in progress."""
    condition, callback, progress = run.condition, run.callback, run.progress

    p = wb.macs
    done = load_search(search, wb, cfg) if resume and search is not None and search.exists() else []
    trials = []
    lo, hi = None, None  # λ giving ratio above / below target
    lam = cfg.lam if cfg.lam > 0 else 0.01
    best = None
    for i in range(max_trials):
        c = dataclasses.replace(cfg, lam=lam)
        if i < len(done) and done[i]["lam"] == lam:
            st, ratio = done[i]["state"], done[i]["ratio"]
        else:
            done = done[:i]
            if ckpt is not None and resume and ckpt.exists() and checkpoint_lam(ckpt) != lam:
                ckpt.unlink()  # a finished trial's checkpoint (killed before it was removed)
            st = train_once(wb, c, condition=condition, callback=callback, progress=progress, ckpt=ckpt,
                            resume=resume and ckpt is not None and ckpt.exists(), keep_checkpoint=True)
            ratio = p.ratio(wb.rectify(np.array(st.rows, bool)).mask)
            done.append({"lam": lam, "ratio": ratio, "state": st})
            if search is not None and is_main(wb.device):
                atomic_write_json(search, {"format": CKPT_FORMAT, "fingerprint": wb.loaded.fingerprint,
                                           "units": wb.unit_names, "scheduler": wb.scheduler_name,
                                           "config": {**cfg.to_json(), "lam": None},
                                           "trials": [{"lam": d["lam"], "ratio": d["ratio"], "state": d["state"].to_json()}
                                                      for d in done]})
                if ckpt is not None and ckpt.exists():
                    ckpt.unlink()
        trials.append({"lam": lam, "ratio": ratio})
        if best is None or abs(ratio - target) < abs(best[2] - target):
            best = (st, c, ratio)
        if abs(ratio / target - 1) <= BUDGET_TOLERANCE:
            break
        if ratio > target:
            lo = lam
            lam = lam * 4 if hi is None else math.sqrt(lam * hi)
        else:
            hi = lam
            lam = lam / 4 if lo is None else math.sqrt(lam * lo)
    return best[0], best[1], trials
