"""HunyuanDiT (``HunyuanDiT2DModel``): every ``HunyuanDiTBlock`` in ``blocks`` is one unit. The blocks of the
second half also take a long skip (an earlier block's output); a reused block returns its current input plus
its cached residual, whatever the skip."""

from __future__ import annotations

from blockmask.adapters.base import Adapter, register


@register
class HunyuanDiTAdapter(Adapter):
    model_classes = ("HunyuanDiT2DModel",)
    unit_patterns = ((r"blocks\.\d+", "block"),)
    family = "transformer"
    measured_order = False
