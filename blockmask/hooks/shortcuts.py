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

In a whole sampling run (:meth:`blockmask.hooks.execution.MaskedExecution.whole_run` with the run's
calls), an adaLN-Zero block's gates for every step it is shortcut come from a :class:`GateTable` made
at the first of them, so its conditioning weights are read once per run, not once per reused step.

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

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook
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

    def gate_table(self) -> "GateTable | None":
        """This block's :class:`GateTable` for the current run (made at the first ask of each run)."""
        tables = self.execution.gate_tables
        if id(self) not in tables:
            tables[id(self)] = GateTable.for_block(self.execution, self.indices)
        return tables[id(self)]

    def arg(self, args, kwargs, name):
        """The forward argument ``name`` of this call (positional or keyword)."""
        p = self.position[name]
        return args[p] if len(args) > p else kwargs.get(name)

    def new_forward(self, module, *args, **kwargs):
        ex = self.execution
        if ex.soft is None and not ex.bypass and all(ex.gate(j) is False for j in self.indices):
            if ex.sums is not None and ex.sums.serves(ex.step):  # (blockmask.hooks.runsums)
                return ex.sums.serve(self, self.arg(args, kwargs, "hidden_states"))
            cak = self.arg(args, kwargs, "cross_attention_kwargs")
            if not cak or cak.get("gligen") is None:
                return self.short(module, args, kwargs)
        elif ex.sums is not None:
            ex.sums.prepare(self, module, args, kwargs)
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
        x = self.arg(args, kwargs, "hidden_states")
        timestep = self.arg(args, kwargs, "timestep")
        if module.norm_type == "ada_norm_zero":
            norm, labels = module.norm1, self.arg(args, kwargs, "class_labels")
            table = self.gate_table()
            gates = None if table is None else table.gates(norm, timestep, labels, x.dtype)
            if gates is None:
                emb = self.conditioning(norm.emb, timestep, labels, x.dtype)
                emb = norm.linear(norm.silu(emb))
                _, _, gate_msa, _, _, gate_mlp = emb.chunk(6, dim=1)
                gates = gate_msa.unsqueeze(1), gate_mlp.unsqueeze(1)
            gate_msa, gate_mlp = gates
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


class GateTable:
    """One adaLN-Zero block's two gates (``gate_msa``, ``gate_mlp``) at every timestep at which a run
    shortcuts it, made in one go at the first call that asks (CPU): the block's conditioning MLP and
    ``norm1.linear`` read their weights once per run instead of once per reused step (on the bundled
    mnist-dit they cost a reused step more than its sums; docs/PERFORMANCE.md, "Gate tables"). The
    same computation as the block's: the timestep embedding once per distinct timestep (it is the same
    for the whole batch), the label embedding per sample, then only the ``norm1.linear`` rows of the
    two gates (the other four chunks modulate the norms the shortcut skips). Equal to the block's gates
    up to float rounding (other matrix shapes). Serves a call only when its timestep is one the run
    announced (``MaskedExecution.run_calls``: set by ``whole_run``, or from a pipeline's scheduler by
    :mod:`blockmask.hooks.stepping`), the same for every sample, on the CPU, with the labels, batch
    and dtype the table was made with; anything else computes as before."""

    def __init__(self, timesteps: tuple[float, ...], announced: tuple[float, ...] | None = None):
        self.timesteps = timesteps  # the timestep values tabulated: the calls that shortcut the block
        self.known = frozenset(timesteps if announced is None else announced)  # every call of the run
        self.made: tuple | None = None  # (labels, dtype, {timestep: (gate_msa, gate_mlp)}) once made

    @classmethod
    def for_block(cls, execution, indices: tuple[int, ...]) -> "GateTable | None":
        """The table of a block whose branch units are ``indices``, for ``execution``'s announced run:
        the distinct timesteps of the calls at which the mask shortcuts the block (it runs, every
        branch reused), so two masks that shortcut it at the same steps give the same gates bit for
        bit (rectification changes no image); None with no run announced or where no call shortcuts
        the block."""
        calls, mask = getattr(execution, "run_calls", None), execution.mask
        if calls is None or mask is None:
            return None
        short = execution.reads(mask)[:, list(indices)].all(axis=1)
        wanted = {t for k, t in calls if 0 <= k < mask.shape[0] and short[k]}
        return cls(tuple(sorted(wanted)), tuple(sorted({t for _, t in calls}))) if wanted else None

    def serves(self, norm: torch.nn.Module, timestep, labels, dtype) -> float | None:
        """This call's timestep where it is one of the announced run's, the same for every sample,
        with the labels, batch and dtype of the table (made at the first call asked); else None."""
        emb = getattr(norm, "emb", None)
        if (not isinstance(timestep, torch.Tensor) or timestep.ndim != 1 or timestep.device.type != "cpu"
                or not isinstance(labels, torch.Tensor) or labels.shape != timestep.shape
                or type(emb) is not CombinedTimestepLabelEmbeddings or emb.training):
            return None
        t = float(timestep[0])
        if t not in self.known or not (timestep.stride(0) == 0 or bool((timestep == timestep[0]).all())):
            return None
        if self.made is None:
            g = self._make(norm, timestep.dtype, labels, dtype)
            self.made = (labels.clone(), dtype, {t: gj.unbind(0) for t, gj in zip(self.timesteps, g.unbind(0))})
        made_labels, made_dtype, _ = self.made
        if dtype != made_dtype or not (labels.shape == made_labels.shape and torch.equal(labels, made_labels)):
            return None
        return t

    def gates(self, norm: torch.nn.Module, timestep, labels, dtype) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(gate_msa, gate_mlp), each (B, 1, C), for this call; None where the table cannot serve it
        (:meth:`serves`) or has no row for its timestep."""
        t = self.serves(norm, timestep, labels, dtype)
        return None if t is None else self.made[2].get(t)

    def at(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate_msa, gate_mlp) at the run's timestep ``t``, once the table is made (:meth:`gates`)."""
        return self.made[2][t]

    def _make(self, norm, ts_dtype, labels, dtype) -> torch.Tensor:
        """(J, 2, B, 1, C): the two gates at each tabulated timestep; computed once per distinct label
        (a CFG batch repeats its labels) and gathered to the batch."""
        emb, lin = norm.emb, norm.linear
        ts = torch.tensor(self.timesteps, dtype=ts_dtype, device=labels.device)
        temb = emb.timestep_embedder(emb.time_proj(ts).to(dtype=dtype))  # (J, C): one row per timestep
        distinct, inverse = torch.unique(labels, return_inverse=True)
        cond = (temb[:, None] + emb.class_embedder(distinct)[None]).flatten(0, 1)  # (J·L, C), as emb() per call
        c = lin.out_features // 6
        two = (slice(2 * c, 3 * c), slice(5 * c, 6 * c))  # the rows of gate_msa and gate_mlp
        bias = None if lin.bias is None else torch.cat([lin.bias[r] for r in two])
        g = torch.nn.functional.linear(norm.silu(cond), torch.cat([lin.weight[r] for r in two]), bias)  # (J·L, 2C)
        g = g.unflatten(0, (len(self.timesteps), len(distinct))).index_select(1, inverse)  # (J, B, 2C)
        return g.unflatten(-1, (2, c)).transpose(1, 2).unsqueeze(3).contiguous()  # (J, 2, B, 1, C)


def accumulate(y: torch.Tensor, gate: torch.Tensor | None, c: float, value: torch.Tensor, *,
               fresh: bool) -> torch.Tensor:
    """``y + gate·c·value`` (``y + c·value`` without a gate) as one fused pass: into a new contiguous
    tensor when ``fresh`` (y is the block's input, which stays untouched), else into ``y`` itself
    (a tensor this shortcut made) where the shapes allow. Equal to the block's ``gate * value + y`` up
    to float rounding (a fused multiply-add rounds once)."""
    if gate is None:  # (a cross-attention branch: after the first, so never fresh)
        return y.add_(value, alpha=c) if value.shape == y.shape else torch.add(y, value, alpha=c)
    fits = value.shape == y.shape and broadcasts(gate.shape, y.shape)  # the sum has y's shape
    if not fits or (fresh and torch.is_grad_enabled()):  # (autograd takes no out= tensor)
        return torch.addcmul(y, gate, value, value=c)  # (c as addcmul's scalar: no c · gate tensor)
    if fresh:
        out = torch.empty(y.shape, dtype=torch.result_type(y, value), device=value.device)
        return torch.addcmul(y, gate, value, value=c, out=out)
    return y.addcmul_(gate, value, value=c)


def broadcasts(small: torch.Size, big: torch.Size) -> bool:
    """``small`` broadcasts to ``big`` without growing it (torch.broadcast_shapes costs tens of µs)."""
    return len(small) <= len(big) and all(a in (1, b) for a, b in zip(reversed(small), reversed(big)))


def install(execution) -> list[torch.nn.Module]:
    """Register a :class:`ShortcutHook` on every block of ``execution``'s units that
    :func:`shortcut_blocks` covers (before the unit hooks, so it is the innermost); the modules hooked.
    In a whole run (``execution.whole_mask()``), only the blocks the mask shortcuts at some step (the
    block runs and every branch is reused): elsewhere the hook would only pass every call on."""
    pairs = shortcut_blocks(execution.model, execution.units)
    m = execution.whole_mask()
    if m is not None:
        reads = execution.reads(m)
        pairs = [(b, br) for b, br in pairs if reads[:, list(br.values())].all(axis=1).any()]
    mods = [m for m, _ in pairs]
    shared = SharedProjection()
    signatures = {cls: inspect.signature(cls.forward) for cls in {type(m) for m in mods}}  # (one per class)
    register_hooks(mods, [ShortcutHook(execution, b, signatures[type(m)], shared) for m, b in pairs], SHORTCUT_HOOK)
    return mods


def shortcut_rows(execution, modules: list[torch.nn.Module]) -> dict[int, np.ndarray]:
    """{branch unit: the mask rows at which its block is shortcut (it runs, every branch reused)} for
    the blocks hooked (``modules``, as :func:`install` returned them) in a whole run; else empty."""
    m = execution.whole_mask()
    if m is None:
        return {}
    reads = execution.reads(m)
    out = {}
    for mod in modules:
        indices = list(HookRegistry.check_if_exists_or_initialize(mod).get_hook(SHORTCUT_HOOK).indices)
        rows = reads[:, indices].all(axis=1)
        out.update({j: rows for j in indices})
    return out


def uninstall(modules: list[torch.nn.Module]) -> None:
    remove_hooks(modules, SHORTCUT_HOOK)
