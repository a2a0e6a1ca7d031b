"""Timestep-aware loss scaling (METHOD.md §3): Δ_k from one unmasked run (Eq. 9), λ_k (Eq. 10)."""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import torch

from .adapters import adapter_for
from .errors import BlockmaskError
from .sample import Condition, build_conditioning, denoise, initial_noise


@torch.no_grad()
def feature_variation(model, scheduler, *, num_steps: int, seed: int = 0, batch: int = 2,
                      condition: Condition | None = None,
                      callback: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Δ_k = ||F*(k) − F*(k−1)|| / ||F*(k−1)|| of the unmasked model's output along one sampling run
    (K,); Δ_0 is NaN (no previous step)."""
    adapter = adapter_for(model)
    condition = condition or Condition()
    g = torch.Generator().manual_seed(seed)
    p = next(model.parameters())
    cond, cfg = build_conditioning(model, batch, condition, g)
    cond = cond.to(p.device, p.dtype)
    scheduler.set_timesteps(num_steps)
    x = initial_noise(model, batch, g, scheduler)
    prev = None
    delta = np.full(num_steps, np.nan)
    for k, t in enumerate(scheduler.timesteps):
        eps = denoise(model, adapter, scheduler, x, t, cond, condition.guidance_scale, cfg)
        if prev is not None:
            delta[k] = float((eps - prev).float().norm() / prev.float().norm().clamp_min(1e-12))
        prev = eps
        x = scheduler.step(eps, t, x, generator=g).prev_sample
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
        for name in ("lam", "low", "high"):
            if getattr(self, name) < 0:
                raise BlockmaskError(f"lambda {name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.tau <= 1:
            raise BlockmaskError(f"lambda threshold tau must be in [0, 1], got {self.tau}")

    def weights(self, delta: np.ndarray) -> np.ndarray:
        k = len(delta)
        if self.mode == "constant" or k < 2:
            return np.full(k, self.lam * self.high)
        d = np.asarray(delta[1:], float)
        lo, hi = np.nanmin(d), np.nanmax(d)
        norm = (d - lo) / (hi - lo) if hi > lo else np.zeros_like(d)
        lam = np.where(norm >= self.tau, self.low, self.high) * self.lam
        return np.concatenate([[self.lam * self.low], lam])
