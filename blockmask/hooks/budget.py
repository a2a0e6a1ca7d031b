"""``blockmask.enable(pipe, budget=B)``: a mask for this pipeline, at its own step count, that costs at most
a fraction B of the plain denoiser's MACs.

The step count is the user's (``num_inference_steps``), so "plain fewer steps" is not a choice here
(the offline planner, :mod:`blockmask.learning.planner`, weighs it). The MACs come from the pipeline's first
call under blockmask (:mod:`blockmask.hooks.pipesteps`: every unit runs at that call, counted with
``FlopCounterMode``), so the mask is chosen right after that call and rows ≥ 1 follow it.

Candidates at K steps, costed as ``MacProfile.ratio`` (per model call, with the scheduler's calls
per row: Heun counts twice):

* **shipped**: a bundled mask (``assets/masks``) made for this very model (same fingerprint), its
  rows aligned on noise levels to K (:mod:`blockmask.core.resample`). They were chosen by measured
  final-image error on that model, so one that fits is preferred to any rule;
* **rules**: DeepCache (every branch, U-Nets), FORA and whole-block caching at every interval
  2..K, written as presets (``"fora:3"``, ``"deepcache:3:0"``, ``"blocks:3"``); and the cached row
  of each of these with n evenly spaced full steps, n = 1..K (the budget filled more finely).
  Uniform staggered skipping is left out: on the bundled models it had 10–40× the final-image
  error of FORA / DeepCache at the same MACs (RESULTS.md, planner calibration).

**Choice rule** — no image is scored at enable time, so the rule is: among the candidates whose
MAC fraction is ≤ B, the one that keeps the *most* compute (ties: a plain preset before a filled
schedule). Within one rule family the error fell as MACs rose on every model we measured, so this
is the cheapest way to pick low error without sampling; it is not a measured optimum across
families. :func:`blockmask.learn` scores candidates on the pipeline's own images.

Each denoiser chooses for the rows it runs, from its first row in the run (computed in full) to the
end: a second denoiser that takes over mid-run (Wan 2.2's ``transformer_2``) pays for its own first
step, and the first one, which hands over before the end, is costed as if it ran to the end (the
real fraction of the run is what :func:`blockmask.summary` reports).

A budget below what any candidate reaches (the always-run remainder plus one full step) raises an
:class:`~blockmask.core.errors.OptionError` at that first call and disables blockmask on the pipeline.
"""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

from blockmask.core.errors import BlockmaskError, OptionError
from blockmask.io.maskfile import MaskFile
from blockmask.io.models import bundled_masks, fingerprint
from blockmask.presets import FixedMask, Preset

TOL = 1e-9


def check_budget(value) -> float:
    """A MAC fraction in (0, 1]; anything else is one OptionError line."""
    try:
        b = float(value)
    except (TypeError, ValueError):
        raise OptionError(f"budget must be a fraction of the plain model's MACs in (0, 1], got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(b) or not 0 < b <= 1:
        raise OptionError(f"budget must be a fraction of the plain model's MACs in (0, 1], got {value!r}")
    return b


def rule_candidates(units, k: int) -> list[tuple[str, np.ndarray]]:
    """(name, (K, N) mask) of every rule at K steps: presets first, then filled schedules."""
    presets: list[Preset] = []
    unet = all(u.name.startswith(("down_blocks", "up_blocks", "mid_block")) for u in units)
    for iv in range(2, max(2, k) + 1):
        if unet:
            br = 0
            while True:  # every branch id this U-Net has
                try:
                    p = Preset("deepcache", {"interval": iv, "branch": br})
                    p.mask(units, 2)
                except BlockmaskError:
                    break
                presets.append(p)
                br += 1
        presets.append(Preset("fora", {"interval": iv}))
        presets.append(Preset("blocks", {"interval": iv}))
    out = [("ones", np.ones((k, len(units)), bool))] + [(str(p), p.mask(units, k)) for p in presets]
    rows = {}
    for p in presets:
        if p.params["interval"] == 2 or k <= 2:
            m = p.mask(units, max(k, 2))
            rows[f"{p.name}" + (f":b{p.params['branch']}" if p.name == "deepcache" else "")] = m[1]
    for name, row in rows.items():
        for n in range(1, k + 1):
            pos = sorted({min(k - 1, int(round(k * j / n))) for j in range(n)} | {0})
            m = np.tile(row, (k, 1))
            m[pos] = True
            out.append((f"{name} rows + {len(pos)} full steps", m))
    return out


def shipped_masks(model) -> list[tuple[str, object]]:
    """(name, MaskFile) of the bundled masks made for this model (same fingerprint)."""

    fp = fingerprint(model)
    out = []
    for name, path in sorted(bundled_masks().items()):
        try:
            with open(path, encoding="utf-8") as f:
                head = f.read(4096)
            m = re.search(r'"fingerprint"\s*:\s*"([^"]*)"', head)
            if m is None or m.group(1) != fp:
                continue
            out.append((name, MaskFile.load(path)))
        except (OSError, BlockmaskError):
            continue
    return out


@dataclasses.dataclass
class Budget:
    """A mask source for :class:`blockmask.hooks.pipesteps.PipelineSteps`: the choice described above."""

    fraction: float
    shipped: list = dataclasses.field(default_factory=list)  # (name, MaskFile) for this model
    chosen: str | None = None  # what the last run chose, with its MAC fraction
    chosen_fraction: float | None = None
    needs_macs = True
    _choices: dict = dataclasses.field(default_factory=dict, repr=False)  # per (K, first row, calls, levels)

    def __str__(self) -> str:
        return f"budget:{self.fraction:g}"

    def candidates(self, units, k, levels, scheduler) -> list[tuple[str, np.ndarray, int]]:
        """(name, mask, preference) — 0 shipped, 1 preset, 2 filled schedule."""
        out = []
        for name, mf in self.shipped:
            if mf.mask.shape[1] != len(units):
                continue
            ts = (mf.scheduler or {}).get("timesteps")
            lv = np.asarray(ts, float) if ts and len(ts) == mf.num_steps else None
            try:
                out.append((f"shipped {name}", FixedMask(mf.mask, lv, True, name).at(k, levels, scheduler), 0))
            except BlockmaskError:
                continue
        out += [(n, m, 1 if ":" in n or n == "ones" else 2) for n, m in rule_candidates(units, k)]
        seen, unique = set(), []
        for name, m, pref in out:  # one mask under several names (blocks = fora on a U-Net): keep the first
            key = np.asarray(m, bool).tobytes()
            if key not in seen:
                seen.add(key)
                unique.append((name, m, pref))
        return unique

    def build(self, units, k, levels, scheduler, profile, calls, first: int = 0) -> np.ndarray:
        """The chosen (K, N) mask, costed over the rows this denoiser runs: from ``first`` (its first
        row in this run, computed in full) to the end of the run."""
        key = (k, first, None if calls is None else np.asarray(calls).tobytes(),
               None if levels is None else np.asarray(levels).tobytes())
        if key in self._choices:
            mask, self.chosen, self.chosen_fraction = self._choices[key]
            return mask
        if profile is None:
            raise OptionError("a budget needs the MACs of the denoiser's first call, which were not counted "
                              "(a denoiser compiled as a whole? compile its repeated blocks instead)")
        best, cheapest = None, math.inf
        window_calls = None if calls is None else np.asarray(calls, float)[first:]
        for name, mask, pref in self.candidates(units, k, levels, scheduler):
            run = mask[first:].copy()
            run[0] = True  # the denoiser's first step computes every unit
            r = profile.ratio(run, window_calls)
            cheapest = min(cheapest, r)
            if r > self.fraction * (1 + TOL):
                continue
            key = (pref > 0, -r, pref)  # shipped first; then the most compute; then presets before fills
            if best is None or key < best[0]:
                best = (key, name, mask, r)
        if best is None:
            where = f" from step {first}" if first else ""
            raise OptionError(f"budget {self.fraction:g} is out of reach at {k} steps{where}: the cheapest rule needs "
                              f"{cheapest:.3f} of the plain model's MACs (the part that runs at every step, "
                              f"plus one full step); raise the budget or use more steps")
        _, name, mask, r = best
        self.chosen, self.chosen_fraction = f"{self} → {name} ({r:.3f} of the MACs)", r
        self._choices[key] = (mask, self.chosen, r)
        return mask
