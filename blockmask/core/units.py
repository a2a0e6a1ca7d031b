"""Maskable units of a model as data: names, kinds, blocks, nesting (METHOD.md §1). Finding them on a
live model and measuring their execution order is :mod:`blockmask.hooks.discover`.

Units may nest (a transformer block holds its attn1/ff units). The order is the order in which
units *finish*, so an enclosing unit comes after the units inside it, and every unit's readers
have larger indices. A unit inside another runs only when the enclosing one runs: mask cells of
an inner unit under a skipped outer unit never execute (:func:`effective_mask` zeroes them).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

_BLOCK_SUFFIX = re.compile(r"\.(resnets|attentions|downsamplers|upsamplers)\.\d+$|\.(attn1|attn2|ff)$")
RESIDUAL_KINDS = ("block",)  # kinds whose cached value is their residual out − in (see blockmask.hooks.execution)


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
    m = np.array(mask, dtype=bool, copy=True)
    for i, p in enumerate(parents):
        while p >= 0:  # every enclosing unit, innermost first
            m[:, i] &= m[:, p]
            p = parents[p]
    return m


def called_mask(mask, parents) -> "np.ndarray":
    """The cells where a unit is called at all ((K, N) bool): every enclosing unit executes (an
    outermost unit always is). A called cell the mask reuses returns the unit's cache; an uncalled
    one does nothing, whatever the mask says."""
    executed = effective_mask(mask, parents)
    called = np.ones_like(executed)
    for i, p in enumerate(parents):
        if p >= 0:
            called[:, i] = executed[:, p]
    return called


def block_of(name: str) -> str:
    return _BLOCK_SUFFIX.sub("", name)
