"""Shortcuts: a transformer block whose branches are all reused runs in one go (issue 26: masked
execution cheap enough).

When the mask runs a ``BasicTransformerBlock`` at a step but reuses every branch unit inside it
(``attn1``, ``ff`` and, where there is one, ``attn2``: FORA's reuse steps), the block's output is its
input plus each branch's reused value times its gate. Run through the block's own forward, that step
still pays for the block's Python, its norms (or their stand-ins, :mod:`blockmask.hooks.feeders`), the
modulation of the normed stream and one hook dispatch per branch. The shortcut computes only what the
output reads, in the block's own order:

* adaLN-Zero (DiT): the block's ``norm1`` embedding and linear (the gates), then
  ``x + gate_msa · attn1``, ``+ attn2``, ``+ gate_mlp · ff``;
* adaLN-single (PixArt): the gates from ``scale_shift_table + timestep``, then the same sums.

The sums are fused (:func:`accumulate`): one ``addcmul`` into a new contiguous tensor, then in place,
one pass over memory per reused value where the block's ``gate * value + x`` makes two and a tensor
each. A fused multiply-add rounds once, so the output equals the block's up to float rounding
(tests/test_shortcuts.py: ``rtol = atol = 1e-5`` on the images of whole runs). Each reused value comes
from the branch's :class:`blockmask.hooks.execution.UnitHook` as weighted cached values
(:meth:`~blockmask.hooks.execution.UnitHook.reused_terms`: the cache, or a forecast's two values, so a
forecast costs one more fused pass instead of a ``lerp`` into a new tensor), counted as reused.
Anything else falls through to the block's forward: soft gates and the frozen reference (training), a
step where any branch runs, GLIGEN inputs, a block or branch carrying somebody else's diffusers hook.
Declared per block class and norm type as data (:data:`SHORTCUTS`), installed by
:class:`blockmask.hooks.execution.MaskedExecution` in eager mode under :data:`SHORTCUT_HOOK`, innermost
on the block's diffusers ``HookRegistry`` (the block's own unit hook still stores its residual).
"""

from __future__ import annotations

import inspect

import torch
from diffusers.hooks import ModelHook
from diffusers.models.embeddings import CombinedTimestepLabelEmbeddings, Timesteps

from blockmask.hooks.feeders import FEEDER_HOOK
from blockmask.hooks.registry import HOOK_NAME, register_hooks, remove_hooks

SHORTCUT_HOOK = "blockmask_shortcut"

# (block class, its norm_type) → the branch units the shortcut needs reused (attn2 where the block has one)
SHORTCUTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("BasicTransformerBlock", "ada_norm_zero"): ("attn1", "attn2", "ff"),
    ("BasicTransformerBlock", "ada_norm_single"): ("attn1", "attn2", "ff"),
}
_OURS = (HOOK_NAME, SHORTCUT_HOOK, FEEDER_HOOK)


def _only_ours(module: torch.nn.Module) -> bool:
    registry = getattr(module, "_diffusers_hook", None)
    return registry is None or all(name in _OURS for name in registry.hooks)


def shortcut_blocks(model: torch.nn.Module, units) -> list[tuple[torch.nn.Module, dict[str, int]]]:
    """(block module, {branch name: unit index}) for every block unit :data:`SHORTCUTS` covers whose
    branch units are exactly the ones declared (attn2 only where the block has one)."""
    out = []
    for i, u in enumerate(units):
        if not u.residual:
            continue
        block = model.get_submodule(u.name)
        wanted = SHORTCUTS.get((type(block).__name__, str(getattr(block, "norm_type", ""))))
        if wanted is None:
            continue
        if block.norm_type == "ada_norm_zero" and getattr(block.norm1, "emb", None) is None:
            continue  # the embedding comes from outside: the block's own forward
        wanted = {w for w in wanted if getattr(block, w, None) is not None}
        branches = {v.name.rpartition(".")[2]: v.index for v in units if v.parent == i}
        if set(branches) != wanted or len(branches) != sum(v.parent == i for v in units):
            continue
        if not _only_ours(block) or not all(_only_ours(block.get_submodule(b)) for b in branches):
            continue
        out.append((block, branches))
    return out


class SharedProjection:
    """A ``Timesteps`` projection of the last timestep tensor, per projection setting: every DiT block
    projects the same timestep with the same parameter-free sinusoid, so the blocks a call shortcuts
    compute it once. The tensor is held, so its identity (and in-place version) keys the value."""

    def __init__(self):
        self.key: tuple | None = None
        self.timestep: torch.Tensor | None = None
        self.value: torch.Tensor | None = None

    def __call__(self, proj: Timesteps, timestep: torch.Tensor) -> torch.Tensor:
        key = (timestep._version, proj.num_channels, proj.flip_sin_to_cos, proj.downscale_freq_shift, proj.scale)
        if timestep is not self.timestep or key != self.key:
            self.value = proj(timestep)
            self.timestep, self.key = timestep, key
        return self.value


class ShortcutHook(ModelHook):
    """The block's forward: the short sum when every branch is reused under hard gates, else the
    block's own."""

    def __init__(self, execution, branches: dict[str, int], signature: inspect.Signature,
                 shared: SharedProjection):
        super().__init__()
        self.execution, self.shared = execution, shared
        self.attn1, self.ff = branches["attn1"], branches["ff"]
        self.attn2 = branches.get("attn2")
        self.indices = tuple(branches.values())
        # each forward argument's position, after self
        self.position = {name: i for i, name in enumerate(tuple(signature.parameters)[1:])}

    def _arg(self, args, kwargs, name):
        p = self.position[name]
        return args[p] if len(args) > p else kwargs.get(name)

    def new_forward(self, module, *args, **kwargs):
        ex = self.execution
        if ex.soft is None and not ex.bypass and all(ex.gate(j) is False for j in self.indices):
            cak = self._arg(args, kwargs, "cross_attention_kwargs")
            if not cak or cak.get("gligen") is None:
                return self.short(module, args, kwargs)
        return self.fn_ref.original_forward(*args, **kwargs)

    def conditioning(self, emb: torch.nn.Module, timestep, class_labels, dtype) -> torch.Tensor:
        """``emb(timestep, class_labels, hidden_dtype=dtype)``; for diffusers'
        ``CombinedTimestepLabelEmbeddings`` its own three steps, with the sinusoidal projection of
        ``timestep`` shared by every block of the call (:class:`SharedProjection`)."""
        if type(emb) is not CombinedTimestepLabelEmbeddings or type(emb.time_proj) is not Timesteps:
            return emb(timestep, class_labels, hidden_dtype=dtype)
        proj = self.shared(emb.time_proj, timestep)
        return emb.timestep_embedder(proj.to(dtype=dtype)) + emb.class_embedder(class_labels)

    def short(self, module, args, kwargs) -> torch.Tensor:
        x = self._arg(args, kwargs, "hidden_states")
        timestep = self._arg(args, kwargs, "timestep")
        if module.norm_type == "ada_norm_zero":
            norm = module.norm1
            emb = self.conditioning(norm.emb, timestep, self._arg(args, kwargs, "class_labels"), x.dtype)
            emb = norm.linear(norm.silu(emb))
            _, _, gate_msa, _, _, gate_mlp = emb.chunk(6, dim=1)
            gate_msa, gate_mlp = gate_msa.unsqueeze(1), gate_mlp.unsqueeze(1)
        else:  # ada_norm_single
            table = module.scale_shift_table[None] + timestep.reshape(x.shape[0], 6, -1)
            _, _, gate_msa, _, _, gate_mlp = table.chunk(6, dim=1)
        hooks = self.execution.hooks
        y = None
        for gate, index in ((gate_msa, self.attn1), (None, self.attn2), (gate_mlp, self.ff)):
            if index is None:
                continue
            for c, value in hooks[index].reused_terms():
                y = accumulate(x if y is None else y, gate, c, value, fresh=y is None)
            if y.ndim == 4:
                y = y.squeeze(1)
        return y


def accumulate(y: torch.Tensor, gate: torch.Tensor | None, c: float, value: torch.Tensor, *,
               fresh: bool) -> torch.Tensor:
    """``y + gate·c·value`` (``y + c·value`` without a gate) as one fused pass: into a new contiguous
    tensor when ``fresh`` (y is the block's input, which stays untouched), else into ``y`` itself
    (a tensor this shortcut made) where the shapes allow. Equal to the block's ``gate * value + y`` up
    to float rounding (a fused multiply-add rounds once)."""
    if gate is None:  # (a cross-attention branch: after the first, so never fresh)
        return y.add_(value, alpha=c) if value.shape == y.shape else torch.add(y, value, alpha=c)
    if c != 1.0:
        gate = gate * c
    fits = value.shape == y.shape and _broadcasts(gate.shape, y.shape)  # the sum has y's shape
    if not fits or (fresh and torch.is_grad_enabled()):  # (autograd takes no out= tensor)
        return torch.addcmul(y, gate, value)
    if fresh:
        out = torch.empty(y.shape, dtype=torch.result_type(y, value), device=value.device)
        return torch.addcmul(y, gate, value, out=out)
    return y.addcmul_(gate, value)


def _broadcasts(small: torch.Size, big: torch.Size) -> bool:
    """``small`` broadcasts to ``big`` without growing it (torch.broadcast_shapes costs tens of µs)."""
    return len(small) <= len(big) and all(a in (1, b) for a, b in zip(reversed(small), reversed(big)))


def install(execution) -> list[torch.nn.Module]:
    """Register a :class:`ShortcutHook` on every block of ``execution``'s units that
    :func:`shortcut_blocks` covers (before the unit hooks, so it is the innermost); the modules hooked."""
    pairs = shortcut_blocks(execution.model, execution.units)
    mods = [m for m, _ in pairs]
    shared = SharedProjection()
    register_hooks(mods, [ShortcutHook(execution, b, inspect.signature(type(m).forward), shared) for m, b in pairs],
                   SHORTCUT_HOOK)
    return mods


def uninstall(modules: list[torch.nn.Module]) -> None:
    remove_hooks(modules, SHORTCUT_HOOK)
