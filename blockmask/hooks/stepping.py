"""Masks on diffusers pipelines: the step index comes from the pipeline's scheduler, and an
``enable_cache``-style entry point (:class:`BlockMaskConfig`, :func:`apply_block_mask`).

What a mask row means. Row k is the k-th *scheduler step*: the k-th noise level of the run, as
many rows as ``num_inference_steps``. A first-order or multistep scheduler (DDIM, DDPM, Euler,
Euler ancestral, DPM-Solver++ multistep, DPM-Solver single-step 2S, whose stages are steps of their
own) evaluates the model once per step. A two-evaluation scheduler (Heun, KDPM2; EDM's sampler is
Heun on Karras sigmas) evaluates it twice in one step, at σ_k and at σ_{k+1}: both evaluations
follow row k. A unit whose cell is 1 runs in both and refreshes its cache each time; a unit whose
cell is 0 returns, in both, the value cached when it last ran. The last Heun step (to σ = 0) has one
evaluation. Rectification stays exact: a value is still overwritten by the unit's next run and read
only by its consumers' runs, in the same order.

How steps are counted (never from timestep values): the scheduler's ``set_timesteps`` starts a run
(caches reset, row 0; its number of steps must equal the mask's K); each ``scheduler.step()`` ends
a model-call slot, and the row advances when the scheduler completed a whole step
(:func:`blockmask.core.schedulers.step_complete`). Calls within one slot are CFG branches (pipelines that
call the model once per branch), unless the pipeline names them with ``cache_context``. Both
scheduler methods are wrapped on the scheduler *instance* only and restored on removal.

A bare denoiser without a scheduler: every call is the next row; after K calls a new run starts,
and so does a call whose timestep is higher than the last call's (a run that was stopped early
never leaks its row counter or caches into the next; read from CPU timesteps only, never a sync).
"""

from __future__ import annotations

import dataclasses
import functools
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook

from blockmask.core.errors import BlockmaskError, MaskError
from blockmask.core.schedulers import call_rows, scheduler_rows, step_complete
from blockmask.hooks.discover import discover_units
from blockmask.hooks.execution import MaskedExecution
from blockmask.hooks.registry import invalidate_children
from blockmask.io.maskfile import MaskFile, load_mask_source
from blockmask.io.models import fingerprint

STEP_HOOK = "blockmask_steps"


@dataclasses.dataclass(frozen=True)
class BlockMaskConfig:
    """What :func:`apply_block_mask` installs (diffusers' ``enable_cache`` style).

    mask: a :class:`blockmask.io.maskfile.MaskFile`, a (K, N) 0/1 array, a mask file path, the name of a
        shipped mask or a hub repo id / folder saved with ``MaskFile.save_pretrained``.
    scheduler: the scheduler whose steps number the rows; default: the pipeline's ``scheduler``.
    check_fingerprint: refuse (instead of warning about) a mask made for another model config.
    mode: eager | compiled | graph (see :mod:`blockmask.hooks.execution`).
    preset, interval, branch, every: instead of a mask, a preset rule built at whatever step count
        the pipeline runs (:func:`blockmask.enable`): ``ones``, ``deepcache`` (interval, branch),
        ``fora`` / ``blocks`` (interval), ``uniform`` (every); ``None``: the preset's default.
    resample: a fixed-K mask may run at another K, its rows aligned on noise levels
        (:mod:`blockmask.core.resample`; :func:`blockmask.enable` only).
    reuse: what reused units return, "hold" or "forecast" (:mod:`blockmask.core.forecast`); None: what
        the mask file says (``meta.reuse``), else "hold".
    """

    mask: Any = None
    scheduler: Any = None
    check_fingerprint: bool = False
    mode: str = "eager"
    preset: str | None = None
    interval: int | None = None
    branch: int | None = None
    every: int | None = None
    resample: bool = False
    reuse: str | None = None


def denoiser_of(obj) -> torch.nn.Module:
    """The pipeline's ``transformer`` or ``unet``, or ``obj`` itself when it is a module."""
    for attr in ("transformer", "unet"):
        m = getattr(obj, attr, None)
        if isinstance(m, torch.nn.Module):
            return m
    if isinstance(obj, torch.nn.Module):
        return obj
    raise BlockmaskError(f"{type(obj).__name__} has no .unet or .transformer to mask")


def resolve_mask(model: torch.nn.Module, mask, *, check_fingerprint: bool = False) -> np.ndarray:
    """A (K, N) bool array for ``model`` from any accepted mask source; warnings for a foreign fingerprint."""

    if isinstance(mask, (str, Path)):
        mask = load_mask_source(mask)
    if isinstance(mask, MaskFile):
        units = [u.name for u in discover_units(model)]
        mask = mask.fit(units)
        for w in mask.check(units=units, fingerprint=fingerprint(model), strict_fingerprint=check_fingerprint):
            import warnings

            warnings.warn(w, stacklevel=4)
        mask = mask.mask
    return np.asarray(mask)


class _CallHook(ModelHook):
    """On the denoiser itself: numbers each call before the unit hooks run."""

    def __init__(self, steps: "SchedulerSteps"):
        super().__init__()
        self.steps = steps

    def pre_forward(self, module, *args, **kwargs):
        self.steps.before_call(args[1] if len(args) > 1 else kwargs.get("timestep"))
        return args, kwargs


class SchedulerSteps:
    """Sets ``execution.step`` / ``execution.branch`` from a scheduler (see the module docstring)."""

    call_hook = _CallHook  # the hook on the denoiser that numbers its calls (subclasses may extend it)

    def __init__(self, execution: MaskedExecution, scheduler=None):
        self.ex = execution
        self.scheduler = scheduler
        self.rows = 0 if execution.mask is None else execution.mask.shape[0]
        self.started = False
        self.slot_calls = 0  # calls since the last scheduler.step(): the CFG branch
        self.calls = 0  # calls in this run (bare denoiser)
        self.last_t: float | None = None  # the last call's timestep (bare denoiser): a rise starts a new run
        self._saved: dict[str, Any] = {}

    # --- install / remove ---------------------------------------------------------------------
    def install(self) -> None:
        registry = HookRegistry.check_if_exists_or_initialize(self.ex.model)
        if registry.get_hook(STEP_HOOK) is not None:
            raise MaskError("this denoiser already has a blockmask mask applied")
        registry.register_hook(self.call_hook(self), STEP_HOOK)
        s = self.scheduler
        if s is not None:
            for name, after in (("set_timesteps", self._on_set_timesteps), ("step", self._on_step)):
                self._saved[name] = s.__dict__.get(name)
                setattr(s, name, _after(s, name, self._saved[name], after))

    def remove(self) -> None:
        s = self.scheduler
        for name, had in self._saved.items():
            if had is None:
                s.__dict__.pop(name, None)
            else:
                setattr(s, name, had)
        self._saved = {}
        registry = getattr(self.ex.model, "_diffusers_hook", None)
        hook = None if registry is None else registry.get_hook(STEP_HOOK)
        if hook is not None and hook.steps is self:  # never another application's hook
            registry.remove_hook(STEP_HOOK, recurse=False)
            fwd = self.ex.model.__dict__.get("forward")
            if getattr(fwd, "__self__", None) is self.ex.model and getattr(fwd, "__func__", None) is type(self.ex.model).forward:
                del self.ex.model.forward

    # --- events -------------------------------------------------------------------------------
    def _on_set_timesteps(self, *_a, **_k) -> None:
        rows = scheduler_rows(self.scheduler)
        if rows != self.rows:
            raise MaskError(f"the scheduler runs {rows} steps but the mask has {self.rows} rows "
                            f"(num_inference_steps must equal the mask's K)")
        ts = getattr(self.scheduler, "timesteps", None)  # the run's calls, for the shortcuts' gate tables
        cpu = isinstance(ts, torch.Tensor) and ts.device.type == "cpu" and len(call_rows(self.scheduler)) == len(ts)
        self.ex.run_calls = tuple(zip(call_rows(self.scheduler), ts.tolist())) if cpu else None
        self.ex.reset()  # a new run: fresh caches, row 0
        self.started, self.slot_calls = True, 0

    def _on_step(self, *_a, **_k) -> None:
        self.slot_calls = 0
        if step_complete(self.scheduler):
            self.ex.step += 1

    def before_call(self, timestep=None) -> None:
        ex = self.ex
        if self.scheduler is None:
            t = _host_scalar(timestep)
            # a new run: K calls done, or the noise level went up (a run stopped early, then a new one)
            if self.calls >= self.rows or (t is not None and self.last_t is not None and t > self.last_t):
                ex.reset()
                self.calls = 0
            self.last_t = t
            ex.step, ex.branch = self.calls, 0
            self.calls += 1
            return
        if not self.started:
            raise MaskError("the denoiser was called before the scheduler's set_timesteps(): no step to mask")
        if ex.step >= self.rows:
            raise MaskError(f"sampling ran more steps than the mask's {self.rows} rows")
        ex.branch = self.slot_calls
        self.slot_calls += 1


def _host_scalar(t) -> float | None:
    """A timestep's value when reading it costs no device sync (a number or a CPU tensor), else None."""
    if isinstance(t, (int, float)):
        return float(t)
    if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.numel() >= 1:
        return float(t.reshape(-1)[0])
    return None


def _after(scheduler, name: str, had, after):
    """``scheduler.<name>`` that calls ``after`` once the original returns — on this scheduler only.

    A bound method of the scheduler (not a closure over it), so ``copy.deepcopy(scheduler)`` rebinds
    it to the copy; the copy then runs its own class method (or the copied instance override ``had``)
    and never advances this scheduler's row counter (blockmask's ``call_rows`` steps such a copy)."""
    cls_fn = getattr(type(scheduler), name)

    def wrapped(sched, *args, **kwargs):
        inner = had if sched is scheduler and had is not None else functools.partial(cls_fn, sched)
        out = inner(*args, **kwargs)
        if sched is scheduler:
            after(*args, **kwargs)
        return out

    functools.update_wrapper(wrapped, cls_fn)
    return types.MethodType(wrapped, scheduler)


@dataclasses.dataclass
class BlockMask:
    """An applied mask: the execution (counters, caches) and how it is stepped. ``remove()`` undoes it."""

    execution: MaskedExecution
    steps: SchedulerSteps

    def remove(self) -> None:
        try:
            self.steps.remove()
        finally:
            self.execution.__exit__(None, None, None)
            invalidate_children(self.execution.model)
            self.execution.model.__dict__.pop("_blockmask_applied", None)


def apply_block_mask(pipe_or_model, config: BlockMaskConfig) -> BlockMask:
    """Install a mask on a diffusers pipeline (or bare denoiser) until :func:`remove_block_mask`
    (or ``handle.remove()``); the hooks live on the units' diffusers HookRegistry."""
    if config.mask is None:
        raise BlockmaskError("this BlockMaskConfig names no mask; a preset goes through blockmask.enable(pipe, config)")
    model = denoiser_of(pipe_or_model)
    mask = resolve_mask(model, config.mask, check_fingerprint=config.check_fingerprint)
    scheduler = config.scheduler if config.scheduler is not None else getattr(pipe_or_model, "scheduler", None)
    reuse = config.reuse if config.reuse is not None else getattr(config.mask, "reuse", "hold")
    ex = MaskedExecution(model, mask, mode=config.mode, reuse=reuse)
    steps = SchedulerSteps(ex, scheduler)
    ex.__enter__()
    try:
        steps.install()
    except BaseException:
        steps.remove()
        ex.__exit__(None, None, None)
        raise
    handle = BlockMask(ex, steps)
    model._blockmask_applied = handle
    return handle


def remove_block_mask(pipe_or_model) -> None:
    """Undo :func:`apply_block_mask` on this pipeline or denoiser (nothing to do when none is applied)."""
    handle = denoiser_of(pipe_or_model).__dict__.get("_blockmask_applied")
    if handle is not None:
        handle.remove()
