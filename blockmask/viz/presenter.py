"""Per-user mask editing state: cell/region/row/column edits, undo/redo, reset, rectification with
highlight, loading presets and uploads, download bytes.

:class:`MaskEditor` holds only numpy arrays and plain values (safe in ``st.session_state`` and
``gr.State``, which deep-copies); anything that needs the model takes a :class:`ModelContext`.
Every action returns :class:`Message` values for the UI to show; none raises for user mistakes,
except :meth:`MaskEditor.set_reuse` given a mode no control offers (one :class:`ReuseModeError` line).

The editor also holds the *reuse mode* the mask runs under (:mod:`blockmask.core.forecast`): "hold" (a
reused unit returns its last computed value, the default) or "forecast" (a first-order forecast from its
last two computed values). Loading a mask sets it from the file (``meta["reuse"]``, "hold" when absent);
saving writes it; generation, timing, the race and rectification run under it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from blockmask.core.errors import BlockmaskError, OptionError
from blockmask.core.forecast import REUSE
from blockmask.core.mask import mask_hash
from blockmask.core.resample import even_levels, resample_mask
from blockmask.core.schedulers import call_rows, row_starts
from blockmask.hooks.costs import format_macs
from blockmask.io.maskfile import MaskFile
from blockmask.viz.access import MAX_UPLOAD_BYTES
from blockmask.viz.context import ModelContext, with_scheduler

ROW0_WHY = ("Step 0 always computes every unit: nothing has been cached yet, so there is nothing to "
            "reuse (METHOD.md §1). Row 0 stays on.")
HISTORY = 200  # undo depth
REUSE_LABELS = {"hold": "hold last value", "forecast": "forecast (first-order)"}  # the apps' control
REUSE_TITLE = "Reused units"
REUSE_HELP = ("What a reused (grey) cell returns: hold = the unit's last computed value; forecast = a first-order "
              "extrapolation from its last two computed values. Forecast costs no MACs (a few additions per "
              "value); a unit computed only once so far still holds.")


class ReuseModeError(OptionError):
    """A reuse mode no control offers (not "hold" or "forecast")."""


def check_reuse_mode(reuse) -> str:
    """``reuse`` when it is "hold" or "forecast"; anything else: one :class:`ReuseModeError` line."""
    if isinstance(reuse, str) and reuse in REUSE:
        return reuse
    raise ReuseModeError(f"reused units must be 'hold' (hold last value) or 'forecast' (first-order forecast), "
                         f"got {str(reuse)[:40]!r}")


def reuse_text(reuse: str) -> str:
    """'reused units: hold last value' (what the readouts say about the mask's mode)."""
    return f"reused units: {REUSE_LABELS.get(reuse, reuse)}"


@dataclasses.dataclass(frozen=True)
class Message:
    level: str  # info | success | warning | error
    text: str


def info(t: str) -> Message:
    return Message("info", t)


def warn(t: str) -> Message:
    return Message("warning", t)


def error(t: str) -> Message:
    return Message("error", t)


def row_levels(ctx: ModelContext, steps: int) -> np.ndarray | None:
    """(K,) noise level (timestep) of each mask row: the first model call of the row (Heun: two calls);
    None when the scheduler's timesteps do not give one non-increasing level per row."""

    s = ctx.wb.scheduler()
    s.set_timesteps(int(steps))
    ts = [float(t) for t in s.timesteps.tolist()]
    if len(ts) != steps:
        try:
            ts = [t for t, first in zip(ts, row_starts(call_rows(s))) if first]
        except Exception:  # noqa: BLE001 — a scheduler we cannot step on zeros: rows in call order
            ts = []
    lv = np.asarray(ts, float)
    return None if len(lv) != steps or (np.diff(lv) > 0).any() else lv


@dataclasses.dataclass
class MaskEditor:
    """The mask a user is editing, for one (model, scheduler, K)."""

    mask: np.ndarray  # (K, N) bool, current
    loaded: np.ndarray  # (K, N) bool, what "reset" returns to
    context_key: str = ""  # ModelContext.key it belongs to
    source: str = "all ones"  # where the loaded mask came from (preset / file name)
    meta: dict = dataclasses.field(default_factory=dict)  # loaded file's meta (delta, lambda, training…)
    removed: np.ndarray | None = None  # (K, N) cells the last rectification removed
    pre_rectify: np.ndarray | None = None  # (K, N) mask before the last rectification
    undo_stack: list = dataclasses.field(default_factory=list)
    redo_stack: list = dataclasses.field(default_factory=list)
    reuse: str = "hold"  # what reused cells return: "hold" | "forecast" (blockmask.core.forecast)

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def create(cls, ctx: ModelContext, steps: int, mask: np.ndarray | None = None, *, source: str = "all ones",
               meta: dict | None = None) -> "MaskEditor":
        m = np.ones((steps, ctx.n_units), bool) if mask is None else np.asarray(mask, bool).copy()
        return cls(m, m.copy(), ctx.key, source, dict(meta or {}))

    def fits(self, ctx: ModelContext, steps: int) -> bool:
        return self.context_key == ctx.key and self.shape == (steps, ctx.n_units)

    def same_model(self, ctx: ModelContext) -> bool:
        """Made for this model (spec and weights), under any scheduler and K: it can be resampled."""
        return self.context_key.rsplit("|", 1)[0] == ctx.key.rsplit("|", 1)[0] and self.shape[1] == ctx.n_units

    def resampled(self, ctx: ModelContext, steps: int) -> tuple["MaskEditor", list[Message]]:
        """This editor at ``steps`` rows for ``ctx`` (same model, another K or scheduler): the mask, its
        reset target and the undo/redo history resampled by noise level (:mod:`blockmask.core.resample`:
        each new row takes the row in force at its timestep), so changing K keeps the user's work."""

        old_sched = self.context_key.rsplit("|", 1)[-1]
        if old_sched == ctx.scheduler_name:
            src_ctx = ctx
        else:
            src_ctx = with_scheduler(ctx, old_sched)
        src, dst = row_levels(src_ctx, self.steps), row_levels(ctx, steps)
        if src is None or dst is None:  # a schedule without readable levels: rows in call order

            src, dst = even_levels(self.steps, 1.0, 0.0), even_levels(steps, 1.0, 0.0)

        def f(m):
            return resample_mask(m, src, dst)

        def fp(packed):
            return np.packbits(f(self._unpack(packed)))

        out = MaskEditor(f(self.mask), f(self.loaded), ctx.key, self.source, dict(self.meta),
                         undo_stack=[fp(p) for p in self.undo_stack], redo_stack=[fp(p) for p in self.redo_stack],
                         reuse=self.reuse)
        out.meta["resampled_from"] = {"steps": self.steps, "scheduler": old_sched}
        if not self.source.endswith(" resampled"):
            out.source = f"{self.source}, K={self.steps} resampled"
        what = f"K={self.steps} {old_sched}"
        return out, [info(f"Your mask was resampled from {what} to K={steps} {ctx.scheduler_name}: each new step "
                          "takes the row in force at its noise level (undo history kept, resampled too).")]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.mask.shape)

    @property
    def steps(self) -> int:
        return int(self.mask.shape[0])

    @property
    def hash(self) -> str:
        return mask_hash(self.mask)

    @property
    def dirty(self) -> bool:
        return not np.array_equal(self.mask, self.loaded)

    # --- history ----------------------------------------------------------------------------
    def _commit(self, new: np.ndarray) -> bool:
        """Record the current mask for undo and switch to ``new``; False when nothing changed."""
        new = np.asarray(new, bool)
        new[0] = True
        if np.array_equal(new, self.mask):
            return False
        self.undo_stack.append(np.packbits(self.mask))
        del self.undo_stack[:-HISTORY]
        self.redo_stack.clear()
        self.mask = new
        self.removed = self.pre_rectify = None
        return True

    def _unpack(self, packed) -> np.ndarray:
        k, n = self.shape
        return np.unpackbits(packed, count=k * n).reshape(k, n).astype(bool)

    def undo(self) -> list[Message]:
        if not self.undo_stack:
            return [info("Nothing to undo.")]
        self.redo_stack.append(np.packbits(self.mask))
        self.mask = self._unpack(self.undo_stack.pop())
        self.removed = self.pre_rectify = None
        return []

    def redo(self) -> list[Message]:
        if not self.redo_stack:
            return [info("Nothing to redo.")]
        self.undo_stack.append(np.packbits(self.mask))
        self.mask = self._unpack(self.redo_stack.pop())
        self.removed = self.pre_rectify = None
        return []

    def reset(self) -> list[Message]:
        if not self._commit(self.loaded.copy()):
            return [info(f"Already the loaded mask ({self.source}).")]
        return [info(f"Reset to the loaded mask ({self.source}).")]

    # --- edits ------------------------------------------------------------------------------
    def _check_cell(self, k: int, i: int) -> Message | None:
        kk, n = self.shape
        if not (0 <= k < kk and 0 <= i < n):
            return error(f"No cell at step {k}, unit {i} (steps 0..{kk - 1}, units 0..{n - 1}).")
        return None

    def toggle(self, k: int, i: int) -> list[Message]:
        """Flip one cell (row 0 is refused with the reason)."""
        k, i = int(k), int(i)
        if (bad := self._check_cell(k, i)) is not None:
            return [bad]
        if k == 0:
            return [warn(ROW0_WHY)]
        new = self.mask.copy()
        new[k, i] = not new[k, i]
        self._commit(new)
        return []

    def set_cells(self, cells, value: bool | None) -> list[Message]:
        """Set (value True/False) or toggle (None) a list of (k, i) cells, e.g. a box selection."""
        cells = [(int(k), int(i)) for k, i in cells]
        msgs = []
        if any(k == 0 for k, _ in cells):
            msgs.append(info("Row 0 was left computed: " + ROW0_WHY.split(":")[0] + "."))
        cells = [(k, i) for k, i in cells if k != 0 and self._check_cell(k, i) is None]
        if not cells:
            return msgs or [info("No editable cells selected.")]
        new = self.mask.copy()
        ks, is_ = np.array(cells).T
        new[ks, is_] = ~new[ks, is_] if value is None else bool(value)
        self._commit(new)
        return msgs

    def set_region(self, k0: int, k1: int, i0: int, i1: int, value: bool | None) -> list[Message]:
        """Steps k0..k1 × units i0..i1 (inclusive, any order): set or toggle."""
        kk, n = self.shape
        try:
            k0, k1, i0, i1 = (int(v) for v in (k0, k1, i0, i1))
        except (TypeError, ValueError):
            return [error("Region bounds must be whole numbers.")]
        k0, k1, i0, i1 = min(k0, k1), max(k0, k1), min(i0, i1), max(i0, i1)
        if k1 < 0 or k0 >= kk or i1 < 0 or i0 >= n:
            return [error(f"Region is outside the mask (steps 0..{kk - 1}, units 0..{n - 1}).")]
        k0, k1, i0, i1 = max(k0, 0), min(k1, kk - 1), max(i0, 0), min(i1, n - 1)
        return self.set_cells([(k, i) for k in range(k0, k1 + 1) for i in range(i0, i1 + 1)], value)

    def set_row(self, k: int, value: bool) -> list[Message]:
        """Every unit at step k computed (True) or reused (False)."""
        try:
            k = int(k)
        except (TypeError, ValueError):
            return [error("Step must be a whole number.")]
        if not 0 <= k < self.steps:
            return [error(f"Step {k} does not exist (0..{self.steps - 1}).")]
        if k == 0:
            return [warn(ROW0_WHY)]
        return self.set_region(k, k, 0, self.shape[1] - 1, value)

    def set_column(self, i: int, value: bool) -> list[Message]:
        """Unit i computed (True) or reused (False) at every step ≥ 1."""
        try:
            i = int(i)
        except (TypeError, ValueError):
            return [error("Unit must be a whole number.")]
        if not 0 <= i < self.shape[1]:
            return [error(f"Unit {i} does not exist (0..{self.shape[1] - 1}).")]
        if self.steps < 2:
            return [info("Only one step: nothing to edit.")]
        return self.set_region(1, self.steps - 1, i, i, value)

    # --- reuse mode ---------------------------------------------------------------------------
    def set_reuse(self, reuse) -> list[Message]:
        """Run the mask with reused units holding their last value or forecasting; an unknown mode raises
        :class:`ReuseModeError` (one line) and nothing changes. The mask itself stays (MACs too)."""
        reuse = check_reuse_mode(reuse)
        if reuse == self.reuse:
            return []
        self.reuse = reuse
        self.removed = self.pre_rectify = None  # a rectification under the other mode no longer applies
        how = "forecast from their last two computed values" if reuse == "forecast" else "hold their last value"
        return [info(f"Reused units now {how}; MACs are unchanged.")]

    # --- rectification ----------------------------------------------------------------------
    def rectify(self, ctx: ModelContext) -> list[Message]:
        """Remove dead work (METHOD.md §4) under the editor's reuse mode and remember which cells went
        (for highlighting): under forecast, a value a later forecast reads is kept."""
        before = self.mask.copy()
        r = ctx.wb.rectify(before, reuse=self.reuse)
        saved = ctx.macs.total(before) - ctx.macs.total(r.mask)  # per model call (Heun: two per step)
        if r.cells_removed == 0:
            self.removed = np.zeros_like(before)
            self.pre_rectify = before
            return [info("Rectification removed nothing: every computed cell is read by a later unit or step.")]
        self._commit(r.mask)
        self.removed, self.pre_rectify = r.removed.copy(), before
        pct = 100 * saved / ctx.macs.baseline(self.steps)
        return [Message("success", f"Rectification removed {r.cells_removed} dead cell(s), saving {format_macs(saved)} "
                                   f"MACs per image ({pct:.2f} % of the plain model; {reuse_text(self.reuse)}). "
                                   "Samples are unchanged.")]

    # --- files ------------------------------------------------------------------------------
    def load(self, mask: np.ndarray, *, source: str, meta: dict | None = None) -> list[Message]:
        """Replace the mask (undoable) and make it the new reset target; the reuse mode becomes the
        loaded one's (``meta["reuse"]``, "hold" when absent)."""
        mask = np.asarray(mask, bool)
        if mask.shape != self.shape:
            return [error(f"{source}: mask is {mask.shape[0]}×{mask.shape[1]}, the editor needs "
                          f"{self.shape[0]}×{self.shape[1]}.")]
        meta = dict(meta or {})
        try:
            reuse = check_reuse_mode(meta.get("reuse", "hold"))
        except ReuseModeError as e:
            return [error(f"{source}: {e}. The current mask is kept.")]
        self._commit(mask.copy())
        changed = reuse != self.reuse
        self.loaded, self.source, self.meta, self.reuse = mask.copy(), source, meta, reuse
        return [Message("success", f"Loaded {source}" + (f" ({reuse_text(reuse)})." if changed or reuse != "hold"
                                                         else "."))]

    def load_upload(self, ctx: ModelContext, data: bytes | None, name: str = "uploaded mask") -> list[Message]:
        """Validate an uploaded mask JSON against the model and K; on any problem keep the old mask."""
        if not data:
            return [error(f"{name}: the file is empty.")]
        try:
            mf, warns = ctx.wb.load_mask(bytes(data), steps=self.steps)
        except BlockmaskError as e:
            text = str(e).removeprefix("uploaded mask: ")
            return [error(f"{name}: {text}. The current mask is kept.")]
        except Exception as e:  # noqa: BLE001 — any parser surprise is still a bad file
            return [error(f"{name}: could not read the file ({type(e).__name__}). The current mask is kept.")]
        return self.load(mf.mask, source=name, meta=mf.meta) + [warn(w) for w in warns]

    def load_source(self, ctx: ModelContext, source: str, policy) -> list[Message]:
        """A mask from a hub repo id or a ``save_pretrained`` folder, if ``policy``
        (:class:`~blockmask.viz.access.MaskPolicy`) allows it; on any problem one error, mask kept."""
        import json

        try:
            source = policy.check(source)
            mf, warns = ctx.wb.load_mask(source, steps=self.steps, max_bytes=MAX_UPLOAD_BYTES)
        except BlockmaskError as e:
            return [error(f"{str(e)[0].upper()}{str(e)[1:]}. The current mask is kept.")]
        except Exception as e:  # noqa: BLE001 — a hub/parser surprise is still a bad mask
            return [error(f"{source[:80]}: could not load a mask ({type(e).__name__}). The current mask is kept.")]
        if len(json.dumps(mf.to_json())) > MAX_UPLOAD_BYTES:
            return [error(f"{source[:80]}: the mask is over this app's limit of {MAX_UPLOAD_BYTES / 1e6:.0f} MB. "
                          "The current mask is kept.")]
        return self.load(mf.mask, source=source[:80], meta=mf.meta) + [warn(w) for w in warns]

    def mask_file(self, ctx: ModelContext) -> MaskFile:
        meta = {**self.meta, "source": self.source, "edited": self.dirty, "reuse": self.reuse}
        return ctx.wb.mask_file(self.mask, meta)

    def download_bytes(self, ctx: ModelContext) -> bytes:
        """The current mask as a ``blockmask/1`` JSON file."""
        import json

        return json.dumps(self.mask_file(ctx).to_json()).encode()

    def download_name(self, ctx: ModelContext) -> str:
        stem = ctx.spec.removeprefix("config:").rstrip("/").split("/")[-1].removesuffix(".json") or "model"
        return f"mask-{stem}-K{self.steps}-{self.hash[:8]}{'-forecast' if self.reuse == 'forecast' else ''}.json"

    # --- readouts ---------------------------------------------------------------------------
    def summary(self, ctx: ModelContext) -> dict:
        """Plain numbers for the readout row."""
        m = self.mask
        p = ctx.macs
        return {"steps": self.steps, "units": self.shape[1], "computed": int(m.sum()), "cells": int(m.size),
                "macs": p.total(m), "macs_base": p.baseline(self.steps), "ratio": p.ratio(m),
                "mac_speedup": 1 / p.ratio(m), "hash": self.hash, "source": self.source, "edited": self.dirty,
                "reuse": self.reuse}
