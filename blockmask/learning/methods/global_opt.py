"""Global optimisation through the whole sampling chain (DiP-GO-style, Zhu et al. 2024) as a mask producer.

All K×N gates are learned at once: scores ``s = σ(θ)``, a straight-through Bernoulli mask per
iteration (row 0 all ones), a whole K-step sampling run from fixed Gaussian noise with the relaxed
mask (:class:`blockmask.learning.methods.chain.SoftChain`: gradients through latents and caches), and

    L = ‖x_0 − x_0*‖² / ‖x_0*‖²  +  λ · max(0, E_s[MAC ratio] − B)

where x_0* is the plain model's final sample from the same noise and E_s[MAC ratio] the expected
cost of the gates (unit MACs, nesting ignored). Backpropagating through all K steps keeps every
step's activations alive: memory grows linearly in K (``checkpoint=True``: each step's forward is
recomputed in the backward pass, which keeps only the step inputs and caches). The final mask is
the highest-scoring cells within the budget (:func:`blockmask.learning.methods.budget.fit_scores`).

Before any work, the graph's size is estimated from one step (saved tensors of one relaxed forward
× K) and a run that would not fit in the available memory is refused with one line.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch

from blockmask.core.errors import BlockmaskError
from blockmask.core.validate import check_float, check_int
from blockmask.learning.methods.budget import fit_scores
from blockmask.learning.methods.chain import SoftChain
from blockmask.learning.methods.progress import bar as progress_bar
from blockmask.learning.run import check_budget, peak_memory
from blockmask.learning.train import freeze
from blockmask.sampling.sample import Condition, SamplingRun


@dataclasses.dataclass(frozen=True)
class GlobalConfig:
    """Options of the global (whole-chain) optimiser."""

    iters: int = dataclasses.field(default=20, metadata={"help": "optimisation iterations (each a full K-step run)"})
    batch: int = dataclasses.field(default=2, metadata={"help": "noise seeds per iteration (fixed)"})
    lr: float = dataclasses.field(default=0.2, metadata={"help": "Adam learning rate on the logits"})
    lam: float = dataclasses.field(default=10.0, metadata={"help": "weight of the budget penalty"})
    init_prob: float = dataclasses.field(default=0.9, metadata={"help": "initial gate probability"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the noise and the gate samples"})
    checkpoint: bool = dataclasses.field(default=False, metadata={
        "help": "gradient checkpointing: recompute each step's forward in the backward pass"})
    memory_limit_gb: float | None = dataclasses.field(default=None, metadata={
        "help": "memory the graph may use (GiB; default: what the device has available)"})

    def __post_init__(self):
        check_int("iters", self.iters, low=1)
        check_int("batch", self.batch, low=1)
        check_int("seed", self.seed, low=0)
        check_float("learning rate", self.lr, low=0, low_open=True)
        check_float("lambda", self.lam, low=0)
        check_float("init_prob", self.init_prob, low=0, high=1, low_open=True, high_open=True)
        if self.memory_limit_gb is not None:
            check_float("memory limit", self.memory_limit_gb, low=0, low_open=True)

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def available_memory(device: torch.device) -> float | None:
    """Bytes free for the graph: CUDA's free memory, else the system's MemAvailable (None: unknown)."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class _Run:
    """Fixed noise, conditioning and scheduler of the optimisation runs."""

    def __init__(self, wb, steps: int, cfg: GlobalConfig, condition: Condition | None):
        self.steps = steps
        self.loop = SamplingRun(wb.model, num_steps=steps, scheduler=wb.scheduler(), seed=cfg.seed, batch=cfg.batch,
                                condition=condition)
        self.rows = self.loop.rows  # the mask row of each model call
        self.calls = np.bincount(self.rows, minlength=steps).astype(float)  # model calls per row
        self.start = self.loop.snapshot()

    def run(self, chain: SoftChain | None, gates: torch.Tensor | None, checkpoint: bool = False,
            last: int | None = None) -> torch.Tensor:
        """Final latents of a run with per-step gates (K, N) (None: the plain model); ``last``:
        stop after that many steps (the memory probe). The one sampling loop (:class:`SamplingRun`),
        stepped once per model call: a row's gates hold for all its calls (Heun: two)."""
        loop = self.loop
        loop.restore(self.start)
        for c, k in enumerate(self.rows):
            if last is not None and k >= last:
                break

            def step(x_in, m, c=c, k=k, caches=None if chain is None else list(chain.cache)):
                if chain is not None:
                    chain.cache, chain.gates = list(caches), (None if k == 0 or m is None else m)
                return loop.predict(c, x_in)

            m = None if gates is None else gates[k]
            if checkpoint and k > 0 and torch.is_grad_enabled():
                from torch.utils.checkpoint import checkpoint as ckpt

                eps = ckpt(step, loop.latents, m, use_reentrant=False)
            else:
                eps = step(loop.latents, m)
            loop.advance(c, eps)
        return loop.latents


def _graph_bytes(run: _Run, chain: SoftChain, gates: torch.Tensor, checkpoint: bool) -> float:
    """Bytes the autograd graph keeps for two steps (the second one relaxed): the per-step cost."""
    seen, total = set(), [0.0]

    def pack(t):
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in seen:
            seen.add(key)
            total[0] += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run.run(chain, gates, checkpoint, last=2)
    return total[0]


def check_memory(wb, steps: int, cfg: GlobalConfig, run: _Run, chain: SoftChain, gates: torch.Tensor) -> dict:
    """Estimate the whole-chain graph (one probed step × K) and refuse what cannot fit."""
    per_step = _graph_bytes(run, chain, gates, cfg.checkpoint)
    need = per_step * steps
    limit = cfg.memory_limit_gb * 2**30 if cfg.memory_limit_gb is not None else available_memory(wb.device)
    if limit is not None and need > limit:
        hint = "" if cfg.checkpoint else ", or use gradient checkpointing"
        raise BlockmaskError(f"global optimisation at K={steps} needs about {need / 2**30:.3g} GiB for the graph through "
                             f"all steps ({per_step / 2**20:.3g} MiB per step at batch {cfg.batch}); only "
                             f"{limit / 2**30:.3g} GiB available: lower K or the batch{hint}")
    return {"graph_bytes_per_step": per_step, "graph_bytes_estimate": need, "limit_bytes": limit}


def make_mask(wb, steps: int, target: float, cfg: GlobalConfig | None = None, *,
              condition: Condition | None = None, progress: bool = False) -> tuple[np.ndarray, dict]:
    """The globally optimised mask at MAC budget ``target``; returns (rectified mask, meta)."""
    cfg = cfg or GlobalConfig()

    check_budget(wb, steps, target)
    n = len(wb.units)
    p = wb.macs
    dev = next(wb.model.parameters()).device
    costs = torch.tensor(np.asarray(p.unit_macs, float), dtype=torch.float32, device=dev)
    full = p.full_step
    restore = freeze(wb.model)
    t0 = time.perf_counter()
    try:
        run = _Run(wb, steps, cfg, condition)
        calls = torch.tensor(run.calls, dtype=torch.float32, device=dev)  # MACs are per model call
        theta = torch.full((steps, n), math.log(cfg.init_prob / (1 - cfg.init_prob)), device=dev, requires_grad=True)
        with SoftChain(wb.model) as chain:
            mem = check_memory(wb, steps, cfg, run, chain, torch.sigmoid(theta))  # before any optimisation
            chain.reset()
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            with torch.no_grad():
                ref = run.run(chain, None).float()  # gates None at every step: the plain model
            chain.reset()
            power = ref.pow(2).mean().clamp_min(1e-12)
            opt = torch.optim.Adam([theta], lr=cfg.lr)
            g = torch.Generator().manual_seed(cfg.seed + 1)
            losses = []
            bar = progress_bar(range(cfg.iters), desc=f"global optimisation (K={steps})", progress=progress)
            for _ in bar:
                s = torch.sigmoid(theta)
                b = (torch.rand(s.shape, generator=g) < s.detach().cpu()).to(s)
                m = b + s - s.detach()  # straight-through Bernoulli (as blockmask's own trainer)
                final = run.run(chain, m, cfg.checkpoint).float()
                err = (final - ref).pow(2).mean() / power
                expected = (full * calls.sum() - (calls[1:, None] * costs * (1 - s[1:])).sum()) / (full * calls.sum())
                loss = err + cfg.lam * torch.relu(expected - target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                chain.reset()
                losses.append(float(loss.detach()))
                bar.set_postfix(err=f"{float(err.detach()):.3g}", macs=f"{float(expected.detach()):.2f}")
        scores = torch.sigmoid(theta.detach()).cpu().numpy().astype(float)
    finally:
        restore()
    seconds = time.perf_counter() - t0
    scores[0] = np.inf
    mask = fit_scores(wb, scores, target)
    meta = {"method": "global", "config": cfg.to_json(), "scores": np.where(np.isfinite(scores), scores, 1.0).tolist(),
            "losses": losses, "train_seconds": seconds, "memory": {**mem, **peak_memory(wb.device)},
            "needs": {"data": "none (Gaussian noise)",
                      "training": f"{cfg.iters} backward passes through all {steps} steps"}}
    return mask, meta
