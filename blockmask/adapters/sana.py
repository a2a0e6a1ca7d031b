"""Sana (``SanaTransformer2DModel``): every ``SanaTransformerBlock`` (linear self-attention, cross-attention,
Mix-FFN) is one unit; one tensor in, one tensor out."""

from __future__ import annotations

from blockmask.adapters.base import Adapter, register


@register
class SanaAdapter(Adapter):
    model_classes = ("SanaTransformer2DModel",)
    unit_patterns = ((r"transformer_blocks\.\d+", "block"),)
    family = "transformer"
    measured_order = False
