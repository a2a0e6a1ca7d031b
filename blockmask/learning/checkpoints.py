"""Checkpoints of a training run (blockmask/learning/run.py): where they live, and reading them back
with every field's type and shape checked, so that ``--resume`` refuses a damaged or foreign file
with one line (:class:`~blockmask.core.errors.CheckpointError`) instead of training on garbage."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from blockmask.core.errors import CheckpointError, FileFormatError
from blockmask.core.validate import field, read_json_file
from blockmask.learning.train import TrainConfig, TrainState

CKPT_FORMAT = "blockmask-train/1"


def checkpoint_path(output) -> Path:
    return Path(str(output) + ".ckpt.json")


def search_path(output) -> Path:
    """Finished λ trials of a budget run's bisection (recipe paper / no refine), for ``--resume``."""
    return Path(str(output) + ".search.json")


def _read_checkpoint(path: Path, what: str = "training checkpoint") -> dict:
    try:
        data = read_json_file(path, what)
    except FileFormatError as e:
        if not path.exists():
            raise CheckpointError(path, "no checkpoint to resume (--resume)") from None
        raise CheckpointError(path, f"is corrupt ({str(e).split(': ', 1)[-1]}); delete it to start over") from None
    if data.get("format") != CKPT_FORMAT:
        raise CheckpointError(path, "is not a blockmask training checkpoint")
    return data


def _state_from_json(d, path, steps: int, n: int) -> TrainState:
    """A TrainState from checkpoint JSON, every field's type and shape checked."""
    src = str(path)
    if not isinstance(d, dict):
        raise CheckpointError(path, "must be an object", "state")
    try:
        rows = field(d, "rows", "list", src)
        scores = field(d, "scores", "list", src)
        losses = field(d, "losses", "list", src)
        for name, lists, kind in (("rows", rows, "int_list"), ("scores", scores, "float_list"),
                                  ("losses", losses, "float_list")):
            for i, r in enumerate(lists):
                field({name: r}, name, kind, f"{src}: row {i}")
        seconds = field(d, "seconds", "float_list", src)
        delta = field(d, "delta", "float_list", src)
        lam = field(d, "lam", "float_list", src)
        sens = d.get("sensitivity")
        if sens is not None and not isinstance(sens, dict):
            raise CheckpointError(path, "must be an object or null", "sensitivity")
    except CheckpointError:
        raise
    except FileFormatError as e:
        raise CheckpointError(path, f"is incomplete or damaged ({str(e).split(': ', 1)[-1]}); delete it to "
                                    "start over") from None
    extra = set(d) - {f.name for f in dataclasses.fields(TrainState)}
    if extra:
        raise CheckpointError(path, f"has unknown state fields {sorted(extra)}; delete it to start over")
    k = len(rows)
    if not 1 <= k <= steps or any(len(r) != n or set(r) - {0, 1} for r in rows):
        raise CheckpointError(path, "has an inconsistent mask; delete it to start over")
    if len(scores) != k or len(losses) != k or len(seconds) != k or any(len(r) != n for r in scores):
        raise CheckpointError(path, "has rows, scores, losses of different lengths; delete it to start over")
    if len(delta) != steps or len(lam) != steps:
        raise CheckpointError(path, f"has Δ/λ for another step count (expected {steps}); delete it to start over")
    return TrainState(rows=rows, scores=scores, losses=losses, seconds=seconds, delta=delta, lam=lam,
                      sensitivity=sens)


def load_checkpoint(path: Path, wb, cfg: TrainConfig) -> TrainState:
    data = _read_checkpoint(path)
    if data.get("fingerprint") != wb.loaded.fingerprint or data.get("units") != wb.unit_names:
        raise CheckpointError(path, f"was made for another model ({str(data.get('fingerprint'))[:60]})")
    cfg_json = data.get("config") if isinstance(data.get("config"), dict) else {}
    diff = [k for k, v in cfg.to_json().items() if cfg_json.get(k) != v]
    if data.get("scheduler") != wb.scheduler_name:
        diff.append("scheduler")
    if diff:
        raise CheckpointError(path, f"used other settings ({', '.join(diff)}); rerun with the same ones")
    if "state" not in data:
        raise CheckpointError(path, "is incomplete (no state); delete it to start over")
    return _state_from_json(data["state"], path, cfg.steps, len(wb.units))


def checkpoint_lam(ckpt: Path):
    data = _read_checkpoint(ckpt)
    cfg = data.get("config")
    return cfg.get("lam") if isinstance(cfg, dict) else None


def load_search(path: Path, wb, cfg: TrainConfig) -> list[dict]:
    """Finished λ trials of an interrupted budget run, checked like a checkpoint."""
    data = _read_checkpoint(path, "λ search checkpoint")
    if data.get("fingerprint") != wb.loaded.fingerprint or data.get("units") != wb.unit_names:
        raise CheckpointError(path, "was made for another model")
    want = {**cfg.to_json(), "lam": None}
    got = data.get("config") if isinstance(data.get("config"), dict) else {}
    diff = [k for k, v in want.items() if got.get(k) != v]
    if data.get("scheduler") != wb.scheduler_name:
        diff.append("scheduler")
    if diff:
        raise CheckpointError(path, f"used other settings ({', '.join(diff)}); rerun with the same ones")
    try:
        trials = field(data, "trials", "list", str(path))
        out = []
        for t in trials:
            if not isinstance(t, dict):
                raise CheckpointError(path, "must hold objects", "trials")
            lam = field(t, "lam", "float", str(path), low=0)
            ratio = field(t, "ratio", "float", str(path), low=0)
            out.append({"lam": lam, "ratio": ratio,
                        "state": _state_from_json(t.get("state"), path, cfg.steps, len(wb.units))})
    except CheckpointError:
        raise
    except FileFormatError as e:
        raise CheckpointError(path, f"is damaged ({e}); delete it to start over") from None
    return out
