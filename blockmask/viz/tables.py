"""Result tables of both apps as pandas DataFrames (``st.dataframe`` / ``gr.Dataframe``), built here
once: the presets of the current model and K against the current mask, and one comparison's
original-vs-masked readout. Cells are formatted strings (as people read them), like
:func:`blockmask.report.display_frame`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..costs import format_macs
from ..errors import BlockmaskError
from .compare import Comparison
from .context import ModelContext
from .presets import BASELINE_PRESETS, build, presets

PRESET_COLUMNS = ["mask", "MACs % of original", "ideal speedup (MACs)", "computed cells"]
COMPARISON_COLUMNS = ["run", "MACs per image", "MACs % of original", "median wall time (s)", "speedup",
                      "PSNR vs original (dB)"]


def _row(ctx: ModelContext, name: str, mask: np.ndarray) -> dict:
    ratio = ctx.macs.ratio(mask)
    return {"mask": name, "MACs % of original": f"{100 * ratio:.1f} %", "ideal speedup (MACs)": f"{1 / ratio:.2f}x",
            "computed cells": f"{int(mask.sum())} / {mask.size}"}


def _preset_rows(ctx: ModelContext, steps: int) -> list[dict]:
    key = (ctx.key, steps)
    if key in _ROWS:
        return _ROWS[key]
    rows, cheap = [], {b.key for b in BASELINE_PRESETS}
    for p in presets(ctx, steps):
        if not (p.key.startswith("learned:") or p.key in cheap):
            continue
        try:
            mask, source, _ = build(ctx, p.key, steps)
        except BlockmaskError:  # e.g. a baseline that does not apply at this K
            continue
        rows.append(_row(ctx, source, mask))
    _ROWS[key] = rows
    while len(_ROWS) > 32:  # a few (model, scheduler, K) per process
        _ROWS.pop(next(iter(_ROWS)))
    return rows


_ROWS: dict = {}


def presets_frame(ctx: ModelContext, steps: int, current: np.ndarray | None = None) -> pd.DataFrame:
    """The current mask, the learned masks that fit and every baseline at its default parameters, at
    this model and K (the producer methods are left out: each is a run of its own)."""
    rows = [] if current is None else [_row(ctx, "current mask", np.asarray(current, bool))]
    return pd.DataFrame(rows + _preset_rows(ctx, steps), columns=PRESET_COLUMNS)


def comparison_frame(r: Comparison) -> pd.DataFrame:
    """Original and masked run of one comparison, one row each."""
    psnr = "identical" if math.isinf(r.psnr) else f"{r.psnr:.2f}"
    spread = f" ({r.speedup_lo:.2f}-{r.speedup_hi:.2f}x over {r.repeats})" if r.repeats > 1 else " (1 run)"
    return pd.DataFrame([
        ["original", format_macs(r.macs_original), "100.0 %", f"{r.original_s:.3f}", "1.00x", "reference"],
        ["masked", format_macs(r.macs_masked), f"{r.macs_percent:.1f} %", f"{r.masked_s:.3f}",
         f"{r.speedup:.2f}x{spread}", psnr],
    ], columns=COMPARISON_COLUMNS)
