"""The mask file (format ``blockmask/1``): a (K, N) mask with the unit names, model, scheduler and
metadata needed to check it against a model and a schedule; JSON on disk, written atomically; shipped
names, ``save_pretrained`` folders and hub repo ids through :mod:`blockmask.io.hub` (METHOD.md §1).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from blockmask.core.errors import FileFormatError, MaskError
from blockmask.core.mask import mask_hash, validate_mask  # noqa: F401  (re-exported: the old blockmask.mask)
from blockmask.core.validate import field, parse_json, read_bytes
from blockmask.io import hub
from blockmask.io.files import atomic_write_json, jsonable

FORMAT = "blockmask/1"


@dataclasses.dataclass
class MaskFile:
    """A mask with everything needed to check it against a model and a schedule."""

    mask: np.ndarray  # (K, N) bool
    units: list[str]  # N unit names, execution order
    model: str = ""  # the model spec it was made for (hub id, path, config:…, bundled name)
    fingerprint: str = ""  # model class + config hash, see blockmask.io.models.fingerprint
    scheduler: dict = dataclasses.field(default_factory=dict)  # {"class", "config", "timesteps"}
    meta: dict = dataclasses.field(default_factory=dict)  # free: training config, delta, lambda, MACs…

    def __post_init__(self):
        if not isinstance(self.units, (list, tuple)) or not all(isinstance(u, str) for u in self.units):
            raise MaskError(f"units must be a list of unit names (strings), got {type(self.units).__name__}")
        dup = next((u for i, u in enumerate(self.units) if u in self.units[:i]), None)
        if dup is not None:
            raise MaskError(f"unit name {dup[:80]!r} appears twice in units")
        self.units = list(self.units)
        self.mask = validate_mask(self.mask, units=len(self.units))
        if isinstance(self.meta, dict) and self.meta.get("reuse", "hold") not in ("hold", "forecast"):
            raise MaskError(f"meta.reuse must be 'hold' or 'forecast', got {str(self.meta.get('reuse'))[:40]!r}")

    @property
    def reuse(self) -> str:
        """What the mask's reused units return: "hold" (the last value, Eq. 3; files without the key)
        or "forecast" (:mod:`blockmask.core.forecast`)."""
        return self.meta.get("reuse", "hold") if isinstance(self.meta, dict) else "hold"

    @property
    def num_steps(self) -> int:
        return int(self.mask.shape[0])

    def with_mask(self, mask: np.ndarray, **meta) -> "MaskFile":
        return dataclasses.replace(self, mask=np.asarray(mask, bool).copy(), meta={**self.meta, **meta})

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "model": self.model,
            "fingerprint": self.fingerprint,
            "scheduler": self.scheduler,
            "num_steps": self.num_steps,
            "units": list(self.units),
            "mask": self.mask.astype(int).tolist(),
            "hash": mask_hash(self.mask),
            "meta": jsonable(self.meta),
        }

    def save(self, path) -> Path:
        """Atomic write (temp file + rename)."""
        data = self.to_json()
        try:
            json.dumps(jsonable(data), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as e:
            raise MaskError(f"mask metadata is not JSON ({str(e)[:120]}); keep meta to numbers, strings, lists "
                            "and dicts") from None
        return atomic_write_json(path, data)

    @classmethod
    def from_json(cls, data: Any, source: str = "mask file") -> "MaskFile":
        """Check every field's type and value (:mod:`blockmask.core.validate`); MaskError names the file
        and the field."""
        if not isinstance(data, dict):
            raise MaskError("expected a JSON object", source)
        fmt = data.get("format")
        if fmt != FORMAT:
            raise MaskError(f"format is {fmt!r}, expected {FORMAT!r}", source)
        missing = [k for k in ("num_steps", "units", "mask") if k not in data]
        if missing:
            raise MaskError(f"missing field(s) {', '.join(missing)}", source)
        try:
            steps = field(data, "num_steps", "int", source, low=1)
            units = data["units"]
            if not isinstance(units, list) or not all(isinstance(u, str) for u in units):
                raise MaskError("must be a list of unit names (strings)", source, "units")
            if not units:
                raise MaskError("must list at least one unit", source, "units")
            rows = field(data, "mask", "list", source)
            for k, row in enumerate(rows):
                if not isinstance(row, list):
                    raise MaskError(f"row {k} must be a list of 0/1, found {type(row).__name__}", source, "mask")
                for i, v in enumerate(row):
                    if type(v) is not int and type(v) is not bool:  # "1", 1.0, null: refused, not coerced
                        raise MaskError(f"cell at step {k}, unit {i} must be 0 or 1, found {v!r}", source, "mask")
            model = field(data, "model", "str", source, default="")
            fp = field(data, "fingerprint", "str", source, default="")
            sched = field(data, "scheduler", "dict", source, default={})
            if "timesteps" in sched and sched["timesteps"] is not None:
                field(sched, "timesteps", "int_list", f"{source}: 'scheduler'")
            if "class" in sched:
                field(sched, "class", "str", f"{source}: 'scheduler'")
            meta = field(data, "meta", "dict", source, default={})
            if "hash" in data:
                field(data, "hash", "str", source)
        except FileFormatError as e:
            if isinstance(e, MaskError):
                raise
            raise MaskError(str(e)) from None
        try:
            mask = validate_mask(rows, units=len(units), steps=steps)
        except MaskError as e:
            raise MaskError(str(e), source) from None
        return cls(mask=mask, units=units, model=model, fingerprint=fp, scheduler=sched, meta=meta)

    @classmethod
    def loads(cls, text: str | bytes, source: str = "mask file") -> "MaskFile":
        try:
            data = parse_json(text, source)
        except FileFormatError as e:
            raise MaskError(str(e)) from None
        return cls.from_json(data, source)

    @classmethod
    def load(cls, path) -> "MaskFile":
        try:
            data = read_bytes(path, "mask file")
        except FileFormatError as e:
            raise MaskError(str(e)) from None
        return cls.loads(data, source=str(path))

    # --- the hub (blockmask.io.hub): a folder with blockmask_mask.json + README.md ---------------
    def save_pretrained(self, save_directory) -> Path:
        """Write a hub-style folder: ``blockmask_mask.json`` and a model card."""
        return hub.save_pretrained(self, save_directory)

    @classmethod
    def from_pretrained(cls, source, **kwargs) -> "MaskFile":
        """Load from a folder written by :meth:`save_pretrained` or a hub repo id (``owner/name``;
        ``subfolder=``, ``revision=``, ``cache_dir=`` as in ``huggingface_hub.hf_hub_download``)."""
        return cls.load(hub.fetch(source, **kwargs))

    def push_to_hub(self, repo_id: str, **kwargs):
        """Upload this mask to a hub repo (``subfolder=`` puts it next to a model's own files)."""
        return hub.push_to_hub(self, repo_id, **kwargs)

    def fit(self, units: list[str]) -> "MaskFile":
        """This mask over ``units``: a file whose units are a subset of the model's, in the same order
        (made before samplers and whole transformer blocks became units), gets the missing columns
        as ones — they always ran then, so the samples are unchanged. Anything else: unchanged
        (:meth:`check` reports it)."""
        if list(self.units) == list(units):
            return self
        pos = {n: i for i, n in enumerate(units)}
        cols = [pos.get(u) for u in self.units]
        if None in cols or cols != sorted(cols) or len(set(cols)) != len(cols):
            return self
        full = np.ones((self.num_steps, len(units)), dtype=bool)
        full[:, cols] = self.mask
        added = [u for u in units if u not in set(self.units)]
        return dataclasses.replace(self, mask=full, units=list(units), meta={**self.meta, "added_units": added})

    def mismatches(self, *, units: list[str], fingerprint: str | None = None, steps: int | None = None) -> list[str]:
        """Every way this file disagrees with a model (unit names/N, fingerprint) and step count."""
        out = []
        if steps is not None and steps != self.num_steps:
            out.append(f"mask has {self.num_steps} steps, sampling uses {steps}")
        if len(units) != len(self.units):
            out.append(f"mask has {len(self.units)} units, the model has {len(units)}")
        else:
            diff = [i for i, (a, b) in enumerate(zip(self.units, units)) if a != b]
            if diff:
                i = diff[0]
                out.append(f"{len(diff)} unit name(s) differ, first at column {i}: mask {self.units[i]!r} vs model {units[i]!r}")
        if fingerprint and self.fingerprint and fingerprint != self.fingerprint:
            out.append(f"model fingerprint differs (mask {self.fingerprint}, model {fingerprint})")
        return out

    def check(self, *, units: list[str], fingerprint: str | None = None, steps: int | None = None,
              strict_fingerprint: bool = False) -> list[str]:
        """Raise MaskError listing every structural mismatch; return fingerprint warnings.

        A different fingerprint alone (same unit names, N, K) is a warning unless
        ``strict_fingerprint``: the same architecture with other weights is a legitimate use.
        """
        problems = self.mismatches(units=units, fingerprint=fingerprint, steps=steps)
        hard = [p for p in problems if not p.startswith("model fingerprint")]
        soft = [p for p in problems if p.startswith("model fingerprint")]
        if hard or (soft and strict_fingerprint):
            raise MaskError("mask does not fit the model: " + "; ".join(hard + (soft if strict_fingerprint else [])))
        return soft


def load_mask_source(source, *, cache_dir=None, max_bytes: int | None = None) -> MaskFile:
    """A mask named any accepted way: a mask file path, a folder with ``blockmask_mask.json``, the
    name of a shipped mask (``mnist-ddpm-050steps-b45``), or a hub repo id (``owner/name``, optionally
    ``owner/name:path/in/repo.json``); where each is looked for: :func:`blockmask.io.hub.mask_source_path`."""
    return MaskFile.load(hub.mask_source_path(source, cache_dir=cache_dir, max_bytes=max_bytes))
