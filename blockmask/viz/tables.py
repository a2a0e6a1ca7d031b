"""Result tables of both apps as pandas DataFrames (``st.dataframe`` / ``gr.Dataframe``), built here
once: the presets of the current model and K against the current mask, and one comparison's
original-vs-masked readout. Cells are formatted strings (as people read them), like
:func:`blockmask.eval.report.display_frame`."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from blockmask.hooks.costs import format_macs
from blockmask.viz.compare import Comparison
from blockmask.viz.context import ModelContext
from blockmask.viz.presets import catalog, learned_masks

PRESET_COLUMNS = ["mask", "provenance", "MACs % of original", "ideal speedup (MACs)", "computed cells",
                  "PSNR vs plain (dB)", "PSNR measured on"]
COMPARISON_COLUMNS = ["run", "MACs per image", "MACs % of original", "median wall time (s)", "speedup",
                      "PSNR vs original (dB)"]


def _row(ctx: ModelContext, name: str, mask: np.ndarray, prov: str = "", psnr: float | None = None,
         where: str = "") -> dict:
    ratio = ctx.macs.ratio(mask)
    return {"mask": name, "provenance": prov, "MACs % of original": f"{100 * ratio:.1f} %",
            "ideal speedup (MACs)": f"{1 / ratio:.2f}x", "computed cells": f"{int(mask.sum())} / {mask.size}",
            "PSNR vs plain (dB)": "-" if psnr is None else ("identical" if math.isinf(psnr) else f"{psnr:.2f}"),
            "PSNR measured on": where or ("-" if psnr is None else "")}


def _where(meta_psnr_what: str, heldout: dict | None) -> str:
    if meta_psnr_what == "held-out" and isinstance(heldout, dict) and heldout.get("num"):
        return f"held-out seeds {heldout.get('seed', '?')}.. ({heldout['num']} samples)"
    return f"{meta_psnr_what} seeds" if meta_psnr_what else ""


def _preset_rows(ctx: ModelContext, steps: int) -> list[dict]:
    rows = []
    for e in catalog(ctx, steps):
        name = " = ".join(e.names)  # identical masks: one row, every name
        if e.prov is None:
            rows.append(_row(ctx, name, e.mask, "rule" if e.keys[0] not in ("ones", "random") else
                             ("plain model" if e.keys[0] == "ones" else "random")))
        else:
            rows.append(_row(ctx, name, e.mask, e.prov.text, e.prov.psnr,
                             _where(e.prov.psnr_what, _heldout(ctx, steps, e.keys[0]))))
    return rows


def _heldout(ctx: ModelContext, steps: int, key: str) -> dict | None:
    for p, _, _, meta in learned_masks(ctx, steps):
        if key == f"learned:{p.name}":
            return meta.get("heldout")
    return None


def presets_frame(ctx: ModelContext, steps: int, current: np.ndarray | None = None,
                  measured: tuple[float, str] | None = None) -> pd.DataFrame:
    """The current mask, the shipped masks that fit and every baseline at its default parameters, at
    this model and K, one row per distinct mask (the producer methods are left out: each is a run of
    its own). PSNR is what the mask file records (held-out seeds); ``measured`` = (PSNR, where) is the
    current mask's own from this session's last generation, when it was for this mask."""
    rows = []
    if current is not None:
        psnr, where = measured if measured is not None else (None, "press Generate")
        rows = [_row(ctx, "current mask", np.asarray(current, bool), "", psnr, where)]
    return pd.DataFrame(rows + _preset_rows(ctx, steps), columns=PRESET_COLUMNS)


def comparison_frame(r: Comparison) -> pd.DataFrame:
    """Original and masked run of one comparison, one row each. MACs say when guidance doubled them;
    a speedup says when its timing is unreliable (above the ideal, spread, busy machine)."""
    psnr = "identical" if math.isinf(r.psnr) else f"{r.psnr:.2f}"
    spread = f" ({r.speedup_lo:.2f}-{r.speedup_hi:.2f}x over {r.repeats})" if r.repeats > 1 else " (1 run)"
    flag = " - above the ideal: noise" if r.above_ideal else (" - unreliable" if r.unreliable else "")
    cfg = " (x2 CFG)" if r.cfg else ""
    return pd.DataFrame([
        ["original", format_macs(r.macs_original) + cfg, "100.0 %", f"{r.original_s:.3f}", "1.00x", "reference"],
        ["masked", format_macs(r.macs_masked) + cfg, f"{r.macs_percent:.1f} %", f"{r.masked_s:.3f}",
         f"{r.speedup:.2f}x{spread}{flag}", psnr],
    ], columns=COMPARISON_COLUMNS)
