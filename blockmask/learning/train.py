"""Mask training, one sampling step at a time (METHOD.md §2–3).

For k = 1..K−1: the state entering step k (latents and unit caches) comes from the already
binarized rows 0..k−1, starting from Gaussian noise (no data set). Scores s_k = σ(θ_k) are
optimized for ``iters`` iterations on

    L_k = ||F − F*||² / (||F*||² · Δ_k²)  +  λ_k (α L_sparse + β mean(s(1−s)))   (Eq. 5–8, 11)

where F is the output with relaxed gates m ~ s (Eq. 4) and F* the frozen model on the same input.
Then M[k] = s_k > 0.5 and step k runs once with the binary row (reused caches and all), which
gives the state for step k+1. Only one step's graph is alive.

Choices marked (ours) in METHOD.md, all configurable:

* ``feature_norm="step"`` (default): the feature error is measured relative to how much the output
  changes at this step (Δ_k of Eq. 9): skipping every unit costs about 1 at every step, so λ means
  the same on every model, step and step count. Without it, steps whose output barely changes (the
  noisiest ones, for ε-prediction) look free to skip even though their errors shape everything
  after them. ``"mean"`` uses the run's mean Δ² instead.
* ``feature_norm="sensitivity"``: weight the feature error by how much an output error at step k
  reaches the final sample (:func:`blockmask.learning.scaling.output_sensitivity`, forward passes only); with
  ``accumulate`` earlier steps' errors are carried along, so a stale cache drifting further costs more.
* ``sparsity="macs"`` (default): L_sparse = Σ_i s_i c_i / Σ_i c_i (c_i: the unit's MACs); ``"count"``
  is Eq. 6 as written, mean(s). ``feature_norm="none"``: Eq. 5 as written, the plain squared error.
* ``lambda_mode="piecewise"`` applies Eq. 10 to Δ_k's rank among the steps (``lambda_norm="rank"``),
  not to min–max normalised Δ (:meth:`TrainConfig.lambda_weights`: with the Δ_k² of
  ``feature_norm="step"``, one outlier step left λ_k constant). Measured on mnist-ddpm, a λ_k that acts
  costs PSNR at equal MACs, so the default is ``lambda_mode="constant"`` (docs/RESULTS.md).

``recipe="paper"`` (:data:`RECIPES`): the paper's Eq. 5 error, Eq. 6 mean sparsity, Eq. 10 piecewise
λ on min–max normalised Δ, the bimodal term, and Eq. 12 rectification (:mod:`blockmask.learning.run`).

The model is frozen while a mask is learned (eval mode, no parameter gradients; both restored after).
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from blockmask.core.errors import BlockmaskError
from blockmask.core.schedulers import calls_per_row
from blockmask.core.validate import check_float, check_int
from blockmask.hooks.execution import MaskedExecution
from blockmask.learning.scaling import LambdaSchedule, Sensitivity, feature_variation, output_sensitivity
from blockmask.sampling import distributed
from blockmask.sampling.sample import Condition, SamplingRun

FEATURE_NORMS = ("step", "mean", "sensitivity", "none")
LAMBDA_NORMS = ("rank", "minmax")
# Named sets of choices; "blockmask" is this project's default, "paper" the paper's Eq. 5/6/10/12.
RECIPES = {
    "blockmask": {},
    "paper": {"feature_norm": "none", "sparsity": "count", "lambda_mode": "piecewise", "sampler": "random",
              "lambda_norm": "minmax"},
}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (all recorded in the mask file's meta)."""

    steps: int  # K sampling steps
    iters: int = 20  # optimization iterations per step
    batch: int = 4  # noise seeds trained on at once
    lr: float = 0.3  # Adam learning rate on the logits (Adam moves each logit by about lr per iteration)
    alpha: float = 1.0  # weight of the sparsity term (Eq. 6)
    beta: float = 0.5  # weight of the bimodal term (Eq. 7)
    lam: float = 1.0  # λ scale (Eq. 10/11); relative to a typical step's output change (see module doc)
    lambda_mode: str = "constant"  # constant (measured best, docs/RESULTS.md) | piecewise (Eq. 10: timestep-aware)
    lambda_low: float = 0.1  # level at sensitive steps
    lambda_high: float = 1.0  # level at smooth steps
    tau: float = 0.5  # threshold on normalized Δ
    sampler: str = "random"  # random (straight-through Bernoulli) | gumbel (Gumbel-sigmoid)
    temperature: float = 0.5  # Gumbel-sigmoid temperature
    init_prob: float = 0.9  # initial s (logits = logit(init_prob))
    seed: int = 0
    guidance_scale: float = 1.0
    class_labels: tuple[int, ...] | None = None
    feature_norm: str = "step"  # step | mean | sensitivity (see module doc)
    probes: int | None = 24  # sensitivity: steps probed (None: every step); the rest are interpolated
    accumulate: bool = True  # sensitivity: charge errors that add up with earlier steps' errors
    sparsity: str = "macs"  # macs: s weighted by each unit's MACs (ours); count: mean(s) as Eq. 6
    recipe: str = "blockmask"  # blockmask | paper: see RECIPES (set its fields with TrainConfig.for_recipe)
    lambda_norm: str = "rank"  # how Δ is normalised for Eq. 10: rank (ours) | minmax (the paper's); see lambda_weights

    @classmethod
    def for_recipe(cls, recipe: str, **fields) -> "TrainConfig":
        """A config with ``recipe``'s choices; explicit ``fields`` other than those choices are kept."""
        if recipe not in RECIPES:
            raise BlockmaskError(f"unknown recipe {recipe!r}; choose from {', '.join(RECIPES)}")
        return cls(**{**fields, **RECIPES[recipe], "recipe": recipe})

    def __post_init__(self):
        check_int("steps", self.steps, low=2, high=10_000)
        check_int("iters", self.iters, low=1, high=1_000_000)
        check_int("batch", self.batch, low=1, high=4096)
        if self.class_labels is not None:
            if isinstance(self.class_labels, (str, bytes)) or not hasattr(self.class_labels, "__iter__"):
                raise BlockmaskError(f"class_labels must be a list of integers, got {type(self.class_labels).__name__}")
            for v in self.class_labels:
                check_int("class label", v, low=0)
        check_int("seed", self.seed, low=0)
        check_float("learning rate", self.lr, low=0, low_open=True)
        for name in ("alpha", "beta", "lam", "lambda_low", "lambda_high"):
            check_float(name.replace("lam", "lambda") if name == "lam" else name, getattr(self, name), low=0)
        check_float("tau", self.tau, low=0, high=1)
        check_float("temperature", self.temperature, low=0, low_open=True)
        check_float("init_prob", self.init_prob, low=0, high=1, low_open=True, high_open=True)
        check_float("guidance scale", self.guidance_scale, low=0)
        checks = [(self.recipe in RECIPES, f"unknown recipe {self.recipe!r}; choose from {', '.join(RECIPES)}"),(self.steps >= 2, f"steps must be >= 2, got {self.steps}"),
                  (self.iters >= 1, f"iters must be >= 1, got {self.iters}"),
                  (self.batch >= 1, f"batch must be >= 1, got {self.batch}"),
                  (self.lr > 0, f"learning rate must be > 0, got {self.lr}"),
                  (self.alpha >= 0 and self.beta >= 0, "alpha and beta must be >= 0"),
                  (self.sampler in ("random", "gumbel"), f"sampler must be random or gumbel, got {self.sampler!r}"),
                  (self.temperature > 0, f"temperature must be > 0, got {self.temperature}"),
                  (0 < self.init_prob < 1, f"init_prob must be in (0, 1), got {self.init_prob}"),
                  (self.feature_norm in FEATURE_NORMS,
                   f"feature_norm must be one of {', '.join(FEATURE_NORMS)}, got {self.feature_norm!r}"),
                  (self.probes is None or self.probes >= 2, f"probes must be >= 2, got {self.probes}"),
                  (self.sparsity in ("count", "macs"), f"sparsity must be count or macs, got {self.sparsity!r}"),
                  (self.lambda_norm in LAMBDA_NORMS,
                   f"lambda_norm must be one of {', '.join(LAMBDA_NORMS)}, got {self.lambda_norm!r}")]
        for ok, msg in checks:
            if not ok:
                raise BlockmaskError(msg)
        self.lambda_schedule()  # validates λ settings

    def lambda_schedule(self) -> LambdaSchedule:
        return LambdaSchedule(self.lambda_mode, self.lam, self.lambda_low, self.lambda_high, self.tau)

    def lambda_weights(self, delta: np.ndarray) -> np.ndarray:
        """λ_k (K,) of Eq. 10 from Δ (K,; Δ_0 NaN).

        ``lambda_norm="minmax"`` (the paper's): Δ min–max normalised over k ≥ 1, λ_low where it is ≥ τ.
        ``"rank"`` (ours, the default): Δ_k replaced by its rank among the steps, (rank) / (K − 2) ∈ [0, 1],
        so τ = 0.5 marks the half of the steps whose output changes most as sensitive. Why: with
        ``feature_norm="step"`` the feature error is divided by Δ_k², so the loss no longer sees how
        large Δ_k is and λ_k is the only timestep signal left; under min–max one outlier (an
        ε-model's last step: Δ = 0.40 against a median 0.015 on mnist-ddpm, K = 50) puts every other
        step below τ, and λ_k was constant on 48 of the 49 learned rows. A rank is unchanged by any
        increasing rescaling of Δ (Δ² included), so no per-step normalisation can cancel it.
        """
        d = np.array(delta, dtype=float)
        if self.lambda_norm == "rank" and len(d) > 2:
            v = d[1:]
            ok = np.isfinite(v)
            if ok.sum() > 1:
                order = np.argsort(np.argsort(v[ok], kind="stable"), kind="stable")
                v = np.full_like(v, np.nan)
                v[ok] = order / (ok.sum() - 1)
                d[1:] = v
        return self.lambda_schedule().weights(d)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["class_labels"] = None if self.class_labels is None else list(self.class_labels)
        return d


@dataclasses.dataclass
class StepReport:
    """What the callback receives after each learned step."""

    k: int
    steps: int
    loss_first: float
    loss_last: float
    kept: float  # fraction of units computed in row k
    macs_ratio: float  # cumulative MAC ratio of rows 0..k
    seconds: float


@dataclasses.dataclass
class TrainState:
    """Progress: the rows learned so far (a checkpoint is this, as JSON)."""

    rows: list[list[int]]
    scores: list[list[float]]
    losses: list[list[float]]
    seconds: list[float]
    delta: list[float | None]
    lam: list[float]
    sensitivity: dict | None = None  # Sensitivity.to_json() when feature_norm == "sensitivity"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def _relaxed(s: torch.Tensor, cfg: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    if cfg.sampler == "random":  # straight-through Bernoulli: value b, gradient of s
        b = (torch.rand(s.shape, generator=gen) < s.detach().cpu()).to(s)
        return b + s - s.detach()
    u = torch.rand(s.shape, generator=gen).clamp(1e-6, 1 - 1e-6).to(s)  # Gumbel-sigmoid
    logit = torch.log(s) - torch.log1p(-s)
    return torch.sigmoid((logit + torch.log(u) - torch.log1p(-u)) / cfg.temperature)


@dataclasses.dataclass(frozen=True)
class Observers:
    """Who hears about a run: ``checkpoint(state)`` after every step (write it atomically; a resumed run
    equals an uninterrupted one), ``callback(report)`` after every learned step, a tqdm bar if ``progress``."""

    checkpoint: Callable[[TrainState], None] | None = None
    callback: Callable[[StepReport], None] | None = None
    progress: bool = True


def train_mask(model: torch.nn.Module, scheduler, cfg: TrainConfig, macs, *, condition: Condition | None = None,
               state: TrainState | None = None, observers: Observers = Observers()) -> TrainState:
    """Learn a K×N mask step by step; resumes from ``state`` (rows 0..len−1 are replayed, not relearned).
    ``macs``: a :class:`blockmask.hooks.costs.MacProfile` (``unit_macs``, ``remainder``: the MAC term)."""
    frozen = freeze(model)
    try:
        return _train(model, scheduler, cfg, macs, condition, state, observers)
    finally:
        frozen()


def freeze(model: torch.nn.Module) -> Callable[[], None]:
    """Eval mode and no parameter gradients; returns the function that restores both."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)

    def restore():
        for p, f in flags:
            p.requires_grad_(f)
        model.train(was_training)

    return restore


def _train(model, scheduler, cfg: TrainConfig, macs, condition, state, observers: Observers) -> TrainState:
    unit_macs, remainder = macs.unit_macs, macs.remainder
    checkpoint, callback, progress = observers.checkpoint, observers.callback, observers.progress
    k_steps = cfg.steps
    n = len(unit_macs)
    if condition is None:
        condition = Condition(class_labels=list(cfg.class_labels) if cfg.class_labels else None)
    elif condition.guidance_scale not in (1.0, cfg.guidance_scale):
        raise BlockmaskError(f"guidance scale given twice ({condition.guidance_scale} and {cfg.guidance_scale}); "
                             "set TrainConfig.guidance_scale only")
    condition = dataclasses.replace(condition, guidance_scale=cfg.guidance_scale)
    if state is None:
        delta = feature_variation(model, scheduler, num_steps=k_steps, seed=cfg.seed, batch=cfg.batch,
                                  condition=condition)
        lam = cfg.lambda_weights(delta)
        sens = None
        if cfg.feature_norm == "sensitivity":
            sens = output_sensitivity(model, scheduler, num_steps=k_steps, seed=cfg.seed, batch=cfg.batch,
                                      condition=condition, probes=cfg.probes).to_json()
        state = TrainState([[1] * n], [[1.0] * n], [[]], [0.0], [None if math.isnan(d) else float(d) for d in delta],
                           lam.tolist(), sens)
    done = len(state.rows)
    p = next(model.parameters())
    run = SamplingRun(model, num_steps=k_steps, scheduler=scheduler, seed=cfg.seed, batch=cfg.batch, condition=condition)
    # Multi-process: each process trains on its slice of the (same) noise batch.
    sl = distributed.batch_slice(cfg.batch, p.device)
    run.keep(sl)
    mask = np.ones((k_steps, n), dtype=bool)
    for k, row in enumerate(state.rows):
        mask[k] = np.asarray(row, bool)
    full = remainder + float(np.sum(unit_macs))
    calls = calls_per_row(scheduler, k_steps)  # MACs per model call (Heun: two per row, the last one)
    d = np.array([np.nan if v is None else v for v in state.delta], float)
    mean_scale = float(np.nanmean(d[1:] ** 2)) if np.isfinite(d[1:]).any() else 1.0

    weights = None if state.sensitivity is None else Sensitivity(**state.sensitivity).weights(k_steps)

    def feat_scale(k: int) -> tuple[float, bool]:  # (scale, relative to ||F*||²): see module doc
        if weights is not None:
            return 1.0 / max(float(weights[k]), 1e-30), False
        if cfg.feature_norm == "none":  # Eq. 5 as written
            return 1.0, False
        v = d[k] ** 2 if cfg.feature_norm == "step" and np.isfinite(d[k]) else mean_scale
        return (v if v > 0 else 1.0), True
    # Eq. 6 averages s over units; sparsity="macs" averages it weighted by unit cost instead.
    costs = np.asarray(unit_macs, float)
    unit_weight = torch.tensor(costs / costs.sum() if cfg.sparsity == "macs" and costs.sum() > 0
                               else np.full(n, 1.0 / n), dtype=torch.float32, device=p.device)
    ex = MaskedExecution(model, mask)
    mask = ex.mask  # the execution's own (validated) copy: rows learned below must reach it
    # Coherent accumulation (sensitivity norm): A = Σ_{j<k} √w_j (F_j − F*_j), the earlier steps'
    # errors in final-sample units; step k's loss ||A + √w_k e_k||² − ||A||² also charges an error
    # that points the same way as the ones before it (a stale cache drifting further).
    acc = None
    bar = tqdm(total=k_steps, initial=done, desc="training mask", disable=not progress)
    rows = run.rows  # the mask row of each model call: a row is learned at its first call
    with ex:
        for c in range(len(run)):
            k, first = rows[c], run.starts[c]
            target = None
            if first and k >= 1 and (k >= done or (weights is not None and cfg.accumulate)):
                with torch.no_grad(), ex.reference():
                    target = run.predict(c).float()
            if first and k >= done:
                t0 = time.perf_counter()
                obj = RowObjective(target, float(state.lam[k]), *feat_scale(k), unit_weight=unit_weight,
                                   acc=None if weights is None or not cfg.accumulate else acc)
                row, scores, losses = _learn_row(run, c, ex, cfg, obj)
                mask[k] = row
                state.rows.append(row.astype(int).tolist())
                state.scores.append(scores)
                state.losses.append(losses)
                state.seconds.append(time.perf_counter() - t0)
            ex.set_step(k)
            with torch.no_grad():
                eps = run.predict(c)
                if target is not None and weights is not None and cfg.accumulate:
                    err = math.sqrt(float(weights[k])) * (eps.float() - target)
                    acc = err if acc is None else acc + err
                run.advance(c, eps)
            last = c + 1 == len(rows) or rows[c + 1] != k  # the row's last evaluation
            if last and k >= done:
                if checkpoint is not None:
                    checkpoint(state)
                c_k = calls[: k + 1]
                ratio = (c_k @ (remainder + mask[: k + 1] @ unit_macs)) / (full * c_k.sum())
                rep = StepReport(k, k_steps, state.losses[k][0], state.losses[k][-1], float(mask[k].mean()),
                                 float(ratio), state.seconds[k])
                bar.set_postfix(loss=f"{rep.loss_last:.4f}", kept=f"{rep.kept:.2f}", macs=f"{rep.macs_ratio:.2f}")
                bar.update(1)
                if callback is not None:
                    callback(rep)
    bar.close()
    return state


@dataclasses.dataclass
class RowObjective:
    """Step k's objective (Eq. 5 + 6): the plain prediction, λ_k, the feature scale (relative to
    ||F*||² or not), the earlier steps' accumulated error (coherent mode) and the units' weights."""

    target: torch.Tensor
    lam: float
    feat_scale: float = 1.0
    relative: bool = True
    acc: torch.Tensor | None = None
    unit_weight: torch.Tensor | None = None


def _learn_row(run: SamplingRun, c: int, ex, cfg: TrainConfig, obj: RowObjective):
    """Row ``rows[c]`` of the mask, learned at model call ``c`` of ``run`` (its first call)."""
    target, lam_k, feat_scale, relative, acc, unit_weight = (obj.target, obj.lam, obj.feat_scale, obj.relative,
                                                             obj.acc, obj.unit_weight)
    k = run.rows[c]
    n = len(ex.units)
    dev = run.latents.device
    procs = distributed.world_size()
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + k)  # per-step stream: resume-exact
    # Global (all processes) element count and ||F*||^2, so every process optimizes the same loss.
    numel = float(distributed.all_reduce_sum(torch.tensor([float(target.numel())], device=dev), dev))
    power = distributed.all_reduce_sum(target.pow(2).sum().reshape(1), dev) / numel if relative else torch.ones(1, device=dev)
    denom = (power * feat_scale).clamp_min(1e-30)
    theta = torch.full((n,), math.log(cfg.init_prob / (1 - cfg.init_prob)), device=dev, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=cfg.lr)
    ex.set_step(k)
    losses = []
    for _ in range(cfg.iters):
        s = torch.sigmoid(theta)
        m = _relaxed(s, cfg, gen)
        with ex.soft_gates(m):
            out = run.predict(c).float()
        err = out - target
        feat = err.pow(2).sum() / (numel * denom)  # this process's share of Eq. 5
        if acc is not None:  # cross term with the accumulated error (see train_mask)
            feat = feat + 2 * (acc * err).sum() / (numel * denom.sqrt())
        sparse = s.mean() if unit_weight is None else (s * unit_weight).sum()
        loss = feat + lam_k * (cfg.alpha * sparse + cfg.beta * (s * (1 - s)).mean()) / procs
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if procs > 1:
            distributed.all_reduce_sum(theta.grad, dev)
        opt.step()
        losses.append(float(distributed.all_reduce_sum(loss.detach().reshape(1), dev)))
        del out, feat, loss, m, s
    scores = torch.sigmoid(theta.detach()).cpu()
    row = (scores > 0.5).numpy()
    if not row.all():  # the binary row must beat computing everything on the objective itself
        b = torch.tensor(row, dtype=torch.float32, device=dev)
        with torch.no_grad(), ex.soft_gates(b):
            err = run.predict(c).float() - target
        feat = distributed.all_reduce_sum(err.pow(2).sum().reshape(1), dev) / (numel * denom)
        if acc is not None:
            feat = feat + 2 * distributed.all_reduce_sum((acc * err).sum().reshape(1), dev) / (numel * denom.sqrt())
        w = unit_weight if unit_weight is not None else torch.full((n,), 1.0 / n, device=dev)
        if float(feat) + lam_k * cfg.alpha * float((b * w).sum()) > lam_k * cfg.alpha * float(w.sum()):
            row = np.ones(n, dtype=bool)
    return row, [float(v) for v in scores], losses
