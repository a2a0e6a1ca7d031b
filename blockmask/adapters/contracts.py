"""Block input/output contracts as data (diffusers' ``TransformerBlockRegistry``, cache-dit's ``ForwardPattern``).

A whole transformer block is a *residual* unit: reused, it returns its current input plus the residual
``out − in`` cached when it last ran (:mod:`blockmask.hooks.execution`). Many blocks carry two token streams:
Flux, SD3, HunyuanVideo, CogVideoX blocks take ``hidden_states`` and ``encoder_hidden_states`` and return
a tuple, e.g. ``(encoder_hidden_states, hidden_states)``. A :class:`BlockContract` records, per block class,
which argument and which output slot is which stream, so the residual is taken per stream::

    cache = (hidden_out − hidden_in, encoder_out − encoder_in)      # when the block runs
    out   = (encoder_in + cache[1], hidden_in + cache[0])          # when it is reused (Flux order)

A block class without a contract is the common case: one tensor in (``hidden_states``, first argument),
one tensor out. Adapters declare their contracts in ``Adapter.blocks`` (see :func:`register_contract`).
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch


@dataclasses.dataclass(frozen=True)
class BlockContract:
    """How one block class takes and returns its token streams.

    hidden_arg / encoder_arg: argument names of the hidden and the encoder (text) stream inputs
        (``encoder_arg=None``: the block has no encoder stream it returns).
    hidden_out / encoder_out: index of each stream in a tuple output; ``hidden_out=None``: the
        output is the hidden stream itself (one tensor).
    """

    hidden_arg: str = "hidden_states"
    encoder_arg: str | None = None
    hidden_out: int | None = None
    encoder_out: int | None = None

    @property
    def tuple_output(self) -> bool:
        return self.hidden_out is not None


PLAIN = BlockContract()
TUPLE_ENCODER_HIDDEN = BlockContract(encoder_arg="encoder_hidden_states", hidden_out=1, encoder_out=0)

_CONTRACTS: dict[str, BlockContract] = {}


def register_contract(class_name: str, contract: BlockContract) -> None:
    """Record ``contract`` for every block class named ``class_name`` (same contract twice is fine)."""
    if not isinstance(contract, BlockContract):
        raise TypeError(f"contract for {class_name} must be a BlockContract, got {type(contract).__name__}")
    if _CONTRACTS.get(class_name, contract) != contract:
        raise ValueError(f"block class {class_name} already has another contract")
    _CONTRACTS[class_name] = contract


def contract_of(module: torch.nn.Module) -> BlockContract:
    """The contract of ``module``'s class (or a base class); :data:`PLAIN` when none is declared."""
    for klass in type(module).__mro__:
        if klass.__name__ in _CONTRACTS:
            return _CONTRACTS[klass.__name__]
    return PLAIN


@dataclasses.dataclass
class BoundContract:
    """A contract bound to one module: reads stream inputs from a call, takes and applies residuals."""

    contract: BlockContract
    params: tuple[str, ...]  # the forward's parameter names, without self

    @classmethod
    def of(cls, module: torch.nn.Module) -> "BoundContract":
        params = tuple(inspect.signature(type(module).forward).parameters)[1:]
        return cls(contract_of(module), params)

    def _arg(self, name: str, args: tuple, kwargs: dict) -> Any:
        if name in kwargs:
            return kwargs[name]
        i = self.params.index(name) if name in self.params else -1
        return args[i] if 0 <= i < len(args) else None

    def inputs(self, args: tuple, kwargs: dict) -> tuple[Any, Any]:
        """(hidden input, encoder input or None) of one call."""
        c = self.contract
        hidden = kwargs[c.hidden_arg] if c.hidden_arg in kwargs else args[0]
        encoder = self._arg(c.encoder_arg, args, kwargs) if c.encoder_arg else None
        return hidden, encoder

    def residual(self, out: Any, inputs: tuple[Any, Any], into: Any = None) -> Any:
        """What to cache: ``out − in`` per stream (the tuple's other slots as they are). ``into``: a
        tensor of the same shape and dtype to write a single-tensor residual into (returned), so a
        recycled cache buffer is filled in one pass; anything else is ignored."""
        c, (hidden, encoder) = self.contract, inputs
        if not c.tuple_output:
            if (isinstance(into, torch.Tensor) and into.shape == out.shape == hidden.shape
                    and into.dtype == out.dtype == hidden.dtype and into.device == out.device):
                return torch.sub(out, hidden, out=into)
            return out - hidden
        parts = list(out)
        parts[c.hidden_out] = parts[c.hidden_out] - hidden
        if c.encoder_out is not None and parts[c.encoder_out] is not None and encoder is not None:
            parts[c.encoder_out] = parts[c.encoder_out] - encoder
        return tuple(parts)

    def reuse(self, cache: Any, inputs: tuple[Any, Any]) -> Any:
        """The block's output when reused: the current inputs plus the cached residuals."""
        c, (hidden, encoder) = self.contract, inputs
        if not c.tuple_output:
            return hidden + cache
        parts = list(cache)
        parts[c.hidden_out] = hidden + parts[c.hidden_out]
        if c.encoder_out is not None and parts[c.encoder_out] is not None and encoder is not None:
            parts[c.encoder_out] = encoder + parts[c.encoder_out]
        return tuple(parts)
