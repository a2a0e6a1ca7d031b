"""Feeders: a norm whose output only a branch unit reads (issue 26: masked execution cheap enough).

Inside diffusers' ``BasicTransformerBlock`` the self-attention ``attn1`` reads nothing but
``norm1``'s output and the MLP ``ff`` nothing but ``norm3``'s (DiT's adaLN-Zero) or ``norm2``'s
(PixArt's adaLN-single). A reused branch returns its cache and ignores its input, so when the mask
reuses the branch at the current step, its feeder returns a ``(B, 1, …, 1)`` view of its own input
instead of normalising B × T × D values; the block's modulation of that stand-in is then
``(B, 1, D)``, and the branch's hook drops it. The block's output does not change, bit for bit
(tests/test_feeders.py). On the bundled mnist-dit (batch 16, one CPU thread) a call where every
``attn1`` and ``ff`` is reused (FORA) went from 14.3 ms to 9.9 ms; the plain call is about 96 ms
(``benchmarks/feeder_step.py``, docs/PERFORMANCE.md).

Declared per block class and norm type as data (:data:`FEEDERS`), like the block contracts of
:mod:`blockmask.adapters.contracts`. A block with a position embedding on the normed stream has none,
and a chunked MLP keeps its norm. Installed by :class:`blockmask.hooks.execution.MaskedExecution` in eager mode,
under the hook name :data:`FEEDER_HOOK` on each feeder's diffusers ``HookRegistry``.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.hooks import ModelHook

from blockmask.hooks.registry import register_hooks, remove_hooks

FEEDER_HOOK = "blockmask_feeder"

# (block class, its norm_type) → {branch unit's last name part: the feeder's path inside the block}
FEEDERS: dict[tuple[str, str], dict[str, str]] = {
    ("BasicTransformerBlock", "ada_norm_zero"): {"attn1": "norm1.norm", "ff": "norm3"},
    ("BasicTransformerBlock", "ada_norm_single"): {"attn1": "norm1", "ff": "norm2"},
}


def feeders_of(model: torch.nn.Module, units) -> list[tuple[int, torch.nn.Module]]:
    """(index of the branch unit, its feeder module) for every unit :data:`FEEDERS` covers."""
    out = []
    for u in units:
        block_name, _, part = u.name.rpartition(".")
        if not block_name:
            continue
        block = model.get_submodule(block_name)
        table = FEEDERS.get((type(block).__name__, str(getattr(block, "norm_type", ""))), {})
        if part not in table or getattr(block, "pos_embed", None) is not None:
            continue
        if part == "ff" and getattr(block, "_chunk_size", None) is not None:  # chunks need the real input
            continue
        try:
            feeder = block.get_submodule(table[part])
        except AttributeError:
            continue
        if isinstance(feeder, torch.nn.LayerNorm):
            out.append((u.index, feeder))
    return out


class FeederHook(ModelHook):
    """The feeder's forward: a ``(B, 1, …, 1)`` view of its input when its branch unit is reused at
    this step under a hard gate, else the norm itself."""

    def __init__(self, execution, consumer: int):
        super().__init__()
        self.execution, self.consumer = execution, consumer

    def new_forward(self, module, *args, **kwargs):
        if self.execution.gate(self.consumer) is False:
            h = args[0] if args else kwargs["input"]
            return h[(slice(None),) + (slice(0, 1),) * (h.ndim - 1)]
        return self.fn_ref.original_forward(*args, **kwargs)


def install(execution, shortcut: dict | None = None) -> list[torch.nn.Module]:
    """Register a :class:`FeederHook` on every feeder of ``execution``'s units; the modules hooked. In a
    whole run with hard gates (``execution.whole_mask()``), only the feeders whose branch is called and
    reused at some step where its block is not shortcut (``shortcut``: {branch unit: rows where its
    block is, :func:`blockmask.hooks.shortcuts.shortcut_rows`}): there is nothing else for them to do
    (FORA; block caching, whose branches are reused only inside a reused block)."""
    pairs = feeders_of(execution.model, execution.units)
    m = execution.whole_mask()
    if m is not None:
        none, reads = np.zeros(m.shape[0], bool), execution.reads(m)
        pairs = [(i, f) for i, f in pairs if (reads[:, i] & ~(shortcut or {}).get(i, none)).any()]
    mods = [m for _, m in pairs]
    register_hooks(mods, [FeederHook(execution, i) for i, _ in pairs], FEEDER_HOOK)
    return mods


def uninstall(modules: list[torch.nn.Module]) -> None:
    remove_hooks(modules, FEEDER_HOOK)
