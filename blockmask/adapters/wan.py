"""Wan 2.x (``WanTransformer3DModel``, video): every ``WanTransformerBlock`` in ``blocks`` is one unit.
Wan 2.2 pipelines have a second denoiser ``transformer_2`` for the low-noise steps:
:func:`blockmask.enable` masks both, each with its own caches."""

from __future__ import annotations

from blockmask.adapters.base import Adapter, register


@register
class WanAdapter(Adapter):
    model_classes = ("WanTransformer3DModel",)
    unit_patterns = ((r"blocks\.\d+", "block"),)
    family = "transformer"
    measured_order = False
