"""A unit's caches, one per CFG branch, as diffusers hook state (:class:`blockmask.hooks.execution.UnitHook`)."""

from __future__ import annotations

from typing import Any

from diffusers.hooks.hooks import BaseState, StateManager


class UnitState(BaseState):
    """One unit's cache in one CFG branch: its last computed output (or residual, for blocks), and
    for a forecast (``reuse="forecast"``) the one computed before it, with the steps of both."""

    def __init__(self):
        self.reset()

    def reset(self, *args, **kwargs) -> None:
        self.cache: Any = None
        self.prev: Any = None  # forecast only: the value computed before ``cache``
        self.k_last: int | None = None  # the step ``cache`` was computed at (forecast only)
        self.k_prev: int | None = None  # the step ``prev`` was computed at (forecast only)

    def snapshot(self) -> tuple:
        return (self.cache, self.prev, self.k_last, self.k_prev)

    def restore(self, snap) -> None:
        self.cache, self.prev, self.k_last, self.k_prev = snap


class BranchStates(StateManager):
    """diffusers' StateManager keyed by CFG branch: the pipeline's ``cache_context`` name when one is
    set (diffusers sets it on every stateful hook's StateManager), else the execution's own branch."""

    def __init__(self, execution):
        super().__init__(UnitState)
        self._execution = execution

    def key(self):
        ex = self._execution
        base = self._context.name if self._context is not None else ex.branch
        return (base, ex.signature) if ex.static else base

    def get_state(self, key=None) -> UnitState:
        key = self.key() if key is None else key
        if key not in self._state_cache:
            self._state_cache[key] = UnitState()
        return self._state_cache[key]

    def peek(self, key):
        st = self._state_cache.get(key)
        return None if st is None else st.cache

    def snapshot(self, key) -> tuple:
        st = self._state_cache.get(key)
        return (None, None, None, None) if st is None else st.snapshot()
