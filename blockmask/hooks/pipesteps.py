"""The step source of :func:`blockmask.enable`: which mask row each denoiser call follows, and what the
pipeline's first call costs.

* The mask is made when the scheduler's ``set_timesteps`` runs, at whatever K the pipeline runs.
* Rows follow diffusers' ``CacheContext.step_index`` when the pipeline provides one
  (``with transformer.cache_context("cond", step_index=i): ...``; ``i`` indexes
  ``scheduler.timesteps``, i.e. model calls), else the noise level the scheduler just stepped from
  (the scheduler-counting fallback: most diffusers pipelines name their CFG branch in
  ``cache_context`` but give no step index).
* Each denoiser's first step in a run computes every unit (nothing is cached yet): the execution's
  mask is ``[ones; mask]`` and its row 0 is that warm-up row.
* The first call the denoiser makes under blockmask (all units computed) is counted with
  ``FlopCounterMode``: its MACs per unit and the always-run remainder, at the pipeline's real batch
  and resolution, with no extra forward. :func:`blockmask.summary` turns that into the run's MAC
  fraction. A budget (:mod:`blockmask.hooks.budget`) picks its mask right after the denoiser's first call
  of every run, when the MACs and the row the denoiser starts at are both known.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.hooks import ModelHook
from diffusers.hooks.hooks import BaseState, StateManager
from torch.utils.flop_counter import FlopCounterMode

from blockmask.core.errors import BlockmaskError, MaskError
from blockmask.core.mask import validate_mask
from blockmask.core.schedulers import scheduler_rows, step_complete
from blockmask.hooks.costs import MacProfile, cpu_sdpa_formula, profile_from_counts
from blockmask.hooks.discover import remember_order
from blockmask.hooks.execution import MaskedExecution
from blockmask.hooks.stepping import SchedulerSteps
from blockmask.presets import row_levels, rows_of_calls


class _NoState(BaseState):
    def reset(self, *args, **kwargs) -> None:
        pass


class PipeCallHook(ModelHook):
    """On the denoiser: numbers each call (with the pipeline's ``CacheContext`` when it sets one: a
    stateful hook with a StateManager receives it from diffusers' ``cache_context``) and counts the
    MACs of the first one."""

    _is_stateful = True

    def __init__(self, steps: "PipelineSteps"):
        super().__init__()
        self.steps = steps
        self.context = StateManager(_NoState)  # diffusers sets the pipeline's CacheContext on it

    def new_forward(self, module, *args, **kwargs):
        steps = self.steps
        steps.before_call(args[1] if len(args) > 1 else kwargs.get("timestep"), context=self.context._context)
        if steps.profile is not None or torch.compiler.is_compiling():
            out = self.fn_ref.original_forward(*args, **kwargs)
        else:
            steps.ex.trace = []
            try:
                with FlopCounterMode(display=False, custom_mapping=cpu_sdpa_formula()) as fc:
                    tracker = getattr(fc, "mod_tracker", None)
                    if tracker is not None and hasattr(tracker, "_get_mod_name"):
                        tracker._get_mod_name(module)  # name every submodule by its path under the denoiser
                    out = self.fn_ref.original_forward(*args, **kwargs)
                trace = steps.ex.trace
            finally:
                steps.ex.trace = None
            steps.check_order(trace)
            steps.profile = profile_from_counts(fc.get_flop_counts(), type(module).__name__, steps.units)
        if steps.pending:
            steps.choose()
        return out

    def reset_state(self, module):
        return module


class PipelineSteps(SchedulerSteps):
    """:class:`SchedulerSteps` whose mask is made when ``set_timesteps`` runs (any K) by ``source``
    (``source.build(units, k, levels, scheduler, profile, calls)``); see the module docstring."""

    call_hook = PipeCallHook

    def __init__(self, execution: MaskedExecution, scheduler, source, on_error):
        super().__init__(execution, scheduler)
        self.source, self.on_error = source, on_error
        self.units = execution.units
        self.row, self.first_row, self.rows_of_calls = 0, None, None
        self.history: list[tuple[int, int, int]] = []  # (row, computed, skipped) per completed step
        self._seen = (0, 0)
        self.profile: MacProfile | None = None  # MACs of one call, from the first call (all units ran)
        self.calls_at = np.zeros(0)  # calls per row of the execution's mask in this run
        self.label = str(source)  # what runs: the source, or what a budget chose
        self.pending = False  # the source needs the profile: the mask is made after the first call
        self.levels = None

    def _fail(self, err: BaseException):
        self.on_error()
        raise err

    def _on_set_timesteps(self, *_a, **_k) -> None:
        s, k = self.scheduler, scheduler_rows(self.scheduler)
        self.rows_of_calls = rows_of_calls(s)
        self.rows, self.levels = k, None
        try:
            self.levels = row_levels(s, self.rows_of_calls)
            self.pending = bool(getattr(self.source, "needs_macs", False))
            mask = np.ones((k, len(self.units)), bool) if self.pending else self._build()
        except BlockmaskError as e:
            self._fail(e)
        self.ex.fixed_mask = not self.pending  # a placeholder until choose(): every output is stored
        self.ex.mask = np.vstack([np.ones((1, len(self.units)), bool), mask])
        self.calls_at = np.zeros(k + 1)
        self.ex.reset()
        self.started, self.slot_calls, self.row, self.first_row = True, 0, 0, None
        self.history, self._seen = [], (0, 0)

    def _build(self) -> np.ndarray:
        k = self.rows
        calls = None
        if self.rows_of_calls:
            calls = np.bincount(self.rows_of_calls, minlength=k)[:k].astype(float)
        mask = self.source.build(self.units, k, self.levels, self.scheduler, self.profile, calls,
                                 self.first_row or 0)
        self.label = getattr(self.source, "chosen", None) or str(self.source)
        return validate_mask(mask, units=len(self.units), steps=k)

    def check_order(self, trace: list[int]) -> None:
        """The units' order as the first real call ran them (all computed) must be the order the
        mask's columns follow (known without a forward, :func:`blockmask.hooks.discover.discover_units`). If it
        is not, the measured order replaces it on the model and blockmask is disabled, in one line."""
        if trace == list(range(len(self.units))):
            return
        names = [self.units[i].name for i in dict.fromkeys(trace)]
        if len(trace) == len(names) == len(self.units):
            remember_order(self.ex.model, names)
        self._fail(MaskError(f"the first call of {type(self.ex.model).__name__} ran its units in another order "
                             f"than blockmask assumed ({len(trace)} unit calls for {len(self.units)} units); "
                             "the measured order is kept: enable blockmask again"))

    def choose(self) -> None:
        """After this denoiser's first call in a run (every unit computed, its MACs known, its first row
        known): a source that needs them (a budget) makes the mask the later rows follow."""
        self.pending = False
        try:
            mask = self._build()
        except BlockmaskError as e:
            self._fail(e)
        self.ex.mask = np.vstack([np.ones((1, len(self.units)), bool), mask])
        self.ex.fixed_mask = True

    def _on_step(self, *args, **kwargs) -> None:
        self.slot_calls = 0
        if not step_complete(self.scheduler):
            return
        t = args[1] if len(args) > 1 else kwargs.get("timestep")
        row = self._row_of(t)
        c, sk = self.ex.computed, self.ex.skipped
        self.history.append((row, c - self._seen[0], sk - self._seen[1]))
        self._seen = (c, sk)
        self.row = row + 1

    def _row_of(self, t) -> int:
        """The row of the step the scheduler just took, from its timestep; else the next in order."""
        if self.rows_of_calls is not None and t is not None:
            ts = self.scheduler.timesteps
            hit = (ts == torch.as_tensor(t, dtype=ts.dtype).to(ts.device)).nonzero()
            if len(hit):
                return self.rows_of_calls[int(hit[0, 0])]
        return self.row

    def _context_row(self, context) -> int | None:
        """The row of the pipeline's ``CacheContext.step_index`` (an index into ``scheduler.timesteps``)."""
        idx = getattr(context, "step_index", None)
        if idx is None:
            return None
        idx = int(idx.item() if isinstance(idx, torch.Tensor) else idx)
        if self.rows_of_calls and 0 <= idx < len(self.rows_of_calls):
            return self.rows_of_calls[idx]
        return idx if 0 <= idx < self.rows else None

    def per_step(self) -> list[tuple[int, int, int]]:
        """(row, computed, skipped) of every step of the run so far, the unfinished one included (Heun's
        last step has one evaluation, after which the scheduler does not report a completed step)."""
        pending = (self.ex.computed - self._seen[0], self.ex.skipped - self._seen[1])
        return self.history + ([(self.row, *pending)] if any(pending) else [])

    def macs(self) -> tuple[float, float] | None:
        """(MACs of this run's calls so far, MACs of the same calls of the plain denoiser); None when
        calls were made but none was counted (a denoiser compiled as a whole)."""
        if self.ex.mask is None or not self.calls_at.any():
            return 0.0, 0.0  # no call in this run (a second denoiser before its boundary)
        if self.profile is None:
            return None
        per_call = self.profile.per_call(self.ex.mask)
        return float(self.calls_at @ per_call), float(self.calls_at.sum() * self.profile.full_step)

    def before_call(self, timestep=None, context=None) -> None:  # (rows follow the scheduler, not the timestep)
        if not self.started:
            raise MaskError("the denoiser was called before the scheduler's set_timesteps(): no step to mask")
        ctx_row = self._context_row(context)
        if ctx_row is not None:
            self.row = ctx_row
        if self.row >= self.rows:
            raise MaskError(f"sampling ran more steps than the mask's {self.rows} rows")
        if self.first_row is None:
            self.first_row = self.row
        self.ex.step = 0 if self.row == self.first_row else self.row + 1
        self.ex.branch = self.slot_calls
        self.slot_calls += 1
        self.calls_at[self.ex.step] += 1
