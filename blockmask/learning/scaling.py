"""Timestep-aware loss scaling (METHOD.md §3): Δ_k from one unmasked run (Eq. 9), λ_k (Eq. 10)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from blockmask.core.errors import BlockmaskError
from blockmask.core.validate import check_float
from blockmask.hooks.discover import discover_units
from blockmask.hooks.execution import MaskedExecution
from blockmask.sampling.sample import Condition, SamplingRun


@torch.no_grad()
def feature_variation(model, scheduler, *, num_steps: int, seed: int = 0, batch: int = 2,
                      condition: Condition | None = None,
                      callback: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Δ_k = ||F*(k) − F*(k−1)|| / ||F*(k−1)|| of the unmasked model's output along one sampling run
    (K,); Δ_0 is NaN (no previous step)."""
    run = SamplingRun(model, num_steps=num_steps, scheduler=scheduler, seed=seed, batch=batch, condition=condition)
    prev = None
    delta = np.full(num_steps, np.nan)
    for c in range(len(run)):  # a row's output is its first evaluation's (Heun: at σ_k)
        eps = run.call(c)
        if run.starts[c]:
            k = run.rows[c]
            if prev is not None:
                delta[k] = float((eps - prev).float().norm() / prev.float().norm().clamp_min(1e-12))
            prev = eps
            if callback is not None:
                callback(k + 1, num_steps)
    return delta


@dataclasses.dataclass(frozen=True)
class LambdaSchedule:
    """Eq. 10 (ours): normalize Δ over k ≥ 1 to [0, 1]; sensitive steps (Δ ≥ tau) get ``low``,
    smooth steps get ``high``; ``constant`` ignores Δ (ablation)."""

    mode: str = "piecewise"  # piecewise | constant
    lam: float = 1.0  # overall scale: λ_k = lam × level
    low: float = 0.1  # level for sensitive steps
    high: float = 1.0  # level for smooth steps
    tau: float = 0.5  # threshold on the normalized Δ

    def __post_init__(self):
        if self.mode not in ("piecewise", "constant"):
            raise BlockmaskError(f"lambda mode must be piecewise or constant, got {self.mode!r}")

        for name, label in (("lam", "lambda"), ("low", "lambda low"), ("high", "lambda high")):
            check_float(label, getattr(self, name), low=0)
        check_float("lambda threshold tau", self.tau, low=0, high=1)

    def weights(self, delta: np.ndarray) -> np.ndarray:
        k = len(delta)
        if self.mode == "constant" or k < 2:
            return np.full(k, self.lam * self.high)
        d = np.asarray(delta[1:], float)
        lo, hi = np.nanmin(d), np.nanmax(d)
        norm = (d - lo) / (hi - lo) if hi > lo else np.zeros_like(d)
        lam = np.where(norm >= self.tau, self.low, self.high) * self.lam
        return np.concatenate([[self.lam * self.low], lam])


@dataclasses.dataclass
class Sensitivity:
    """How much an output error at step k reaches the final sample (ours; ``feature_norm="sensitivity"``).

    For each probed step k, every unit at k reuses its step-(k−1) output while all other steps run
    the plain model: ``local[k]`` is the resulting mean squared error of the step's output and
    ``final[k]`` that of the final sample. ``weight[k] = final[k] / local[k]`` converts a step's
    output error into final-sample error; unprobed steps are interpolated (log-linear in k).
    """

    probed: list[int]
    local: list[float]
    final: list[float]

    def weights(self, num_steps: int) -> np.ndarray:
        """(K,) feature-error weights, scaled so that skipping a whole step costs final[k] / mean(final)
        (1 on average, like the Δ-relative norm); weight[0] is NaN (row 0 is never learned)."""
        k = np.asarray(self.probed, float)
        w = np.log(np.maximum(np.asarray(self.final), 1e-30) / np.maximum(np.asarray(self.local), 1e-30))
        out = np.full(num_steps, np.nan)
        out[1:] = np.exp(np.interp(np.arange(1, num_steps), k, w))
        return out / max(float(np.mean(self.final)), 1e-30)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def probe_steps(num_steps: int, probes: int | None) -> list[int]:
    """Steps 1..K−1, or ``probes`` of them spread evenly (first and last included)."""
    if probes is None or probes >= num_steps - 1:
        return list(range(1, num_steps))
    if probes < 2:
        raise BlockmaskError(f"sensitivity probes must be >= 2, got {probes}")
    return sorted({int(round(v)) for v in np.linspace(1, num_steps - 1, probes)})


@torch.no_grad()
def output_sensitivity(model, scheduler, *, num_steps: int, seed: int = 0, batch: int = 2,
                       condition: Condition | None = None, probes: int | None = 24,
                       callback: Callable[[int, int], None] | None = None) -> Sensitivity:
    """Measure :class:`Sensitivity` along the plain model's trajectory from Gaussian noise (no data).

    Forward passes only: the reference run, then for each probed step k the steps k−1..K−1 again
    (restarting from the stored latents), so the cost is about ``len(probes) × K / 2`` steps.
    """

    run = SamplingRun(model, num_steps=num_steps, scheduler=scheduler, seed=seed, batch=batch, condition=condition)
    first_call = [c for c in range(len(run)) if run.starts[c]]
    snaps, eps_ref = [], []  # state entering each row: latents, scheduler (multistep history), RNG
    for c in range(len(run)):
        if run.starts[c]:
            snaps.append(run.snapshot())
        eps = run.call(c)
        if run.starts[c]:
            eps_ref.append(eps)
    final_ref = run.latents.float()
    steps = probe_steps(num_steps, probes)
    n = len(discover_units(model))
    local, final = [], []
    for j, k in enumerate(steps):
        mask = np.ones((num_steps, n), bool)
        mask[k] = False
        run.restore(snaps[k - 1])
        with MaskedExecution(model, mask) as ex:
            for c in range(first_call[k - 1], len(run)):
                eps = run.call(c, ex)
                if c == first_call[k]:
                    local.append(float((eps - eps_ref[k]).float().pow(2).mean()))
        final.append(float((run.latents.float() - final_ref).pow(2).mean()))
        if callback is not None:
            callback(j + 1, len(steps))
    return Sensitivity(steps, local, final)
