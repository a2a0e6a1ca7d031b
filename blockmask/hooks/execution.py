"""Cached masked execution (METHOD.md Eq. 3 and, for training, Eq. 4) as diffusers hooks.

One :class:`UnitHook` (a diffusers ``ModelHook``) per unit, registered on that module's diffusers
``HookRegistry`` under the name ``"blockmask"``, so it composes with every other diffusers hook
(``enable_cache``, group offloading, layer-wise casting, ...) on the same or other modules. Each hook
keeps its cache in a diffusers ``StateManager`` (one state per CFG branch); all hooks share one
:class:`MaskedExecution`, which owns the step index and the branch of the current call:

* ``M[k, i] = 1``: run the unit, store its output in the cache, return it;
* ``M[k, i] = 0``: return the cached output of the last step where the unit ran;
* soft gate ``m_i`` (training, Eq. 4): return ``m_i * fresh + (1 - m_i) * cache``.

``reuse="forecast"`` returns a first-order forecast from the unit's last two computed values
instead of the last one (:mod:`blockmask.core.forecast`); ``"hold"`` (the default) is Eq. 3.

A *residual* unit (a whole transformer block, :attr:`blockmask.core.units.Unit.residual`) caches its
residual ``out − x`` instead and, when reused, returns ``x + cache`` for its current input x; per token
stream for blocks returning ``(encoder_hidden_states, hidden_states)`` (:mod:`blockmask.adapters.contracts`).
Units nested inside a reused unit are not called at all (the outer unit's forward never runs).

CFG branch: the name a pipeline gives with ``model.cache_context(name)`` (diffusers' CacheMixin
models), else the position of the call within its step (pipelines that batch cond/uncond: 0).
Caches are reset on entry (``with MaskedExecution(...)``), at the start of every run and by
:meth:`reset` (also diffusers' ``reset_stateful_hooks``), so a cancelled run never leaks stale
features into the next one. Where the step index comes from: :mod:`blockmask.hooks.stepping`.

Compiled with the model (whole-model ``torch.compile``, ``compile_repeated_blocks``), the hooks are traced:
gates are constants of the step's row (a graph per distinct row); :class:`CallTally` keeps the counters.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import numpy as np
import torch
from diffusers.hooks import HookRegistry

from blockmask.core.errors import MaskError, OptionError
from blockmask.core.forecast import check_reuse
from blockmask.core.mask import validate_mask
from blockmask.core.modes import MODES, compiled_body, resolve_mode
from blockmask.core.outputs import first_tensor, map_tensors, same_layout
from blockmask.core.units import Unit, called_mask
from blockmask.hooks import chaincache, containers, feeders, lean, runsums, shortcuts
from blockmask.hooks.branchstates import UnitState  # noqa: F401  (re-exported)
from blockmask.hooks.discover import discover_units, unit_modules
from blockmask.hooks.registry import HOOK_NAME, invalidate_children, register_hooks, remove_hooks
from blockmask.hooks.rowgraph import GRAPH_HOOK, RowGraphHook, cache_reads, graph_store
from blockmask.hooks.tally import TALLY_HOOK, CallTally
from blockmask.hooks.unithook import UnitHook

__all__ = ["HOOK_NAME", "MODES", "TALLY_HOOK", "CallTally", "MaskedExecution", "UnitHook", "compiled_body",
           "first_tensor", "map_tensors", "register_hooks", "remove_hooks", "resolve_mode"]  # re-exports too


class MaskedExecution(contextlib.AbstractContextManager):
    """Drive ``model`` with a K×N mask during a sampling loop.

    Step control: explicit (``set_step(k)`` before each denoiser call: blockmask's own sampler and
    trainer), or from the scheduler of a diffusers pipeline (:class:`blockmask.hooks.stepping.SchedulerSteps`,
    used by :func:`blockmask.apply`).
    """

    def __init__(self, model: torch.nn.Module, mask: np.ndarray | None = None, *, clone_cache: bool = False,
                 mode: str = "eager", replay_factory: Callable[[], Any] | None = None, max_graphs: int = 128,
                 reuse: str = "hold"):
        self.model = model
        self.mode = resolve_mode(mode, next(model.parameters()).device, replay_factory=replay_factory)
        self.reuse = check_reuse(reuse)
        self.forecast = reuse == "forecast"  # reused units forecast from their last two values
        if self.forecast and self.mode == "rowgraph":
            raise OptionError("reuse='forecast' cannot run in rowgraph mode (its caches are single static buffers); "
                              "use eager, compiled or graph")
        self.units: list[Unit] = discover_units(model)
        self.modules = unit_modules(model, self.units)
        self.lean = False  # a whole run of blockmask's own loop: units no step reads are not hooked (hooks.lean)
        self.untallied: np.ndarray | None = None  # while entered lean: per row, the calls of units not hooked
        self.mask = None if mask is None else validate_mask(mask, units=len(self.units))
        self.clone_cache = clone_cache or self.mode in ("graph", "rowgraph")  # (graph replays overwrite outputs)
        self.static = self.mode == "rowgraph"  # one cache buffer per unit, written in place, kept across runs
        self.graphs = None  # the RowGraphHook while entered in rowgraph mode (its stats stay after exit)
        self._stores: tuple[Any, Any] = (None, None)  # (mask, its store_mask), see store_mask
        self.fixed_mask = False  # the mask is the whole run's: a unit no step reads stores nothing (stores)
        self.recycle = False  # a whole run (whole_run): computed values are copied into each unit's own buffer
        # (row, timestep) per model call of the run, where known before it starts (whole_run; a pipeline's
        # scheduler, blockmask.hooks.stepping): lets the shortcuts make their gates for the run at once
        self.run_calls: tuple[tuple[int, float], ...] | None = None
        self.trace: list[int] | None = None  # while a list: the index of every unit call that ran, in order
        self._replay_factory, self._max_graphs = replay_factory, max_graphs
        self.soft: torch.Tensor | None = None  # (N,) relaxed gates (Eq. 4), training only
        self.bypass = False  # True: every unit runs, caches untouched (the frozen reference)
        self._computed = self._skipped = 0  # unit calls that ran (computed) and reused (skipped), since reset
        self.hooks = [UnitHook(self, i) for i in range(len(self.units))]
        self.signature: Any = None  # rowgraph: the current call's shape signature (keys the static caches)
        self.graph_cache = graph_store(model, len(self.units)) if self.static else None
        if self.graph_cache is not None:  # caches shared by every rowgraph run on this model
            for h, shared in zip(self.hooks, self.graph_cache.states):
                h.states._state_cache = shared
        self._entered = False
        # the modules hooked while entered by blockmask.hooks.feeders (norms), .shortcuts and .containers
        self._feeders, self._shortcuts, self._containers = [], [], []
        self.reset()

    # --- lifecycle ----------------------------------------------------------------------
    def reset(self) -> None:
        """Fresh caches (every branch), step 0, branch 0, counters 0."""
        self.step, self.branch = 0, 0
        if not self.static:  # row graphs keep their buffers (row 0 of any mask rewrites them all)
            for h in self.hooks:
                h.states.reset()
        for h in self.hooks:
            h.outcome = None
        self._computed = self._skipped = 0
        self._traced = False
        self.gate_tables: dict = {}  # a run's shortcut gate tables, made at first use (blockmask.hooks.shortcuts)
        self.sums = None  # a FORA-shaped whole run's reuse-step sums, planned on entry (blockmask.hooks.runsums)
        self.chain = None  # a block-caching whole run's chain residual, planned on entry (blockmask.hooks.chaincache)
        self.returned: list | None = None  # while a container learns: (unit, value) each reused unit returned

    def __enter__(self) -> "MaskedExecution":
        self.reset()
        # innermost on the blocks, under the unit hooks (blockmask.hooks.shortcuts)
        self._shortcuts = shortcuts.install(self) if self.mode == "eager" else []
        try:
            modules, hooks, self.untallied = lean.hooked(self)
            register_hooks(modules, hooks)  # all or none (a nested execution: none)
        except BaseException:
            shortcuts.uninstall(self._shortcuts)
            raise
        try:
            register_hooks([self.model], [CallTally(self)], TALLY_HOOK)
            self._feeders = (feeders.install(self, shortcuts.shortcut_rows(self, self._shortcuts))
                             if self.mode == "eager" else [])  # (blockmask.hooks.feeders)
            self.sums = runsums.plan(self, self._shortcuts) if self._shortcuts else None
            self.chain = chaincache.plan(self)
            self._containers = containers.install(self)  # (blockmask.hooks.containers)
        except BaseException:
            remove_hooks(self.modules)
            remove_hooks([self.model], TALLY_HOOK)
            shortcuts.uninstall(self._shortcuts)
            raise
        self._entered = True
        if self.static and self.mask is not None:
            self._install_graphs()
        invalidate_children(self.model)
        return self

    def _install_graphs(self) -> None:
        try:
            self.graphs = RowGraphHook(self, max_graphs=self._max_graphs, factory=self._replay_factory)
            registry = HookRegistry.check_if_exists_or_initialize(self.model)
            registry.register_hook(self.graphs, GRAPH_HOOK)
        except BaseException:
            remove_hooks(self.modules)
            remove_hooks([self.model], TALLY_HOOK)
            self._entered = False
            raise

    def __exit__(self, *exc) -> None:
        counts = self.computed, self.skipped
        try:
            if self._entered:
                feeders.uninstall(self._feeders)
                containers.uninstall(self._containers)
                remove_hooks(self.modules)
                shortcuts.uninstall(self._shortcuts)
                if self.graphs is not None:  # the outer model hook first: diffusers unwinds them last-in first-out
                    remove_hooks([self.model], GRAPH_HOOK)
                remove_hooks([self.model], TALLY_HOOK)
                self._entered = False
                invalidate_children(self.model)
        finally:
            self.untallied = None
            self.reset()  # caches freed; the counters stay readable (what ran and what was reused)
            self.computed, self.skipped = counts

    @property
    def store_mask(self) -> np.ndarray | None:
        """rowgraph: the (K, N) cells a later step reads (only those are stored); else None."""
        if not self.static or self.mask is None:
            return None
        if self._stores[0] is not self.mask:
            self._stores = (self.mask, cache_reads(self.mask, [u.parent for u in self.units]))
        return self._stores[1]

    def stores(self, i: int) -> bool:
        """Whether unit i, computed at the current step, keeps its output as its cache: not in bypass
        (the frozen reference); in rowgraph mode only the cells a later step reads (store_mask); with a
        :attr:`fixed_mask` and hard gates, only units whose cache some step reads (called where reused:
        not an all-ones column, nor a branch reused only inside its reused block). Otherwise always, so a
        run can be resumed under another mask (:mod:`blockmask.learning.refine`)."""
        if self.bypass:
            return False
        if self.static:
            return bool(self.store_mask[self.step, i])
        if not self.fixed_mask or self.cache_read is None or self.soft is not None:
            return True
        return self.cache_read[i]

    # --- step control -------------------------------------------------------------------
    def set_step(self, k: int, branch: Any = 0) -> None:
        if self.mask is not None and not 0 <= k < self.mask.shape[0]:
            raise MaskError(f"step {k} is outside the mask's {self.mask.shape[0]} steps")
        self.step, self.branch = k, branch

    @property
    def step(self) -> int:
        return self._step

    @step.setter
    def step(self, k: int) -> None:
        self._step = k
        self._row = self._row_at(k)

    @property
    def mask(self) -> np.ndarray | None:
        return self._mask

    @mask.setter
    def mask(self, m: np.ndarray | None) -> None:
        if self.untallied is not None:
            raise MaskError("a whole run's mask cannot change while it runs (its units were hooked for it)")
        self._mask = m
        self._row = self._row_at(getattr(self, "_step", 0))
        # per unit: does any step read its cache, i.e. call it where the mask reuses it (Python bools,
        # constants under torch.compile); a branch reused only where its block is reused too never does
        self.cache_read = None if m is None else tuple(bool(v) for v in self.reads(m).any(axis=0))

    def _row_at(self, k: int) -> tuple[bool, ...] | None:
        """Row k of the mask as Python bools (None without a mask; () past its end, so gate() raises).

        The gates are read from this tuple, never by indexing the NumPy mask inside a unit's forward:
        under a whole-model ``torch.compile`` the tuple's values are constants guarded per row (one
        graph per distinct row), where NumPy indexing would be traced as a tensor and break the graph
        at every unit. A mask changed in place takes effect at the next ``set_step``."""
        m = self._mask
        if m is None:
            return None
        return tuple(bool(v) for v in m[k].tolist()) if 0 <= k < m.shape[0] else ()

    def gate(self, i: int):
        """True (run), False (reuse) or a 0-d tensor (soft gate) for unit i at the current step."""
        if self.bypass:
            return True
        if self.soft is not None:
            return self.soft[i]
        row = self._row
        return True if row is None else row[i]

    @property
    def computed(self) -> int:
        """Unit calls that ran since reset (for tests and readouts)."""
        if self._traced:
            self.collect()
        return self._computed

    @computed.setter
    def computed(self, n: int) -> None:
        self._computed = n

    @property
    def skipped(self) -> int:
        """Unit calls that returned their cache since reset."""
        if self._traced:
            self.collect()
        return self._skipped

    @skipped.setter
    def skipped(self, n: int) -> None:
        self._skipped = n

    def collect_traced(self) -> None:
        """Before each model call (:class:`blockmask.hooks.tally.CallTally`): count the unit calls compiled
        code could only note."""
        if torch.compiler.is_compiling() or self._traced:  # (eager: no call at all)
            self.collect()

    def count(self, hook: UnitHook, ran: bool) -> None:
        """Count one unit call (``computed`` / ``skipped``). In code dynamo traces, a counter read would be
        guarded on its value (a recompilation at every call): the outcome, a constant, is only written
        on the hook there, and :meth:`collect` counts it outside the graph."""
        if torch.compiler.is_compiling():
            hook.outcome = ran
            self._traced = True
        elif ran:
            self._computed += 1
        else:
            self._skipped += 1

    @torch.compiler.disable
    def collect(self) -> None:
        """Count the unit calls that ran inside compiled code (:meth:`count`): before each
        model call (:class:`CallTally`) and when the counters are read; left out of any graph."""
        if not self._traced:
            return
        for h in self.hooks:
            if h.outcome is True:
                self._computed += 1
            elif h.outcome is False:
                self._skipped += 1
            h.outcome = None
        self._traced = False

    def whole_run(self, calls=None) -> "MaskedExecution":
        """Set up for one whole sampling run whose mask is this execution's from first to last step, with
        nobody else holding its caches (:func:`blockmask.sampling.sample.sample`): units no step reads
        store nothing (:attr:`fixed_mask`) and get no hook (:mod:`blockmask.hooks.lean`), the others keep
        one buffer each for the run (:attr:`recycle`). Why the buffers: holding each step's outputs moves the
        allocator's free memory around, and glibc hands it back to the OS and faults it in again; on
        the bundled mnist-dit (CPU) a computed step cost 3–6% more than the plain model's, 1–2% with
        the buffers (docs/PERFORMANCE.md, "Paced timing"). ``calls``: the run's model calls as (mask row,
        timestep value) (:meth:`blockmask.sampling.sample.SamplingRun.calls`), so the shortcuts can
        compute their gates for the whole run at once (:class:`blockmask.hooks.shortcuts.GateTable`)."""
        self.fixed_mask = self.recycle = self.lean = True
        self.run_calls = None if calls is None else tuple((int(k), float(t)) for k, t in calls)
        return self

    def whole_mask(self) -> np.ndarray | None:
        """The mask as a bool array where it is the whole run's (:attr:`fixed_mask`) under hard gates,
        so what runs at every step is known before the first (the shortcuts and feeders install only
        where it needs them); else None."""
        if not self.fixed_mask or self._mask is None or self.soft is not None:
            return None
        return np.asarray(self._mask, bool)

    def reads(self, m: np.ndarray) -> np.ndarray:
        """The cells of mask ``m`` where a unit returns its cache: called (every enclosing unit executes,
        :func:`blockmask.core.units.called_mask`) and reused."""
        m = np.asarray(m, bool)
        return called_mask(m, [u.parent for u in self.units]) & ~m

    def store(self, old: Any, new: Any) -> Any:
        """The value to keep as a unit's cache: ``new`` (detached, cloned where needed); with static
        caches (rowgraph), written into the existing buffer ``old`` in place; with :attr:`recycle`
        outside autograd, a clone of ``new`` the first time and then copied into that buffer ``old``
        (``new`` may be ``old`` already filled: :meth:`recyclable`)."""
        if new is old:
            return old
        if old is not None and (self.static or (self.recycle and not torch.is_grad_enabled()
                                                and same_layout(old, new))):
            map_tensors(lambda o, n: o.copy_(n), old, new)
            return old
        if self.recycle and not torch.is_grad_enabled():
            return map_tensors(lambda t: t.detach().clone(), new)  # the run's own buffer from now on
        return self._keep(new)

    def recyclable(self, old: Any) -> Any:
        """``old``, a unit's cache buffer, where :meth:`store` would refill it in place (a whole run
        outside autograd, not the row graphs' static buffers): a value may be written straight into it;
        else None."""
        return old if old is not None and self.recycle and not self.static and not torch.is_grad_enabled() else None

    def cache_pointers(self) -> dict:
        """{(unit, branch): data_ptr of its first cache tensor}: the static buffers' identity (tests)."""
        return {(i, b): first_tensor(st.cache).data_ptr() for i, h in enumerate(self.hooks)
                for b, st in h.states._state_cache.items() if st.cache is not None}

    def _keep(self, out: Any) -> Any:
        if self.clone_cache or torch.is_grad_enabled():
            out = map_tensors(lambda t: t.detach().clone() if self.clone_cache else t.detach(), out)
        return out

    # --- helpers for the trainer ----------------------------------------------------------
    @contextlib.contextmanager
    def reference(self):
        """Every unit runs and no cache changes: the frozen model on the same input (Eq. 5's F*)."""
        prev = self.bypass
        self.bypass = True
        try:
            yield
        finally:
            self.bypass = prev

    @contextlib.contextmanager
    def soft_gates(self, m: torch.Tensor):
        """Run with relaxed gates ``m`` (N,) instead of the mask row; caches are read, not written."""
        if m.shape != (len(self.units),):
            raise ValueError(f"soft gates must have shape ({len(self.units)},), got {tuple(m.shape)}")
        self.soft = m
        try:
            yield
        finally:
            self.soft = None

    def caches_state(self, branch: Any = 0) -> list[Any]:
        """Every unit's cache in ``branch`` (with ``reuse="forecast"``: (cache, prev, steps) tuples), to
        resume a run from a step (:mod:`blockmask.learning.refine`)."""
        if self.forecast:
            return [h.states.snapshot(branch) for h in self.hooks]
        return [h.states.peek(branch) for h in self.hooks]

    def load_caches_state(self, caches: list[Any], branch: Any = 0) -> None:
        for h, c in zip(self.hooks, caches):
            if self.forecast:
                h.states.get_state(branch).restore(c)
            else:
                h.states.get_state(branch).cache = c
