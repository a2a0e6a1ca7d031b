"""Run sums: a FORA-shaped whole run's reuse steps, summed while the values they read are computed
(issue 26: time saved per MAC saved on the DiT).

Where every branch unit (``attn1``, ``ff``) of every block of a DiT's block chain is reused at a step,
the chain's output is its input plus, over the blocks, each branch's reused value times its gate
(:mod:`blockmask.hooks.shortcuts`). Each reused value is a weighted sum of values the branch computed
at earlier steps (its cache under ``hold``; a forecast's two, :func:`blockmask.core.forecast.terms`).
In a whole run whose calls are announced (:meth:`blockmask.hooks.execution.MaskedExecution.whole_run`)
the mask, every call's timestep and so every gate (:class:`blockmask.hooks.shortcuts.GateTable`) are
known before the first call. So each computed branch value is added, times its weight and the gate of
each reuse step that will read it, into that step's sum as soon as it is computed, while it is still in
cache; the reuse step adds that one tensor to the chain's input (the first block) and the other blocks
pass it on; and no branch value is copied into a cache, since nothing else would read it. A reuse step
reads one tensor where the shortcuts read every cached value (two per branch under a forecast). The
sums live in a few buffers for the whole run: a served sum's buffer takes a later step's sum once its
reuse call is over (:meth:`RunSums.buffer`), not a fresh tensor per reuse step.

The sum is the shortcuts' up to float rounding (other order of additions; tests/test_runsums.py).
Planned on entry (:func:`plan`) only where all of it holds, else the run goes as before:

* a whole run with hard gates and its calls announced, one call per mask row, rows in order;
* the model's class is declared to call its blocks as a chain (:data:`CHAINS`: each block's output is
  the next block's input, nothing in between) and every block of the chain carries a shortcut
  (adaLN-Zero), no torch forward hook, and runs (its own unit is never reused);
* every branch of the chain is reused only at steps where all of them are (FORA's reuse steps), and
  each has run before it is first reused.

The gates come from the blocks' tables, made for the whole run at the first call from the chain's
first block's arguments; a later call whose timestep or labels the tables cannot serve, or a chain not
called as one, raises :class:`blockmask.core.errors.MaskError` (no such call in blockmask's own
sampling loop).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from diffusers.hooks import HookRegistry

from blockmask.core.errors import MaskError
from blockmask.core.outputs import same_layout
from blockmask.hooks.shortcuts import SHORTCUT_HOOK, broadcasts

# model class → the attribute holding its blocks, which its forward calls as a chain
CHAINS: dict[str, str] = {"DiTTransformer2DModel": "transformer_blocks", "Transformer2DModel": "transformer_blocks"}


def weights(computed: list[int], j: int, forecast: bool) -> dict[int, float] | None:
    """{computed row: its weight} in a unit's reused value at row ``j`` (as :mod:`blockmask.core.forecast`
    reads it): the last row before ``j`` (hold, or a forecast with one value), or the last two,
    ``1 + s`` and ``−s`` with ``s = (j − k1) / (k1 − k0)``; None where the unit never ran before ``j``."""
    before = [k for k in computed if k < j]
    if not before:
        return None
    k1 = before[-1]
    if not forecast or len(before) < 2:
        return {k1: 1.0}
    k0 = before[-2]
    s = (j - k1) / (k1 - k0)
    return {k1: 1.0 + s, k0: -s}


def plan(execution, modules: list[torch.nn.Module]) -> "RunSums | None":
    """The run's :class:`RunSums` where every condition of the module docstring holds (``modules``: the
    blocks :func:`blockmask.hooks.shortcuts.install` hooked); else None."""
    m, calls = execution.whole_mask(), execution.run_calls
    attr = CHAINS.get(type(execution.model).__name__)
    if m is None or calls is None or not execution.recycle or execution.static or attr is None:
        return None
    chain = list(getattr(execution.model, attr, None) or ())
    rows = [k for k, _ in calls]
    if not chain or not rows or rows != sorted(set(rows)) or not 0 <= rows[0] <= rows[-1] < m.shape[0]:
        return None
    hooked = {id(mod) for mod in modules}
    if not all(id(b) in hooked and b.norm_type == "ada_norm_zero" and not b._forward_hooks
               and not b._forward_pre_hooks for b in chain):
        return None
    hooks = [HookRegistry.check_if_exists_or_initialize(b).get_hook(SHORTCUT_HOOK) for b in chain]
    own = [next((i for i, mod in enumerate(execution.modules) if mod is b), None) for b in chain]
    branches = [i for h in hooks for i in h.indices]
    if None in own or not m[np.ix_(rows, own)].all():
        return None
    tables = [h.gate_table() for h in hooks]  # (this run's, made at its first call)
    summed = [j for j in rows if not m[j, branches].any()]
    reused = {j for j in rows for i in branches if not m[j, i]}
    if not summed or reused != set(summed) or None in tables:
        return None
    computed = [k for k in rows if k not in reused]  # (every branch's: each is reused at the summed rows only)
    targets: dict[int, list[tuple[int, float]]] = {}  # computed row → [(reuse row, weight), ...]
    for j in summed:
        w = weights(computed, j, execution.forecast)
        if w is None:
            return None  # reused before it ran: the unit hooks raise that
        for k, c in w.items():
            targets.setdefault(k, []).append((j, c))
    return RunSums(execution, hooks, tables, dict(calls), targets)


class RunSums:
    """One run's sums: :meth:`take` at computed steps, :meth:`serve` at reuse steps."""

    def __init__(self, execution, hooks, tables, times: dict[int, float], targets: dict[int, list[tuple[int, float]]]):
        self.execution, self.hooks, self.tables, self.times = execution, hooks, tables, times
        self.targets = targets  # computed row → [(reuse row, weight of this row's values there), ...]
        # branch unit → (its block's position in the chain, which gate: 0 msa, 1 mlp, None for attn2)
        self.branch = {}
        for b, h in enumerate(hooks):
            self.branch[h.attn1], self.branch[h.ff] = (b, 0), (b, 1)
            if h.attn2 is not None:
                self.branch[h.attn2] = (b, None)
        reads = Counter(j for t in targets.values() for j, _ in t)  # reuse row → computed rows it reads
        self.expected = {j: n * len(self.branch) for j, n in reads.items()}  # reuse row → values summed
        self.ready = False  # the tables made (at the first call)
        self.sums: dict[int, torch.Tensor] = {}  # reuse row → its sum so far
        self.spare: list[torch.Tensor] = []  # sums served at earlier calls: buffers for the next ones
        self.served: torch.Tensor | None = None  # the sum the current reuse call returns (free after it)
        self.zeros: torch.Tensor | None = None  # (zero())
        self.added: dict[int, int] = {}  # reuse row → contributions added
        self.last: tuple[int, torch.Tensor] | None = None  # (chain position, output) in a reuse step

    def owns(self, i: int) -> bool:
        return i in self.branch

    def serves(self, j: int) -> bool:
        return j in self.expected

    def prepare(self, hook, module, args, kwargs) -> None:
        """At a computed step's block call (the chain's first block): the chain's gate tables, made at
        the first and checked at every call (the same timestep and labels go to every block)."""
        if hook is not self.hooks[0]:
            return
        x = hook.arg(args, kwargs, "hidden_states")
        timestep, labels = hook.arg(args, kwargs, "timestep"), hook.arg(args, kwargs, "class_labels")
        first, self.ready = not self.ready, True
        blocks = self.execution.model.get_submodule(CHAINS[type(self.execution.model).__name__])
        for table, block in list(zip(self.tables, blocks))[:None if first else 1]:  # (the same arguments)
            if table.serves(block.norm1, timestep, labels, x.dtype) is None:
                raise MaskError("run sums: this call's timestep or labels are not the announced run's "
                                "(the gate tables cannot serve it)")

    def take(self, i: int, out: torch.Tensor) -> bool:
        """Add branch unit ``i``'s value computed now into the sum of every reuse step that reads it;
        False where ``i`` is not summed (its hook stores it as usual)."""
        mine = self.branch.get(i)
        if mine is None:
            return False
        if not self.ready:
            raise MaskError("run sums: a branch ran before its block's gates were made")
        b, which = mine
        self.release()
        for j, c in self.targets.get(self.execution.step, ()):
            g = None if which is None else self.tables[b].at(self.times[j])[which]
            s = self.sums.get(j)
            if g is None:
                self.sums[j] = torch.mul(out, c, out=self.buffer(out)) if s is None else s.add_(out, alpha=c)
            elif s is not None:  # (the weight as addcmul's scalar: no c · g tensor per contribution)
                self.sums[j] = s.addcmul_(g, out, value=c)
            else:  # 0 + c · g · out, into a buffer where the product has out's shape
                into = self.buffer(out) if broadcasts(g.shape, out.shape) else None
                self.sums[j] = torch.addcmul(self.zero(out), g, out, value=c, out=into)
            self.added[j] = self.added.get(j, 0) + 1
        return True

    def zero(self, like: torch.Tensor) -> torch.Tensor:
        """A 0-d zero of ``like``'s dtype and device (one per run)."""
        if self.zeros is None or self.zeros.dtype != like.dtype or self.zeros.device != like.device:
            self.zeros = torch.zeros((), dtype=like.dtype, device=like.device)
        return self.zeros

    def release(self) -> None:
        """The last served sum's buffer to :attr:`spare`: its reuse call is over, nothing reads it."""
        if self.served is not None:
            self.spare.append(self.served)
            self.served = None

    def buffer(self, like: torch.Tensor) -> torch.Tensor:
        """A tensor for a new sum shaped and typed like ``like``: a served sum's, recycled (the run's
        sums then live in a few buffers instead of a fresh allocation per reuse step), else a new one."""
        while self.spare:
            t = self.spare.pop()
            if same_layout(t, like):
                return t
        return torch.empty_like(like, memory_format=torch.contiguous_format)

    def serve(self, hook, x: torch.Tensor) -> torch.Tensor:
        """A reuse step's block call: the chain's first block returns its input plus the step's sum,
        the others pass on what the one before returned; each block's branches count as reused."""
        ex, j = self.execution, self.execution.step
        b = self.hooks.index(hook)
        if b == 0:
            if self.added.get(j) != self.expected[j]:
                raise MaskError(f"run sums: step {j}'s sum has {self.added.get(j, 0)} of its "
                                f"{self.expected[j]} values (were the earlier steps run?)")
            self.release()  # (two reuse calls in a row: the last one is over)
            self.served = self.sums.pop(j).add_(x)
            y = self.served.squeeze(1) if self.served.ndim == 4 else self.served
        elif self.last is None or self.last[0] != b - 1 or x is not self.last[1]:
            raise MaskError("run sums: the blocks were not called as a chain (each block's output the next's input)")
        else:
            y = x
        self.last = (b, y) if b < len(self.hooks) - 1 else None
        for i in hook.indices:
            ex.hooks[i].tally(False)
        return y
