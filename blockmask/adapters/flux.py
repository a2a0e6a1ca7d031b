"""Flux (``FluxTransformer2DModel``): two block lists, the double-stream ``transformer_blocks`` then the
single-stream ``single_transformer_blocks``; each block is one unit.

Both block classes take ``hidden_states`` and ``encoder_hidden_states`` and return
``(encoder_hidden_states, hidden_states)`` (diffusers' ``TransformerBlockRegistry`` says the same).
"""

from __future__ import annotations

from blockmask.adapters.base import Adapter, register
from blockmask.adapters.contracts import TUPLE_ENCODER_HIDDEN


@register
class FluxAdapter(Adapter):
    model_classes = ("FluxTransformer2DModel",)
    unit_patterns = ((r"transformer_blocks\.\d+", "block"), (r"single_transformer_blocks\.\d+", "block"))
    family = "transformer"
    blocks = {"FluxTransformerBlock": TUPLE_ENCODER_HIDDEN, "FluxSingleTransformerBlock": TUPLE_ENCODER_HIDDEN}
    measured_order = False
