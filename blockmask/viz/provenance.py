"""Where a shipped or uploaded mask came from, read from its file's metadata (issue 28, "honest presets").

Newer files record it: the planner writes ``family`` and ``plan`` (with ``provenance``: family, name,
params), ``blockmask train --steps auto`` the same. Older shipped masks (``assets/masks/``) record the
budget pipeline's ``calibration`` (the candidate the search started from and whether the refined
mask was kept on validation seeds) or only the per-step trainer's ``training`` settings and
``scores``. What is not recorded is called ``unknown``, never ``learned``.
"""

from __future__ import annotations

import dataclasses
import re

RULE_START = re.compile(r"^(fora|blocks|deepcache|uniform|reuse all)\b", re.I)
FAMILY_WORDS = {"rule": "rule", "refined": "refined rule", "learned": "learned", "fewer-steps": "fewer steps"}


@dataclasses.dataclass(frozen=True)
class Provenance:
    kind: str  # rule | refined rule | learned | refined learned | refined | planner: … | unknown
    detail: str = ""  # e.g. the rule the search started from
    psnr: float | None = None  # held-out PSNR (dB) against the plain model, when recorded
    psnr_what: str = ""  # "held-out" or "validation" (the planner's own validation seeds)

    @property
    def text(self) -> str:
        return self.kind + (f" ({self.detail})" if self.detail else "")

    @property
    def psnr_text(self) -> str:
        return "" if self.psnr is None else f"{self.psnr:.1f} dB {self.psnr_what}"


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _planner(meta: dict) -> Provenance | None:
    plan = meta.get("plan") if isinstance(meta.get("plan"), dict) else {}
    prov = plan.get("provenance") if isinstance(plan.get("provenance"), dict) else None
    if prov is None and isinstance(meta.get("provenance"), dict):
        prov = meta["provenance"]
    family = (prov or {}).get("family") or meta.get("family")
    if not isinstance(family, str):
        return None
    word = FAMILY_WORDS.get(family, family)
    if family == "refined" and "learned" in str(((prov or {}).get("params") or {}).get("refined_from", "")):
        word = "refined learned"
    name = (prov or {}).get("name")
    steps = plan.get("steps")
    detail = ", ".join(x for x in (str(name) if name else "", f"{steps} steps" if steps else "") if x)
    psnr, what = _num((meta.get("heldout") or {}).get("psnr")), "held-out"
    if psnr is None:
        psnr, what = _num((plan.get("validation") or {}).get("psnr")), "validation"
    return Provenance(f"planner: {word}" if plan else word, detail, psnr, what if psnr is not None else "")


def provenance(meta: dict | None) -> Provenance:
    """The provenance of a mask file from its ``meta`` (module doc)."""
    meta = meta if isinstance(meta, dict) else {}
    found = _planner(meta)
    if found is not None:
        return found
    psnr = _num((meta.get("heldout") or {}).get("psnr"))
    what = "held-out" if psnr is not None else ""
    cal = meta.get("calibration") if isinstance(meta.get("calibration"), dict) else None
    if cal is not None and isinstance(cal.get("start"), str):
        start = cal["start"]
        kept = (cal.get("validation") or {}).get("kept")
        if kept is None:  # no validation recorded: refined when the refinement accepted anything
            kept = "refined" if (cal.get("refine") or {}).get("accepted") else "start"
        if RULE_START.match(start):
            base = "rule"
        elif start.startswith("learned"):
            base = "learned"
        else:
            base = None  # e.g. "start mnist-pixart-050steps-b55": another shipped mask
        if kept == "refined":
            kind = f"refined {base}" if base else "refined"
        else:
            kind = base or "unknown"
        return Provenance(kind, start, psnr, what)
    if isinstance(meta.get("training"), dict) and meta.get("scores") is not None:
        return Provenance("learned", "per-step trainer", psnr, what)
    return Provenance("unknown", "", psnr, what)
