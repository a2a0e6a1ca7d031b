"""Maskable units of a model: names, kinds, blocks, execution order (METHOD.md §1).

Units are found by the model's adapter (module-path patterns) and ordered by *measuring* one
forward pass, so the order is the order the model really runs them in. Families whose units are
whole blocks only (SD3, Flux, Sana, HunyuanDiT, Wan) declare ``measured_order = False``: their
blocks run in definition order, so no forward and no example inputs are needed.

Units may nest (a transformer block holds its attn1/ff units). The order is the order in which
units *finish*, so an enclosing unit comes after the units inside it, and every unit's readers
have larger indices. A unit inside another runs only when the enclosing one runs: mask cells of
an inner unit under a skipped outer unit never execute (:func:`effective_mask` zeroes them).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

import torch

from blockmask.adapters import Adapter, adapter_for
from blockmask.core.errors import BlockmaskError
from blockmask.hooks.registry import wrap_forwards

_BLOCK_SUFFIX = re.compile(r"\.(resnets|attentions|downsamplers|upsamplers)\.\d+$|\.(attn1|attn2|ff)$")
RESIDUAL_KINDS = ("block",)  # kinds whose cached value is their residual out − in (see execution.py)


@dataclasses.dataclass(frozen=True)
class Unit:
    """One maskable unit. index: position in execution order (the mask column)."""

    index: int
    name: str  # module path, e.g. "down_blocks.1.resnets.0", "transformer_blocks.3.ff"
    kind: str  # resnet | attn | downsample | upsample | block | self-attn | cross-attn | ff
    block: str  # the block the unit belongs to, e.g. "down_blocks.1", "transformer_blocks.3"
    parent: int = -1  # index of the unit this one is nested in (-1: none)

    @property
    def residual(self) -> bool:
        """The unit's value is its residual (output − first input), not its output."""
        return self.kind in RESIDUAL_KINDS


def parents_of(units: list[Unit]) -> tuple[int, ...]:
    return tuple(u.parent for u in units)


def effective_mask(mask, parents) -> "np.ndarray":
    """The cells that really execute: an inner unit runs only where its enclosing unit runs
    ((K, N) bool; parents[i] = index of i's enclosing unit or -1). Identity without nesting."""
    import numpy as np

    m = np.array(mask, dtype=bool, copy=True)
    for i, p in enumerate(parents):
        while p >= 0:  # every enclosing unit, innermost first
            m[:, i] &= m[:, p]
            p = parents[p]
    return m


def block_of(name: str) -> str:
    return _BLOCK_SUFFIX.sub("", name)


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
