"""Containers: a block whose units a step all reuses returns their reused values in one go (issue 26:
"skip a whole container (a down/up block, a stage) in one go when all its units reuse").

A U-Net's down, mid and up blocks are units (resnets, attentions, down/upsamplers) and glue: an up
block concatenates a skip input onto its stream before each resnet. At a step that reuses every unit
of such a block, its own forward still runs that glue on the reused values, and forms the reused value
(a forecast's ``lerp``) of every unit, though the block's output holds only some of them (an up
block's: its last unit's). On the bundled mnist-ddpm the concatenations alone were about 1 of the 4.5–5
ms of ops of a call that reuses every unit (docs/PERFORMANCE.md, "Whole containers"). A
:class:`ContainerHook` on the block returns its output straight from the units it is made of.

Which unit each part of the output is, is observed, not written per class. At the first call of a run
at which the mask reuses all of a container's units, the container runs as usual while the unit hooks
note the object each reused unit returns (:meth:`blockmask.hooks.unithook.UnitHook.reused`). Where
every tensor of the container's output is one of them (and each unit was called once), the
container's *pattern* (the output's tuple structure, each leaf a unit) is kept for that call's
arguments (their shapes and plain values); later such calls build the output from those units' reused
values and count every unit the container called as reused, so tallies are unchanged. A container
whose output holds anything else (an op after its last unit, an input passed through) always runs its
own forward. The images are the same bit for bit (tests/test_containers.py): the values are the ones
the container's own forward would have returned.

Only in a whole run of blockmask's own loop (:meth:`~blockmask.hooks.execution.MaskedExecution.whole_run`:
a fixed mask, hard gates, eager mode, no trace), only for containers the mask reuses whole at some step,
only the outermost (a U-Net's blocks hold none inside them), and never for one holding a residual or
nested unit (a reused residual unit reads its input, so the container's input would matter).
"""

from __future__ import annotations

import torch
from diffusers.hooks import ModelHook

from blockmask.hooks.registry import register_hooks, remove_hooks

CONTAINER_HOOK = "blockmask_container"
_SCALARS = (bool, int, float, str, type(None))


class Leaf:
    """A place in a container's output filled by unit ``index``'s reused value."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def containers(model: torch.nn.Module, units) -> list[tuple[torch.nn.Module, tuple[int, ...]]]:
    """(module, the indices of the units inside it) for every outermost module of ``model`` that holds
    units, is neither a unit, inside one, the model itself nor a module list, and holds no residual or
    nested unit (outermost: one container never calls another, so each call is served or run whole)."""
    names = [u.name for u in units]
    found: dict[str, tuple] = {}
    for name, mod in model.named_modules():
        if not name or isinstance(mod, (torch.nn.ModuleList, torch.nn.ModuleDict)):
            continue
        if any(name == n or name.startswith(n + ".") for n in names):
            continue
        inside = tuple(i for i, n in enumerate(names) if n.startswith(name + "."))
        if inside and not any(units[i].residual or units[i].parent >= 0 for i in inside):
            found[name] = (mod, inside)
    return [v for name, v in found.items() if not any(name.startswith(o + ".") for o in found)]


def install(execution) -> list[torch.nn.Module]:
    """Register a :class:`ContainerHook` on every container the whole run's mask reuses whole at some
    step (a called, reused cell for each of its units); the modules hooked (none outside a whole run)."""
    m = execution.whole_mask()
    if m is None or execution.mode != "eager" or execution.static:
        return []
    reads = execution.reads(m)
    pairs = [(mod, inside) for mod, inside in containers(execution.model, execution.units)
             if reads[:, list(inside)].all(axis=1).any()]
    register_hooks([mod for mod, _ in pairs], [ContainerHook(execution, inside) for _, inside in pairs],
                   CONTAINER_HOOK)
    return [mod for mod, _ in pairs]


def uninstall(modules: list[torch.nn.Module]) -> None:
    remove_hooks(modules, CONTAINER_HOOK)


def call_key(args, kwargs) -> tuple:
    """What a container's pattern is kept for: each argument's shape and dtype (tensors), value (plain
    scalars), the same of each item (tuples, lists, dicts) or type."""
    def one(v):
        if isinstance(v, torch.Tensor):
            return tuple(v.shape), v.dtype
        if isinstance(v, _SCALARS):
            return v
        if isinstance(v, (tuple, list)):
            return type(v).__name__, tuple(one(x) for x in v)
        if isinstance(v, dict):
            return "dict", tuple(sorted((str(k), one(x)) for k, x in v.items()))
        return type(v).__name__
    return tuple(one(a) for a in args), tuple(sorted((k, one(v)) for k, v in kwargs.items()))


def pattern_of(out, returned: dict):
    """``out``'s structure with each tensor replaced by the :class:`Leaf` of the unit that returned that
    very object (``returned``: id → (unit, object)); None where some part is not a unit's value."""
    if isinstance(out, torch.Tensor):
        hit = returned.get(id(out))
        return Leaf(hit[0]) if hit is not None and hit[1] is out else None
    if type(out) in (tuple, list):
        parts = [pattern_of(o, returned) for o in out]
        return None if any(p is None for p in parts) else (type(out), parts)
    return None


def leaves(pattern) -> list[int]:
    if isinstance(pattern, Leaf):
        return [pattern.index]
    return [i for p in pattern[1] for i in leaves(p)]


def build(pattern, values: dict):
    if isinstance(pattern, Leaf):
        return values[pattern.index]
    return pattern[0](build(p, values) for p in pattern[1])


class ContainerHook(ModelHook):
    """The container's forward, or, where the mask reuses all its units and its pattern for this call's
    arguments is known, its output from their reused values (module doc)."""

    def __init__(self, execution, units: tuple[int, ...]):
        super().__init__()
        self.execution, self.units = execution, units
        # call_key → (pattern, the units called in order, those whose values it holds) or None (never)
        self.patterns: dict = {}

    def new_forward(self, module, *args, **kwargs):
        ex = self.execution
        if (ex.trace is not None or ex.soft is not None or ex.bypass
                or not all(ex.gate(i) is False for i in self.units)):
            return self.fn_ref.original_forward(*args, **kwargs)
        key = call_key(args, kwargs)
        if key not in self.patterns:
            return self.learn(key, args, kwargs)
        known = self.patterns[key]
        if known is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        return self.serve(*known)

    def serve(self, pattern, called: list[int], wanted: frozenset):
        """The container's output from its units' reused values (``pattern``; ``wanted``: its leaves),
        every unit it called (``called``) counted as reused."""
        hooks, values = self.execution.hooks, {}
        for i in called:
            if i in wanted:
                values[i] = hooks[i].reused()  # (counted as reused)
            else:
                hooks[i].tally(False)
        return build(pattern, values)

    def learn(self, key, args, kwargs):
        """Run the container's own forward, noting what each unit returns; keep the pattern where the
        output is made of them."""
        ex = self.execution
        ex.returned = []
        try:
            out = self.fn_ref.original_forward(*args, **kwargs)
        finally:
            mine, ex.returned = ex.returned, None
        called = [i for i, _ in mine]
        pattern = pattern_of(out, {id(v): (i, v) for i, v in mine})
        ok = pattern is not None and len(set(called)) == len(called) and set(called) <= set(self.units)
        self.patterns[key] = (pattern, called, frozenset(leaves(pattern))) if ok else None
        return out
