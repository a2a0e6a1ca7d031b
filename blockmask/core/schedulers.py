"""Schedulers by short name, built from the model's own scheduler config when it has one.

Only diffusers' schedulers are used; blockmask never re-implements one.
"""

from __future__ import annotations

import copy
import functools
import json
from typing import Callable

import diffusers
import numpy as np

from blockmask.core.errors import BlockmaskError

SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "dpm": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    # DPM-Solver++ single-step, second order (the 2S solver: each stage is a step of its own)
    "dpm-2s": ("DPMSolverSinglestepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),  # two model evaluations per step (see blockmask.hooks.stepping)
    # EDM (Karras et al. 2022, Alg. 1): Heun's second-order sampler on the Karras σ schedule
    "edm": ("HeunDiscreteScheduler", {"use_karras_sigmas": True}),
}
SCHEDULER_HELP = ", ".join(SCHEDULERS) + " (default ddim); a mask row is one scheduler step"

# DDPM's defaults (Ho et al.), used when a model ships no scheduler (random init).
DEFAULT_TRAIN_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}

STEP_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "timestep_spacing", "steps_offset",
             "prediction_type", "algorithm_type", "solver_order", "set_alpha_to_one", "clip_sample", "use_karras_sigmas")


def make_scheduler(name: str = "ddim", base=None):
    """A fresh scheduler of kind ``name`` sharing ``base``'s training schedule (betas, T)."""
    key = name.lower()
    if key not in SCHEDULERS:
        raise BlockmaskError(f"unsupported scheduler {name!r}; choose from {', '.join(SCHEDULERS)}")
    cls_name, extra = SCHEDULERS[key]
    cls = getattr(diffusers, cls_name)
    config = dict(base.config) if base is not None else dict(DEFAULT_TRAIN_CONFIG)
    config.update(extra)
    return cls.from_config(config)


def scheduler_info(scheduler, num_steps: int) -> dict:
    """What a mask file records about step placement: class, config subset, the timesteps."""
    scheduler.set_timesteps(num_steps)
    cfg = {k: scheduler.config[k] for k in STEP_KEYS if k in scheduler.config}
    return {"class": type(scheduler).__name__, "config": cfg,
            "timesteps": [int(t) for t in scheduler.timesteps.tolist()]}


def scheduler_name(scheduler) -> str:
    for key, (cls_name, extra) in SCHEDULERS.items():
        if type(scheduler).__name__ == cls_name and all(scheduler.config.get(k) == v for k, v in extra.items()):
            return key
    return type(scheduler).__name__


def scheduler_rows(scheduler) -> int:
    """Mask rows of one run of ``scheduler`` (after ``set_timesteps``): its number of steps, not its
    number of model calls (Heun and KDPM2 evaluate the model twice per step: :func:`calls_per_row`)."""
    n = getattr(scheduler, "num_inference_steps", None)
    return int(n) if n else len(scheduler.timesteps)


def step_complete(scheduler) -> bool:
    """After ``scheduler.step()``: did the scheduler finish a whole step? False between the two
    evaluations of a two-evaluation step (diffusers' ``state_in_first_order`` is False there)."""
    return bool(getattr(scheduler, "state_in_first_order", True))


_ROWS: dict[tuple, tuple[int, ...]] = {}  # (class, config, timesteps, rows) → call_rows; schedulers are deterministic


def call_rows(scheduler) -> list[int]:
    """The mask row of each model call of one run (``scheduler.set_timesteps`` already called): one
    entry per element of ``scheduler.timesteps``, e.g. Heun with 3 steps: ``[0, 0, 1, 1, 2]``.
    Found by stepping a copy of the scheduler on zeros, so it is what the scheduler itself does."""
    import torch

    ts = scheduler.timesteps
    key = (type(scheduler).__module__, type(scheduler).__qualname__,
           json.dumps(dict(scheduler.config), sort_keys=True, default=str),
           np.asarray(ts.detach().cpu() if isinstance(ts, torch.Tensor) else ts).tobytes(), scheduler_rows(scheduler))
    fresh = getattr(scheduler, "_step_index", None) is None  # not stepped since set_timesteps: memoizable
    if fresh and key in _ROWS:  # the same run again (every sampling run asks, and a copy steps through all K)
        return list(_ROWS[key])
    s = copy.deepcopy(scheduler)
    x = torch.zeros(1, 1, 2, 2)
    rows, k = [], 0
    for t in s.timesteps:
        rows.append(k)
        inp = s.scale_model_input(x, t)
        x = step(s, torch.zeros_like(inp), t, x, torch.Generator().manual_seed(0))
        if step_complete(s):
            k += 1
    if fresh:
        if len(_ROWS) >= 512:
            _ROWS.clear()
        _ROWS[key] = tuple(rows)
    return rows


def row_starts(rows: list[int]) -> list[bool]:
    """For each model call: is it the first evaluation of its row?"""
    return [c == 0 or rows[c] != rows[c - 1] for c in range(len(rows))]


def step(scheduler, model_output, t, sample, generator=None):
    """``scheduler.step(...).prev_sample``, passing the generator only to schedulers that take one
    (DDPM, DDIM with eta, Euler ancestral: their noise is seeded; Heun's ``step`` has no generator)."""
    import inspect

    takes = scheduler.__dict__.get("_blockmask_takes_generator")
    if takes is None:
        takes = "generator" in inspect.signature(scheduler.step).parameters
        scheduler.__dict__["_blockmask_takes_generator"] = takes
    kw = {"generator": generator} if takes else {}
    return scheduler.step(model_output, t, sample, **kw).prev_sample


_CALLS: dict[tuple, np.ndarray] = {}  # (class, config, K) → calls per row; schedulers are deterministic


def calls_per_row(scheduler, steps: int) -> np.ndarray:
    """(K,) model calls of each mask row of a ``steps``-step run of ``scheduler`` (a copy is stepped;
    the scheduler itself is untouched): all ones for DDIM, Euler, DPM-Solver; ``[2, …, 2, 1]`` for
    Heun / EDM (the last step, to σ = 0, has one evaluation). What MACs are counted with."""
    key = (type(scheduler).__name__, json.dumps(dict(scheduler.config), sort_keys=True, default=str), int(steps))
    if key not in _CALLS:
        s = copy.deepcopy(scheduler)
        s.set_timesteps(int(steps))
        _CALLS[key] = np.bincount(call_rows(s), minlength=scheduler_rows(s)).astype(float)
    return _CALLS[key].copy()


def calls_counter(scheduler) -> Callable[[int], np.ndarray]:
    """K ↦ :func:`calls_per_row` (scheduler, K): what :meth:`blockmask.hooks.costs.MacProfile.with_calls` takes."""
    return functools.partial(calls_per_row, scheduler)
