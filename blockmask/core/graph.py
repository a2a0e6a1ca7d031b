"""Direct consumers of each unit, measured on the real model (METHOD.md §4).

A consumer c of unit i is *direct* when i's output reaches c's input through non-unit ops only.
Measured by freezing every unit to its recorded output, perturbing one unit's output, and seeing
whose inputs (and whether the model output) move. Nothing is hand-written, so the graph cannot
drift from the architecture.

Nested units (a transformer block around its attn1/ff; METHOD.md §1 and ours): an inner unit's
output reaches the rest of the model only through its enclosing unit, so its direct consumers
are the later units inside the same enclosing unit plus the enclosing unit itself. An enclosing
unit's value is its residual (``out − x``); its consumers are measured like any unit's, with the
other enclosing units running normally around frozen inner units.
"""

from __future__ import annotations

import dataclasses

import torch

from blockmask.core.outputs import first_tensor, map_tensors
from blockmask.hooks.registry import wrap_forwards
from blockmask.core.units import discover_units, example_call, unit_modules


@dataclasses.dataclass(frozen=True)
class ConsumerGraph:
    """consumers[i]: indices of units that read unit i's output directly (all > i);
    feeds_output[i]: the model output depends on unit i directly."""

    consumers: tuple[tuple[int, ...], ...]
    feeds_output: tuple[bool, ...]
    parents: tuple[int, ...] = ()  # enclosing unit of each unit (-1: none); () = no nesting

    @property
    def num_units(self) -> int:
        return len(self.consumers)

    @classmethod
    def chain(cls, n: int) -> "ConsumerGraph":
        """A pure chain b_0 → b_1 → … → b_{n-1} → output (the paper's Eq. 12 setting)."""
        return cls(tuple((i + 1,) if i + 1 < n else () for i in range(n)), tuple(i == n - 1 for i in range(n)))

    def producers(self) -> list[list[int]]:
        prods: list[list[int]] = [[] for _ in self.consumers]
        for i, cs in enumerate(self.consumers):
            for c in cs:
                prods[c].append(i)
        return prods

    def to_json(self) -> dict:
        return {"consumers": [list(c) for c in self.consumers], "feeds_output": list(self.feeds_output),
                "parents": list(self.parents)}


def _tensors(args, kwargs) -> list[torch.Tensor]:
    out = []

    def visit(x):
        if isinstance(x, torch.Tensor):
            out.append(x.detach().clone())
        elif isinstance(x, (list, tuple)):
            for y in x:
                visit(y)
        elif isinstance(x, dict):
            for y in x.values():
                visit(y)

    visit(list(args))
    visit(kwargs)
    return out


def _moved(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    for x, y in zip(a, b):
        if x.shape != y.shape:
            return True
        tol = 1e-5 * (1 + float(x.abs().max())) if x.is_floating_point() and x.device.type != "cpu" else 0.0
        if float((x.float() - y.float()).abs().max()) > tol:
            return True
    return False


def _encloses(parents, outer: int, i: int) -> bool:
    p = parents[i]
    while p >= 0:
        if p == outer:
            return True
        p = parents[p]
    return False


@torch.no_grad()
def consumer_graph(model: torch.nn.Module) -> ConsumerGraph:
    """Measure the direct-consumer graph of ``model``'s units (N + 1 cheap forwards). Cached on the model."""
    cached = getattr(model, "_blockmask_graph", None)
    if cached is not None:
        return cached
    units = discover_units(model)
    mods = unit_modules(model, units)
    n = len(units)
    parents = tuple(u.parent for u in units)
    outer = {p for p in parents if p >= 0}  # units with units inside them
    residual = [u.residual for u in units]
    run = example_call(model, probe=True)
    rec_in: list = [None] * n
    rec_out: list = [None] * n  # each unit's value: its output, or its residual for residual units

    def first_input(a, k):
        return a[0] if a else k["hidden_states"]

    def recorder(i, orig):
        def fwd(*a, **k):
            rec_in[i] = _tensors(a, k)
            out = orig(*a, **k)
            val = out - first_input(a, k) if residual[i] else out
            rec_out[i] = map_tensors(lambda t: t.detach().clone(), val)
            return out

        return fwd

    with wrap_forwards(mods, recorder):
        ref_out = run().detach().clone()

    consumers: list[tuple[int, ...]] = []
    feeds: list[bool] = []
    g = torch.Generator().manual_seed(1234)
    for j in range(n):
        seen_in: list = [None] * n
        base = rec_out[j]
        scale = float(first_tensor(base).float().std()) + 1.0
        noise = map_tensors(lambda t: (torch.randn(t.shape, generator=g) * scale).to(t.device, t.dtype), base)
        perturbed = map_tensors(lambda t, z: t + z, base, noise)

        def frozen(i, orig, j=j, perturbed=perturbed, seen_in=seen_in):
            def fwd(*a, **k):
                seen_in[i] = _tensors(a, k)
                if i in outer and i != j:
                    return orig(*a, **k)  # enclosing units run; the units inside them are frozen
                val = map_tensors(lambda t: t.clone(), perturbed if i == j else rec_out[i])
                return first_input(a, k) + val if residual[i] else val

            return fwd

        with wrap_forwards(mods, frozen):
            out = run()
        moved = [i for i in range(n) if i != j and seen_in[i] is not None and _moved(seen_in[i], rec_in[i])]
        if parents[j] >= 0:  # reaches the rest only through its enclosing unit
            inside = {i for i in range(n) if _encloses(parents, parents[j], i)}
            consumers.append(tuple(sorted({i for i in moved if i in inside} | {parents[j]})))
            feeds.append(False)
        else:
            consumers.append(tuple(moved))
            feeds.append(_moved([out], [ref_out]))
    graph = ConsumerGraph(tuple(consumers), tuple(feeds), parents if outer else ())
    bad = [(j, c) for j, cs in enumerate(consumers) for c in cs if c < j]
    if bad:
        raise RuntimeError(f"unit {bad[0][1]} reads unit {bad[0][0]} which runs after it: execution order is wrong")
    model._blockmask_graph = graph
    return graph
