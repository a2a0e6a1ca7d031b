"""Maskable units of a model: names, kinds, blocks, execution order (METHOD.md §1).

Units are found by the model's adapter (module-path patterns) and ordered by *measuring* one
forward pass, so the order is the order the model really runs them in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from typing import Callable, Iterator

import torch

from .adapters import Adapter, adapter_for

_BLOCK_SUFFIX = re.compile(r"\.(resnets|attentions)\.\d+$|\.(attn1|attn2|ff)$")


@dataclasses.dataclass(frozen=True)
class Unit:
    """One maskable unit. index: position in execution order (the mask column)."""

    index: int
    name: str  # module path, e.g. "down_blocks.1.resnets.0", "transformer_blocks.3.ff"
    kind: str  # resnet | attn | self-attn | cross-attn | ff
    block: str  # the block the unit belongs to, e.g. "down_blocks.1", "transformer_blocks.3"


def block_of(name: str) -> str:
    return _BLOCK_SUFFIX.sub("", name)


@contextlib.contextmanager
def wrap_forwards(modules: list[torch.nn.Module], make: Callable[[int, Callable], Callable]) -> Iterator[None]:
    """Temporarily replace each module *instance's* ``forward`` with ``make(i, original)``.

    Only the instances are touched (never the class), and the originals are restored on exit,
    even after an exception.
    """
    saved = []
    try:
        for i, mod in enumerate(modules):
            if "forward" in mod.__dict__:
                raise RuntimeError(f"module {i} already has an instance-level forward (nested blockmask hooks?)")
            orig = mod.forward
            mod.forward = make(i, orig)
            saved.append(mod)
        yield
    finally:
        for mod in saved:
            del mod.forward


def example_call(model, adapter: Adapter | None = None, batch: int = 1, seed: int = 0) -> Callable[[], torch.Tensor]:
    """A zero-argument function running one forward on seeded example inputs (for measuring)."""
    adapter = adapter or adapter_for(model)
    p = next(model.parameters())
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *adapter.latent_shape(model)), generator=g).to(p.device, p.dtype)
    t = torch.tensor(500, device=p.device)
    cond = adapter.conditioning(model, batch, generator=g).to(p.device, p.dtype)
    return lambda: adapter.forward(model, x, t, cond)


def discover_units(model: torch.nn.Module) -> list[Unit]:
    """The model's units in execution order. Raises UnsupportedModelError for unknown classes."""
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
            order.append(i)
            return orig(*a, **k)

        return fwd

    with torch.no_grad(), wrap_forwards([m for _, _, m in cands], make):
        example_call(model, adapter)()
    seen = list(dict.fromkeys(order))
    if len(order) != len(seen):
        raise RuntimeError(f"a unit of {type(model).__name__} ran twice in one forward; cannot mask it per step")
    missing = [cands[i][0] for i in range(len(cands)) if i not in seen]
    if missing:
        raise RuntimeError(f"units never ran in a forward pass: {', '.join(missing[:5])}")
    units = [Unit(j, cands[i][0], cands[i][1], block_of(cands[i][0])) for j, i in enumerate(seen)]
    model._blockmask_units = units  # cached: order is a property of the architecture
    return units


def unit_modules(model: torch.nn.Module, units: list[Unit]) -> list[torch.nn.Module]:
    return [model.get_submodule(u.name) for u in units]
