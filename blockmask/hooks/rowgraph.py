"""Row graphs: one captured whole-forward per distinct mask row (execution mode ``rowgraph``).

A K×N mask has at most K, and usually far fewer, distinct rows. For each distinct row this mode
captures the *whole* denoiser forward, with that row's run/reuse decisions fixed, as one CUDA graph,
and replays it at every step whose row it is. Launch overhead (the reason eager per-unit caching
reaches only part of the MAC ratio on a GPU) disappears: a step costs the kernels its row runs.

What makes one graph per row correct:

* **Static caches.** Every unit's cache (per CFG branch) is one buffer, allocated at the first step
  it is stored and then only written *in place* (``copy_``), by eager calls and graph replays alike.
  Every graph reads and writes the same buffers, so a value cached by row A's graph is what row B's
  graph reuses. Only values that a later step reads are stored (:func:`cache_reads`; the store
  pattern is part of a graph's key), so an all-ones row is the plain forward, with no copies. Caches are therefore kept across runs (not dropped on reset): no stale value can be
  read, since row 0 of every valid mask is all ones (every unit runs, and stores, at a run's first step).
* **Static inputs.** A captured graph owns copies of the call's tensors (on the model's device; a
  CPU timestep too); each replay copies the new call's tensors into them. Non-tensor arguments and
  tensor shapes/dtypes are part of a graph's key, so a new batch size or resolution captures anew.
* **One memory pool.** All graphs share one pool; each graph's output buffer stays referenced, so
  no later capture reuses it. At most ``max_graphs`` graphs are captured; calls past the cap, and
  calls whose capture fails, run eagerly (counted in :class:`GraphStats`).
* **First sight runs eagerly.** The first call with a new key runs the real forward (on a side
  stream, the warm-up that capture requires) and returns its output; the capture that follows only
  records. Later calls with that key replay.

The graph itself is pluggable (``factory``): :class:`torch.cuda.CUDAGraph` on CUDA, and on the CPU
:class:`ReplayCheck`, which re-runs the recorded call on the static buffers and checks that every
cache buffer it touches is the one it was captured with (what CI tests on the CPU).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import numpy as np
import torch
from diffusers.hooks import ModelHook
from torch.utils._pytree import tree_flatten, tree_unflatten

from blockmask.core.errors import MaskError
from blockmask.core.units import called_mask

GRAPH_HOOK = "blockmask_rowgraph"


@dataclasses.dataclass(frozen=True)
class RowPlan:
    """The distinct rows of a mask and, per step, which of them it is."""

    rows: np.ndarray  # (D, N) bool, distinct rows in order of first use
    row_of_step: np.ndarray  # (K,) int, index into rows

    @property
    def distinct(self) -> int:
        return int(self.rows.shape[0])


def plan_rows(mask: np.ndarray) -> RowPlan:
    """Group a mask's steps by distinct row (first-use order: row 0 of the plan is step 0's row)."""
    m = np.asarray(mask, dtype=bool)
    keys: dict[bytes, int] = {}
    of_step = np.empty(m.shape[0], dtype=int)
    for k, r in enumerate(m):
        of_step[k] = keys.setdefault(r.tobytes(), len(keys))
    rows = np.zeros((len(keys), m.shape[1]), dtype=bool)
    for k, d in enumerate(of_step):
        rows[d] = m[k]
    return RowPlan(rows, of_step)


def cache_reads(mask: np.ndarray, parents) -> np.ndarray:
    """(K, N) bool: the executed cells whose output a later step reads from the cache, i.e. the unit's
    next *call* (it is called when every enclosing unit executes) reuses instead of running. Only these
    need storing; row graphs skip the other stores (an all-ones mask stores nothing: the plain model)."""
    m = np.asarray(mask, dtype=bool)
    called = called_mask(m, parents)
    executed = called & m
    out = np.zeros_like(m)
    next_reads = np.zeros(m.shape[1], dtype=bool)  # seen from step k: does the next call read the cache?
    for k in range(m.shape[0] - 1, -1, -1):
        out[k] = executed[k] & next_reads
        next_reads = np.where(called[k], ~m[k], next_reads)
    return out


@dataclasses.dataclass
class GraphStats:
    """What the row graphs did since they were installed (kept after the run, for readouts)."""

    captured: int = 0
    replays: int = 0
    eager_calls: int = 0  # first sight of a key, past the cap, or a failed capture
    failed: int = 0
    capture_s: float = 0.0
    errors: list[str] = dataclasses.field(default_factory=list)


class ReplayCheck:
    """A CPU stand-in for ``torch.cuda.CUDAGraph``: ``replay()`` re-runs the recorded call on the same
    static tensors and checks that the caches it stores into are the buffers seen at capture."""

    def __init__(self, execution):
        self._caches = execution.cache_pointers
        self._fn: Callable[[], Any] | None = None
        self._out: Any = None
        self._ptrs: dict = {}

    def capture(self, fn: Callable[[], Any]) -> Any:
        self._fn = fn
        self._out = fn()
        self._ptrs = self._caches()
        return self._out

    def replay(self) -> None:
        out = self._fn()
        now = self._caches()
        if any(now.get(k) != p for k, p in self._ptrs.items()):
            raise MaskError("row graph: a cache buffer was replaced instead of written in place")
        _copy_into(self._out, out)


class CudaRowGraph:
    """One ``torch.cuda.CUDAGraph`` in the shared pool; capture after a side-stream warm-up."""

    def __init__(self, execution, pool):
        self.graph = torch.cuda.CUDAGraph()
        self.pool = pool

    def capture(self, fn: Callable[[], Any]) -> Any:
        with torch.cuda.graph(self.graph, pool=self.pool):
            out = fn()
        return out

    def replay(self) -> None:
        self.graph.replay()


def _copy_into(dst: Any, src: Any) -> None:
    a, _ = tree_flatten(dst)
    b, _ = tree_flatten(src)
    for x, y in zip(a, b):
        if isinstance(x, torch.Tensor):
            x.copy_(y)


def _clone(out: Any) -> Any:
    leaves, spec = tree_flatten(out)
    return tree_unflatten([t.clone() if isinstance(t, torch.Tensor) else t for t in leaves], spec)


class GraphStore:
    """What outlives one masked run, kept on the model: every unit's static cache states (keyed by
    CFG branch and call signature, so another batch size gets buffers of its own), the captured
    graphs, their shared memory pool and the stats. A later run with any mask reuses all of it."""

    def __init__(self, n_units: int):
        self.n_units = n_units
        self.states: list[dict] = [{} for _ in range(n_units)]
        self.entries: dict[Any, "_Entry | None"] = {}  # None: capture failed, run eagerly
        self.stats = GraphStats()
        self.pool = None


STORE_ATTR = "_blockmask_rowgraphs"


def graph_store(model: torch.nn.Module, n_units: int) -> GraphStore:
    """The model's :class:`GraphStore` (made on first use)."""
    store = model.__dict__.get(STORE_ATTR)
    if store is None or store.n_units != n_units:
        store = GraphStore(n_units)
        model.__dict__[STORE_ATTR] = store
    return store


def release_graphs(model: torch.nn.Module) -> None:
    """Drop the model's captured row graphs and static caches (their memory goes back to torch)."""
    model.__dict__.pop(STORE_ATTR, None)


@dataclasses.dataclass
class _Entry:
    graph: Any
    inputs: list[Any]  # static leaves (tensors on the device) in the call's flattened order
    output: Any
    computed: int
    skipped: int


class RowGraphHook(ModelHook):
    """On the denoiser: dispatch each call to its row's graph (see the module docstring)."""

    def __init__(self, execution, *, max_graphs: int = 128, factory: Callable[[Any], Any] | None = None):
        super().__init__()
        self.ex = execution
        self.max_graphs = int(max_graphs)
        self.store = execution.graph_cache
        self.stats = self.store.stats
        self.entries = self.store.entries
        self.device = next(execution.model.parameters()).device
        if factory is None:
            if self.device.type != "cuda":
                raise MaskError("row graphs need CUDA (or a replay factory, for tests)")
            if self.store.pool is None:
                self.store.pool = torch.cuda.graph_pool_handle()
            pool = self.store.pool
            factory = lambda ex: CudaRowGraph(ex, pool)  # noqa: E731
        self.factory = factory

    def _key(self, leaves: list[Any], spec) -> tuple:
        ex = self.ex
        sig = tuple((tuple(t.shape), t.dtype) if isinstance(t, torch.Tensor) else ("py", repr(t)) for t in leaves)
        return ex.mask[ex.step].tobytes() + ex.store_mask[ex.step].tobytes(), str(ex.branch), str(spec), sig

    def new_forward(self, module, *args, **kwargs):
        ex = self.ex
        orig = self.fn_ref.original_forward
        if ex.mask is None or ex.bypass or ex.soft is not None or torch.is_grad_enabled():
            return orig(*args, **kwargs)
        leaves, spec = tree_flatten((args, kwargs))
        key = self._key(leaves, spec)
        ex.signature = key[2:]  # the static caches of this call shape
        entry = self.entries.get(key, False)
        if entry is None or (entry is False and len(self.entries) >= self.max_graphs):
            self.stats.eager_calls += 1
            return orig(*args, **kwargs)
        if entry is False:
            return self._first(orig, key, leaves, spec)
        for s, t in zip(entry.inputs, leaves):
            if isinstance(s, torch.Tensor):
                s.copy_(t)
        counts = ex.computed + entry.computed, ex.skipped + entry.skipped
        entry.graph.replay()  # (a replay check re-runs the hooks, which count: the counts are set after)
        ex.computed, ex.skipped = counts
        self.stats.replays += 1
        return _clone(entry.output)

    def _first(self, orig, key, leaves, spec):
        """Run the call for real on static inputs, then capture it; returns the real output."""
        ex = self.ex
        static = [t.detach().to(self.device).clone() if isinstance(t, torch.Tensor) else t for t in leaves]
        args, kwargs = tree_unflatten(static, spec)
        c0, s0 = ex.computed, ex.skipped
        cuda = self.device.type == "cuda"
        if cuda:  # the warm-up capture needs, on a side stream
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = orig(*args, **kwargs)
            torch.cuda.current_stream().wait_stream(side)
        else:
            out = orig(*args, **kwargs)
        computed, skipped = ex.computed - c0, ex.skipped - s0
        t0 = time.perf_counter()
        graph = self.factory(ex)
        try:
            static_out = graph.capture(lambda: orig(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - an uncapturable call still runs, eagerly
            self.entries[key] = None
            self.stats.failed += 1
            self.stats.errors.append(f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}")
            if cuda:
                torch.cuda.synchronize()
        else:
            self.entries[key] = _Entry(graph, static, static_out, computed, skipped)
            self.stats.captured += 1
        if cuda:
            torch.cuda.synchronize()
        self.stats.capture_s += time.perf_counter() - t0
        self.stats.eager_calls += 1
        ex.computed, ex.skipped = c0 + computed, s0 + skipped  # the capture's Python pass ran the hooks again
        return out

    def reset_state(self, module):
        return module
