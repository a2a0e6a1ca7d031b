"""A complete training run around :func:`blockmask.train.train_mask`: checkpoints and resume,
rectification, MAC budgets (``target_macs``), sweeps, and the mask file with its metadata."""

from __future__ import annotations

import dataclasses
import json
import math
import resource
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import BlockmaskError
from .io import atomic_write_json
from .mask import MaskFile
from .train import StepReport, TrainConfig, TrainState, train_mask

CKPT_FORMAT = "blockmask-train/1"
BUDGET_TOLERANCE = 0.02  # relative: the final MAC ratio is within ±2% of the target


def checkpoint_path(output) -> Path:
    return Path(str(output) + ".ckpt.json")


def _load_checkpoint(path: Path, wb, cfg: TrainConfig) -> TrainState:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BlockmaskError(f"--resume: no checkpoint at {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BlockmaskError(f"checkpoint {path} is corrupt (not valid JSON); delete it to start over") from None
    if not isinstance(data, dict) or data.get("format") != CKPT_FORMAT or "state" not in data:
        raise BlockmaskError(f"{path} is not a blockmask training checkpoint")
    if data.get("fingerprint") != wb.loaded.fingerprint or data.get("units") != wb.unit_names:
        raise BlockmaskError(f"checkpoint {path} was made for another model ({data.get('fingerprint')})")
    diff = [k for k, v in cfg.to_json().items() if data.get("config", {}).get(k) != v]
    if data.get("scheduler") != wb.scheduler_name:
        diff.append("scheduler")
    if diff:
        raise BlockmaskError(f"checkpoint {path} used other settings ({', '.join(diff)}); rerun with the same ones")
    try:
        state = TrainState(**data["state"])
    except TypeError:
        raise BlockmaskError(f"checkpoint {path} is incomplete; delete it to start over") from None
    if not 1 <= len(state.rows) <= cfg.steps or any(len(r) != len(wb.units) for r in state.rows):
        raise BlockmaskError(f"checkpoint {path} has an inconsistent mask; delete it to start over")
    return state


def _peak_memory(device: torch.device) -> dict:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def train_once(wb, cfg: TrainConfig, *, condition=None, ckpt: Path | None = None, resume: bool = False,
               callback: Callable[[StepReport], None] | None = None, progress: bool = True) -> TrainState:
    """One training run with per-step atomic checkpoints at ``ckpt`` (deleted on success)."""
    state = None
    if ckpt is not None:
        if resume:
            state = _load_checkpoint(ckpt, wb, cfg)
        elif ckpt.exists():
            raise BlockmaskError(f"a checkpoint of an interrupted run exists at {ckpt}: pass --resume to continue "
                                 "it, or delete it")
    meta = {"format": CKPT_FORMAT, "model": wb.loaded.spec, "fingerprint": wb.loaded.fingerprint,
            "units": wb.unit_names, "scheduler": wb.scheduler_name, "config": cfg.to_json()}
    from .distributed import is_main

    main = is_main(wb.device)
    save = None if ckpt is None or not main else (lambda st: atomic_write_json(ckpt, {**meta, "state": st.to_json()}))
    p = wb.macs
    state = train_mask(wb.model, wb.scheduler(), cfg, unit_macs=p.unit_macs, remainder=p.remainder,
                       condition=condition, state=state, checkpoint=save, callback=callback, progress=progress)
    if ckpt is not None and main and ckpt.exists():
        ckpt.unlink()
    return state


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


def run_training(wb, cfg: TrainConfig, output, *, rectify: bool = True, resume: bool = False,
                 target_macs: float | None = None, max_trials: int = 8, condition=None,
                 callback: Callable[[StepReport], None] | None = None, progress: bool = True) -> tuple[MaskFile, dict]:
    """Train, rectify, write ``output`` atomically; returns (mask file, summary)."""
    if target_macs is not None and not 0 < target_macs <= 1:
        raise BlockmaskError(f"--target-macs must be in (0, 1], got {target_macs}")
    output = Path(output)
    if not output.parent.exists():
        raise BlockmaskError(f"output folder does not exist: {output.parent}")
    t0 = time.perf_counter()
    ckpt = checkpoint_path(output)
    trials = []
    if target_macs is None:
        state = train_once(wb, cfg, condition=condition, ckpt=ckpt, resume=resume, callback=callback, progress=progress)
    else:
        state, cfg, trials = _search_lambda(wb, cfg, target_macs, max_trials, condition, callback, progress)
    raw = np.array(state.rows, bool)
    mask = wb.rectify(raw).mask if rectify else raw
    adjusted = False
    if target_macs is not None and abs(wb.macs.ratio(mask) / target_macs - 1) > BUDGET_TOLERANCE:
        raw = _adjust_to_budget(wb, raw, state.scores, target_macs)
        mask = wb.rectify(raw).mask if rectify else raw
        adjusted = True
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
    mf = wb.mask_file(mask, meta)
    from .distributed import is_main

    if is_main(wb.device):  # every process learned the same mask; one writes it
        mf.save(output)
    summary = {"output": str(output), "train_seconds": seconds,
               "per_step_seconds": float(np.mean(state.seconds[1:])) if len(state.seconds) > 1 else 0.0,
               "macs": mf.meta["macs"], "cells_removed": int(removed.sum()), "lambda_scale": cfg.lam,
               **_peak_memory(wb.device)}
    return mf, summary


def _search_lambda(wb, cfg, target, max_trials, condition, callback, progress):
    """Geometric bisection on the λ scale until the rectified MAC ratio is within tolerance."""
    p = wb.macs
    trials = []
    lo, hi = None, None  # λ giving ratio above / below target
    lam = cfg.lam if cfg.lam > 0 else 0.01
    best = None
    for _ in range(max_trials):
        c = dataclasses.replace(cfg, lam=lam)
        st = train_once(wb, c, condition=condition, callback=callback, progress=progress)
        ratio = p.ratio(wb.rectify(np.array(st.rows, bool)).mask)
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
