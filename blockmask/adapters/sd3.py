"""SD3 / SD3.5 (``SD3Transformer2DModel``, MMDiT): every ``JointTransformerBlock`` is one unit.

A joint block takes the image tokens ``hidden_states`` and the text tokens ``encoder_hidden_states`` and
returns ``(encoder_hidden_states, hidden_states)``; the last block (``context_pre_only``) returns ``None``
for the text stream. Reused, a block returns each stream plus that stream's cached residual.
"""

from __future__ import annotations

from blockmask.adapters.base import Adapter, register
from blockmask.adapters.contracts import TUPLE_ENCODER_HIDDEN


@register
class SD3Adapter(Adapter):
    model_classes = ("SD3Transformer2DModel",)
    unit_patterns = ((r"transformer_blocks\.\d+", "block"),)
    family = "transformer"
    blocks = {"JointTransformerBlock": TUPLE_ENCODER_HIDDEN}
    measured_order = False
