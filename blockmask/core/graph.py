"""Direct consumers of each unit, as data (METHOD.md §4); measured on the real model by
:func:`blockmask.hooks.discover.consumer_graph`.

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
