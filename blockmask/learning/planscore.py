"""Scoring for the planner (:mod:`blockmask.learning.planner`): seed groups, cached per-sample errors against
the plain reference run, PSNR and the paired bootstrap of a PSNR gain."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from blockmask.adapters import adapter_for
from blockmask.learning.candidates import Candidate
from blockmask.sampling.sample import Condition

EPS = 1e-30


def psnr_db(mse: np.ndarray) -> float:
    m = float(np.mean(mse))
    return math.inf if m <= 0 else float(10 * np.log10(1.0 / m))


def bootstrap_gain(mse_base: np.ndarray, mse_new: np.ndarray, *, resamples: int = 1000,
                   seed: int = 0) -> tuple[float, float, float]:
    """(gain, low, high) in dB of ``mse_new`` over ``mse_base`` (paired per sample; PSNR of the
    pooled MSE, as blockmask reports it), with a 95% bootstrap interval over the samples."""
    a, b = np.asarray(mse_base, float), np.asarray(mse_new, float)
    gain = float(10 * np.log10(max(a.mean(), EPS) / max(b.mean(), EPS)))
    idx = np.random.default_rng(seed).integers(0, len(a), size=(resamples, len(a)))
    g = 10 * np.log10(np.maximum(a[idx].mean(1), EPS) / np.maximum(b[idx].mean(1), EPS))
    return gain, float(np.percentile(g, 2.5)), float(np.percentile(g, 97.5))


@dataclasses.dataclass(frozen=True)
class Group:
    """Samples from generator seeds ``seed``, ``seed + 1``, … one per chunk: the first chunk has
    ``first`` samples (None: ``chunk``; the planner screens on it), the others ``chunk``."""

    name: str
    seed: int
    samples: int
    chunk: int
    first: int | None = None

    @property
    def chunks(self) -> list[tuple[int, int]]:
        """(seed, batch) of each chunk."""
        first = min(self.first or self.chunk, self.samples)
        sizes = [first] + [min(self.chunk, self.samples - s) for s in range(first, self.samples, self.chunk)]
        return [(self.seed + j, b) for j, b in enumerate(sizes)]

    @property
    def seeds(self) -> list[int]:
        return [s for s, _ in self.chunks]


class Scorer:
    """Per-sample squared errors of a (steps, mask) against the plain ``ref_steps`` run, cached per
    chunk; the reference runs are made once."""

    def __init__(self, wb, ref_steps: int, *, guidance: float, bar=None):
        self.wb, self.ref_steps, self.guidance, self.bar = wb, ref_steps, guidance, bar
        self.runs = 0
        self.sample_steps = 0  # Σ samples × steps over the runs made (the references included)
        self._ref: dict[tuple[int, int], tuple[torch.Tensor, np.ndarray]] = {}
        self._err: dict[tuple, np.ndarray] = {}

    def condition(self, batch: int):
        n = adapter_for(self.wb.model).num_classes(self.wb.model)
        labels = None if n is None else [i % min(n, 10) for i in range(batch)]
        return Condition(class_labels=labels, guidance_scale=self.guidance)

    def _images(self, steps, mask, seed, batch, reuse: str = "hold") -> tuple[torch.Tensor, np.ndarray]:
        if self.bar is not None:
            self.bar.set_postfix_str(f"K={steps} seed {seed}", refresh=False)
        lat = self.wb.generate(mask, steps=steps, seed=seed, num_images=batch, condition=self.condition(batch),
                               reuse=reuse)
        self.runs += 1
        self.sample_steps += batch * steps
        if self.bar is not None:
            self.bar.update(1)
        return lat, self.wb.images(lat).numpy().astype(np.float64)

    def reference(self, seed: int, batch: int) -> tuple[torch.Tensor, np.ndarray]:
        if (seed, batch) not in self._ref:
            self._ref[(seed, batch)] = self._images(self.ref_steps, None, seed, batch)
        return self._ref[(seed, batch)]

    def errors(self, group: Group, cand: Candidate, *, chunks: int | None = None) -> np.ndarray:
        out = []
        for seed, batch in group.chunks[:chunks]:
            key = (seed, batch, *cand.key)
            if key not in self._err:
                ref = self.reference(seed, batch)[1]
                if cand.mask is None and cand.steps == self.ref_steps:
                    self._err[key] = np.zeros(batch)
                else:
                    img = self._images(cand.steps, cand.mask, seed, batch, cand.reuse)[1]
                    self._err[key] = ((img - ref) ** 2).reshape(batch, -1).mean(1)
            out.append(self._err[key])
        return np.concatenate(out)
