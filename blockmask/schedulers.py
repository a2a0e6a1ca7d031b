"""Schedulers by short name, built from the model's own scheduler config when it has one.

Only diffusers' schedulers are used; blockmask never re-implements one.
"""

from __future__ import annotations

import diffusers

from .errors import BlockmaskError

SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "dpm": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "euler": ("EulerDiscreteScheduler", {}),
}

# DDPM's defaults (Ho et al.), used when a model ships no scheduler (random init).
DEFAULT_TRAIN_CONFIG = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear"}

STEP_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "timestep_spacing", "steps_offset",
             "prediction_type", "algorithm_type", "solver_order", "set_alpha_to_one", "clip_sample")


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
    for key, (cls_name, _) in SCHEDULERS.items():
        if type(scheduler).__name__ == cls_name:
            return key
    return type(scheduler).__name__


def scheduler_rows(scheduler) -> int:
    """Mask rows of one run of ``scheduler`` (after ``set_timesteps``): its number of steps, not its
    number of model calls (Heun and KDPM2 evaluate the model twice per step)."""
    n = getattr(scheduler, "num_inference_steps", None)
    return int(n) if n else len(scheduler.timesteps)


def step_complete(scheduler) -> bool:
    """After ``scheduler.step()``: did the scheduler finish a whole step? False between the two
    evaluations of a two-evaluation step (diffusers' ``state_in_first_order`` is False there)."""
    return bool(getattr(scheduler, "state_in_first_order", True))
