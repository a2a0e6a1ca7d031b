"""A model's planned frontier and its peers, as one JSON file the apps and the CLI read.

``benchmarks/frontier.py --dense`` plans every budget and judges each schedule, and every peer point,
on held-out test seeds. :func:`build` gathers that folder into a :class:`Frontier`; the bundled
models ship theirs as ``assets/frontier/MODEL-NNNref.json`` (:meth:`Frontier.for_model`).

Points (``Frontier.points``, a pandas table, one row each):

- ``kind`` ``plan``: the planner's schedule for ``budget`` (a fraction of the plain ``ref_steps``-step
  MACs), with ``family`` (fewer-steps, rule, refined, learned) and ``provenance`` (the candidate's
  name);
- ``kind`` ``peer fewer-steps`` / ``peer rule``: plain DDIM at K' steps, the real DeepCache's mask
  (bitwise the package's images, tests/test_peers.py), FORA and block caching at ``ref_steps``;
  ``met_by``: the plan that matches (fewer steps: PSNR ≥ at ≤ 1.02× its MACs) or beats it (rules:
  +0.5 dB at ≤ its MACs) on the test seeds, empty if none.

Columns ``macs_ratio`` (MacProfile per model call on the rectified mask), ``valid_psnr`` (what the
planner saw) and ``test_psnr`` (seeds no choice saw) are against the plain ``ref_steps``-step run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from blockmask.core.errors import BlockmaskError
from blockmask.core.validate import check_int
from blockmask.io.files import atomic_write_json
from blockmask.io.maskfile import MaskFile
from blockmask.io.resources import assets_dir
from blockmask.learning.candidates import Candidate, rule_mask

FORMAT = "blockmask-frontier/1"
RULE_PEERS_UNET = [("deepcache", {"branch": b, "interval": n}) for b in (0, 1) for n in (2, 3, 5)]
RULE_PEERS_DIT = [("fora", {"interval": n}) for n in (2, 3)] + [("blocks", {"interval": n}) for n in (2, 3)]
COLUMNS = ["kind", "name", "family", "provenance", "reuse", "budget", "steps", "macs_ratio", "valid_psnr", "test_psnr",
           "met_by"]


def _validation(plans: pd.DataFrame) -> np.ndarray:
    """The plans' validation PSNR, a missing one as the worst (-inf)."""
    return pd.to_numeric(plans.valid_psnr, errors="coerce").fillna(-np.inf).to_numpy()


def best_position(plans: pd.DataFrame) -> int:
    """Position in ``plans`` (sorted by budget) of the one with the best validation PSNR; the largest
    budget on a tie, and a missing PSNR counts as the worst."""
    v = _validation(plans)
    return max(range(len(plans)), key=lambda i: (v[i], i))


def answered(plans: pd.DataFrame) -> list[str]:
    """For each row of ``plans`` (sorted by budget), the name of the plan :meth:`Frontier.at_budget` returns
    at its budget: of the plans for a budget ≤ it, the best on validation (:func:`best_position`)."""
    b, v = pd.to_numeric(plans.budget).to_numpy(float), _validation(plans)
    best, upto = [], -1  # best[j]: the best of rows 0..j, by (validation PSNR, position)
    for j in range(len(b)):
        upto = j if upto < 0 or (v[j], j) >= (v[upto], upto) else upto
        best.append(upto)
    ends = np.searchsorted(b, b + 1e-9, side="right")  # rows with a budget ≤ each row's: 0 .. end - 1
    names = list(plans["name"])
    return [names[best[e - 1]] for e in ends]


def peer_points(wb, ref: int, stride: int = 1) -> list[Candidate]:
    """Plain DDIM at every K' from 13 to 45 (scaled to ``ref``; ``stride`` > 1: every stride-th K' and
    the last) and the rule peers at ``ref`` steps: DeepCache branches 0 and 1 at intervals 2, 3, 5 on
    U-Nets; FORA 2, 3 and block caching 2, 3 (where units are residual) on transformers."""
    lo, hi = max(1, round(13 * ref / 50)), max(1, round(45 * ref / 50))
    ks = sorted({*range(lo, hi + 1, check_int("peer stride", stride, low=1)), hi})
    out = [Candidate(f"DDIM {k} steps", "fewer-steps", k, None, 0.0, {"steps": k}) for k in ks]
    unet = type(wb.model).__name__.startswith("UNet")
    for kind, params in RULE_PEERS_UNET if unet else RULE_PEERS_DIT:
        if kind == "blocks" and not any(u.residual for u in wb.units):
            continue
        label = {"deepcache": f"DeepCache b{params.get('branch')}", "fora": "FORA", "blocks": "blocks"}[kind]
        mask = rule_mask(wb, {"kind": kind, **params}, ref)
        out.append(Candidate(f"{label} N={params['interval']}", "rule", ref, mask, 0.0, {"kind": kind, **params}))
    return out


def _rows(mask: np.ndarray | None) -> list[str] | None:
    return None if mask is None else ["".join("1" if v else "0" for v in row) for row in np.asarray(mask, bool)]


@dataclasses.dataclass
class Frontier:
    model: str
    ref_steps: int
    units: list[str]
    points: pd.DataFrame
    masks: dict[str, np.ndarray | None]  # point name → (K, N) bool; None: the plain model at its steps
    meta: dict = dataclasses.field(default_factory=dict)

    # --- reading ----------------------------------------------------------------------------
    @property
    def plans(self) -> pd.DataFrame:
        return self.points[self.points.kind == "plan"].sort_values("budget")

    @property
    def peers(self) -> pd.DataFrame:
        return self.points[self.points.kind != "plan"]

    def schedule(self, name: str) -> tuple[int, np.ndarray]:
        """(steps, the (K, N) mask; all ones for a plain run) of the point ``name``."""
        row = self.points[self.points.name == name]
        if row.empty:
            raise BlockmaskError(f"no point {name!r} on the {self.model} frontier (K_ref={self.ref_steps})")
        k = int(row.iloc[0].steps)
        m = self.masks.get(name)
        return k, np.ones((k, len(self.units)), bool) if m is None else m.copy()

    def reuse(self, name: str) -> str:
        """What the point's reused units return: "hold" (every peer; files older than the column) or
        "forecast" (:mod:`blockmask.core.forecast`)."""
        row = self.points[self.points.name == name]
        if row.empty or "reuse" not in row:
            return "hold"
        v = row.iloc[0]["reuse"]
        return v if v in ("hold", "forecast") else "hold"

    def at_budget(self, budget: float) -> pd.Series:
        """The planned schedule for ``budget``: of the plan points planned for a budget ≤ it, the one with
        the best *validation* PSNR (the largest budget on a tie). A schedule planned for a smaller budget
        fits a larger one too, so the frontier never gets worse as the budget grows, also where the
        budgets were planned at different times (``benchmarks/frontier_merge.py``)."""
        b = float(budget)
        if not (0 < b <= 1):
            raise BlockmaskError(f"budget must be in (0, 1], got {budget!r}")
        ok = self.plans[self.plans.budget <= b + 1e-9]
        if ok.empty:
            raise BlockmaskError(f"budget {b:g} is below the {self.model} frontier's cheapest planned point "
                                 f"({self.plans.budget.min():.3g})")
        return ok.iloc[best_position(ok)]

    def answers(self) -> pd.DataFrame:
        """The plan points in budget order, with ``answer``: the point :meth:`at_budget` returns at each
        one's budget. That is the point itself, or a plan for a smaller budget with a better validation
        PSNR, which *supersedes* it (a merge of budgets planned at different times leaves such plans)."""
        pl = self.plans.reset_index(drop=True)
        return pl.assign(answer=answered(pl))

    def line(self, answers: pd.DataFrame | None = None) -> pd.DataFrame:
        """The frontier as it answers budgets: each plan point some planned budget gets from
        :meth:`at_budget`, once, in budget order (its validation PSNR never falls as the budget grows).
        ``answers``: this frontier's :meth:`answers`, where already at hand."""
        a = self.answers() if answers is None else answers
        return a[a.name.isin(set(a.answer))].drop(columns="answer")

    def counts(self) -> dict:
        """Issue 26's "Done when" counts on the test seeds."""
        fs, ru = self.points[self.points.kind == "peer fewer-steps"], self.points[self.points.kind == "peer rule"]
        return {"fewer_steps_matched": int((fs.met_by.fillna("") != "").sum()), "fewer_steps": len(fs),
                "rules_beaten": int((ru.met_by.fillna("") != "").sum()), "rules": len(ru)}

    # --- files ------------------------------------------------------------------------------
    def to_json(self) -> dict:
        pts = self.points[[c for c in COLUMNS if c in self.points]].astype(object)
        pts = pts.where(pd.notna(pts), None)
        return {"format": FORMAT, "model": self.model, "ref_steps": self.ref_steps, "units": self.units,
                "meta": self.meta,
                "points": [{**r, "mask": _rows(self.masks.get(r["name"]))} for r in pts.to_dict("records")]}

    def save(self, path) -> Path:
        return atomic_write_json(path, self.to_json())

    @classmethod
    def load(cls, path) -> "Frontier":
        try:
            d = json.loads(Path(path).read_text())
            if d.get("format") != FORMAT:
                raise BlockmaskError(f"{path}: not a blockmask frontier file (format {d.get('format')!r})")
            n = len(d["units"])
            masks = {}
            for p in d["points"]:
                rows = p.pop("mask")
                masks[p["name"]] = None if rows is None else np.array([[c == "1" for c in r] for r in rows], bool)
                if masks[p["name"]] is not None and masks[p["name"]].shape != (int(p["steps"]), n):
                    raise BlockmaskError(f"{path}: point {p['name']!r} has a mask of the wrong shape")
            return cls(d["model"], int(d["ref_steps"]), list(d["units"]), pd.DataFrame(d["points"]), masks,
                       d.get("meta", {}))
        except OSError as e:
            raise BlockmaskError(f"cannot read frontier file {path}: {e.strerror or e}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BlockmaskError(f"{path}: malformed frontier file ({type(e).__name__}: {str(e)[:80]})") from None

    @classmethod
    def for_model(cls, model: str, ref_steps: int = 50) -> "Frontier | None":
        """The shipped frontier of a bundled model, or None."""

        path = assets_dir() / "frontier" / f"{model}-{ref_steps:03d}ref.json"
        return cls.load(path) if path.is_file() else None


def build(folder, wb, model: str, *, meta: dict | None = None) -> Frontier:
    """The :class:`Frontier` of ``benchmarks/frontier.py``'s output ``folder`` (results.csv, the plan
    mask files) for the workbench ``wb`` of ``model``."""
    folder = Path(folder)
    df = pd.read_csv(folder / "results.csv")
    masks: dict[str, np.ndarray | None] = {}
    ref = None
    for name in df[df.kind == "plan"].name:
        mf = MaskFile.load(folder / name)
        masks[name] = None if mf.mask.all() else mf.mask
        ref = int(mf.meta["plan"]["budget"]["ref_steps"])
    if ref is None:
        raise BlockmaskError(f"{folder}/results.csv has no planned schedule")
    for c in peer_points(wb, ref):
        masks[c.name] = c.mask
    df = df[df.kind.eq("plan") | df.name.isin(list(masks))]
    return Frontier(model, ref, list(wb.unit_names), df.reset_index(drop=True), masks, dict(meta or {}))
