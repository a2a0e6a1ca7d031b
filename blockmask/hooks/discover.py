"""Units and their consumer graph, found on a live model (METHOD.md §1 and §4).

Units are found by the model's adapter (module-path patterns) and ordered by *measuring* one
forward pass through ``blockmask_measure`` hooks on the units' diffusers ``HookRegistry``
(:func:`blockmask.hooks.registry.wrap_forwards`), so the order is the order the model really runs
them in. Families whose units are whole blocks only (SD3, Flux, Sana, HunyuanDiT, Wan) declare
``measured_order = False``: their blocks run in definition order, so no forward and no example
inputs are needed.

The consumer graph is measured by freezing every unit to its recorded output, perturbing one unit's
output, and seeing whose inputs (and whether the model output) move. Nothing is hand-written, so the
graph cannot drift from the architecture.
"""

from __future__ import annotations

from typing import Callable

import torch

from blockmask.adapters import Adapter, adapter_for
from blockmask.core.errors import BlockmaskError
from blockmask.core.graph import ConsumerGraph
from blockmask.core.outputs import first_tensor, map_tensors
from blockmask.core.units import Unit, block_of
from blockmask.hooks.registry import wrap_forwards


def example_call(model, adapter: Adapter | None = None, batch: int = 1, seed: int = 0,
                 probe: bool = False) -> Callable[[], torch.Tensor]:
    """A zero-argument function running one forward on seeded example inputs (for measuring).
    ``probe``: at the adapter's probe shape (structure only: unit order, consumer graph), not for MACs."""
    adapter = adapter or adapter_for(model)
    p = next(model.parameters())
    g = torch.Generator().manual_seed(seed)
    shape = adapter.probe_shape(model) if probe else adapter.latent_shape(model)
    x = torch.randn((batch, *shape), generator=g).to(p.device, p.dtype)
    t = torch.tensor(500, device=p.device)
    cond = adapter.conditioning(model, batch, generator=g).to(p.device, p.dtype)
    return lambda: adapter.forward(model, x, t, cond)


def discover_units(model: torch.nn.Module, *, measure: bool = True) -> list[Unit]:
    """The model's units in execution order. Raises UnsupportedModelError for unknown classes.
    ``measure=False`` (:func:`blockmask.enable`): no forward where the adapter knows the order
    statically; the pipeline's first real call then checks it (:mod:`blockmask.hooks.pipesteps`)."""
    cached = getattr(model, "_blockmask_units", None)
    if cached is not None:
        return cached
    adapter = adapter_for(model)
    cands = adapter.unit_candidates(model)
    if not cands:
        raise RuntimeError(f"no maskable units found in {type(model).__name__}")
    order: list[int] = []

    def make(i, orig):
        def fwd(*a, **k):
            out = orig(*a, **k)
            order.append(i)  # completion order: inner units before the unit enclosing them
            return out

        return fwd

    static = None if measure or not adapter.measured_order else adapter.static_order([c[0] for c in cands])
    if static is not None:
        order = static
    elif adapter.measured_order:
        try:
            with torch.no_grad(), wrap_forwards([m for _, _, m in cands], make):
                example_call(model, adapter, probe=True)()
        except BlockmaskError:  # example inputs blockmask cannot synthesise: the order known without a forward
            order = adapter.static_order([c[0] for c in cands])
            if order is None:
                raise
    else:  # whole blocks, run in definition order (Flux: double-stream, then single-stream blocks)
        order = list(range(len(cands)))
    seen = list(dict.fromkeys(order))
    if len(order) != len(seen):
        raise RuntimeError(f"a unit of {type(model).__name__} ran twice in one forward; cannot mask it per step")
    missing = [cands[i][0] for i in range(len(cands)) if i not in seen]
    if missing:
        raise RuntimeError(f"units never ran in a forward pass: {', '.join(missing[:5])}")
    return remember_order(model, [cands[i][0] for i in seen], cands)


def remember_order(model: torch.nn.Module, names: list[str], cands=None) -> list[Unit]:
    """The units named ``names`` (unit candidates' module paths), in that execution order, cached on
    ``model``: order is a property of the architecture."""
    cands = cands if cands is not None else adapter_for(model).unit_candidates(model)
    kinds = {c[0]: c[1] for c in cands}

    def parent(name: str) -> int:  # the innermost other unit whose module path encloses this one
        outer = [j for j, o in enumerate(names) if name.startswith(o + ".")]
        return max(outer, key=lambda j: len(names[j])) if outer else -1

    units = [Unit(j, n, kinds[n], block_of(n), parent(n)) for j, n in enumerate(names)]
    model._blockmask_units = units
    return units


def unit_modules(model: torch.nn.Module, units: list[Unit]) -> list[torch.nn.Module]:
    return [model.get_submodule(u.name) for u in units]


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
