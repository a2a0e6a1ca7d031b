"""A data-trained router (Learning-to-Cache, Ma et al. 2024, "L2C-style") as a mask producer.

A router ``β = σ(θ) ∈ [0, 1]^{K×N}`` (per step, per unit, input-independent, as L2C's) is trained
with the standard diffusion training signal on *real images* — the "extra data" column of
docs/METHODS_COMPARED.md. One iteration, at a step k ≥ 1 drawn in turn:

1. a batch of MNIST images x₀ from the data folder and noise ε; the noised images
   ``x_{k−1} = add_noise(x₀, ε, t_{k−1})`` and ``x_k = add_noise(x₀, ε, t_k)`` (the scheduler's own
   ``add_noise``, the forward process of training);
2. the model at t_{k−1} on x_{k−1} fills every unit's cache;
3. at t_k every unit returns ``β_ki · b_i(x) + (1 − β_ki) · C_i`` (Eq. 4 with the router's gate);
4. ``L = ‖ε̂ − ε‖² / ‖ε̂* − ε‖² + λ Σ_i w_i β_ki``: the denoising loss relative to the full model's
   at the same input, plus the MAC-weighted router mass (w_i = the unit's share of the MACs).

The mask keeps the highest router values within the MAC budget
(:func:`blockmask.learning.methods.budget.fit_scores`). Images are mapped to the model's latent shape: through
the VAE when the model came with one, else resized and channel-repeated (the bundled MNIST
models take them as they are; for the random-init test models this is only shape plumbing).
A missing data folder is one clear error before any work.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from blockmask.adapters import adapter_for
from blockmask.core.errors import BlockmaskError
from blockmask.core.schedulers import call_rows, row_starts
from blockmask.core.validate import check_float, check_int
from blockmask.data.mnist import default_mnist_dir, load_mnist, to_model_range
from blockmask.hooks.execution import MaskedExecution
from blockmask.learning.methods.budget import fit_scores
from blockmask.learning.methods.progress import bar as progress_bar
from blockmask.learning.run import check_budget, peak_memory
from blockmask.learning.train import freeze
from blockmask.sampling.sample import Condition, build_conditioning, denoise


@dataclasses.dataclass(frozen=True)
class RouterConfig:
    """Options of the L2C-style router."""

    data: str | None = dataclasses.field(default=None, metadata={
        "help": "MNIST IDX folder (default: $BLOCKMASK_MNIST)"})
    split: str = dataclasses.field(default="test", metadata={"help": "MNIST split to train on",
                                                             "choices": ("test", "train")})
    iters_per_step: int = dataclasses.field(default=4, metadata={"help": "router updates per sampling step"})
    batch: int = dataclasses.field(default=8, metadata={"help": "images per update"})
    lr: float = dataclasses.field(default=0.3, metadata={"help": "step on the router logits, in units of the mean gradient"})
    lam: float = dataclasses.field(default=0.5, metadata={"help": "weight of the router's MAC-weighted mass"})
    init_prob: float = dataclasses.field(default=0.9, metadata={"help": "initial router value"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of the image draws and the noise"})

    def __post_init__(self):
        check_int("iters_per_step", self.iters_per_step, low=1)
        check_int("batch", self.batch, low=1)
        check_int("seed", self.seed, low=0)
        check_float("learning rate", self.lr, low=0, low_open=True)
        check_float("lambda", self.lam, low=0)
        check_float("init_prob", self.init_prob, low=0, high=1, low_open=True, high_open=True)
        if self.split not in ("test", "train"):
            raise BlockmaskError(f"split must be test or train, got {self.split!r}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def data_folder(cfg: RouterConfig) -> Path:
    """The MNIST folder the router trains on; one clear error when it holds no images of the split."""

    folder = Path(cfg.data).expanduser() if cfg.data else default_mnist_dir()
    prefix = "t10k" if cfg.split == "test" else "train"
    if not folder.is_dir():
        raise BlockmaskError(f"router needs training images: data folder {folder} does not exist "
                             "(pass --data DIR with the MNIST IDX files, or set $BLOCKMASK_MNIST)")
    if not any(folder.glob(f"{prefix}-images-idx3-ubyte*")):
        raise BlockmaskError(f"router needs training images: no {prefix}-images-idx3-ubyte[.gz] in {folder} "
                             "(pass --data DIR with the MNIST IDX files, or set $BLOCKMASK_MNIST)")
    return folder


def to_latents(wb, images: torch.Tensor) -> torch.Tensor:
    """(B, 1, 32, 32) images in [−1, 1] → (B, C, H, W) model inputs (module doc)."""
    p = next(wb.model.parameters())
    c, h, w = adapter_for(wb.model).latent_shape(wb.model)
    vae = wb.loaded.vae
    if vae is not None:
        size = getattr(vae.config, "sample_size", 256)
        x = torch.nn.functional.interpolate(images.repeat(1, 3, 1, 1), size=(size, size), mode="bilinear")
        with torch.no_grad():
            lat = vae.encode(x.to(vae.device, vae.dtype)).latent_dist.mean * getattr(vae.config, "scaling_factor", 1.0)
        return torch.nn.functional.interpolate(lat.float(), size=(h, w), mode="area").to(p.device, p.dtype)
    x = images if images.shape[-2:] == (h, w) else torch.nn.functional.interpolate(images, size=(h, w), mode="area")
    reps = math.ceil(c / x.shape[1])
    return x.repeat(1, reps, 1, 1)[:, :c].to(p.device, p.dtype)


@torch.no_grad()
def _update(theta: torch.Tensor, k: int, lr: float, scale: float | None) -> float:
    """θ_k ← θ_k − lr · g / ḡ, ḡ a running mean of |g| over every update so far. Unlike Adam (whose
    first steps move every logit by ±lr whatever its gradient, leaving ties after a few updates per
    row), this keeps the gradients' relative sizes, within a row and across rows, and stays free of
    the loss's scale."""
    g = theta.grad[k]
    mag = float(g.abs().mean())
    scale = mag if scale is None else 0.9 * scale + 0.1 * mag
    if scale > 0:
        theta[k] -= lr * g / scale
    theta.grad = None
    return scale


def make_mask(wb, steps: int, target: float, cfg: RouterConfig | None = None, *,
              condition: Condition | None = None, progress: bool = False) -> tuple[np.ndarray, dict]:
    """Train the router on noised MNIST images and keep its best cells within ``target``."""
    cfg = cfg or RouterConfig()

    check_budget(wb, steps, target)
    folder = data_folder(cfg)  # before any work
    images, labels = load_mnist(folder, cfg.split)
    model, adapter = wb.model, adapter_for(wb.model)
    n = len(wb.units)
    p = next(model.parameters())
    costs = np.asarray(wb.macs.unit_macs, float)
    w = torch.tensor(costs / max(costs.sum(), 1e-30), dtype=torch.float32, device=p.device)
    sched0 = wb.scheduler()
    sched0.set_timesteps(steps)
    calls = call_rows(sched0)  # row k is trained at its first model call's timestep (Heun: σ_k)
    ts = [sched0.timesteps[c] for c, first in enumerate(row_starts(calls)) if first]
    classes = adapter.num_classes(model)
    condition = condition or Condition()
    rng = np.random.default_rng(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed)
    theta = torch.full((steps, n), math.log(cfg.init_prob / (1 - cfg.init_prob)), device=p.device, requires_grad=True)
    scale = None  # running mean |gradient| over all updates: one step size for every cell (see _update)
    order = [k for _ in range(cfg.iters_per_step) for k in rng.permutation(np.arange(1, steps))]
    used: set[int] = set()
    losses = []
    restore = freeze(model)
    t0 = time.perf_counter()
    try:
        with MaskedExecution(model, np.ones((steps, n), bool)) as ex:
            for k in progress_bar(order, desc=f"training router (K={steps})", progress=progress):
                idx = rng.choice(len(images), cfg.batch, replace=False)
                used.update(int(i) for i in idx)
                x0 = to_latents(wb, to_model_range(images[idx]))
                eps = torch.randn(x0.shape, generator=g).to(x0)
                lab = None if classes is None else [int(v) % classes for v in labels[idx]]
                cond, cfg_on = build_conditioning(model, cfg.batch, Condition(class_labels=lab,
                                                  prompt_embeds=condition.prompt_embeds,
                                                  prompt_mask=condition.prompt_mask), g)
                cond = cond.to(p.device, p.dtype)
                # A fresh copy per timestep: Euler / Heun derive σ from the step index, which this loop
                # (jumping between steps, never calling step()) must not leave behind.
                s_prev, s_k = copy.deepcopy(sched0), copy.deepcopy(sched0)
                x_prev = s_prev.add_noise(x0, eps, ts[k - 1].reshape(1))
                x_k = s_k.add_noise(x0, eps, ts[k].reshape(1))
                with torch.no_grad():
                    ex.set_step(k - 1)
                    denoise(model, adapter, s_prev, x_prev, ts[k - 1], cond, 1.0, cfg_on)  # fills the caches
                    ex.set_step(k)
                    with ex.reference():
                        base = (denoise(model, adapter, s_k, x_k, ts[k], cond, 1.0, cfg_on).float() - eps).pow(2).mean()
                beta = torch.sigmoid(theta[k])
                with ex.soft_gates(beta):
                    pred = denoise(model, adapter, s_k, x_k, ts[k], cond, 1.0, cfg_on).float()
                loss = (pred - eps).pow(2).mean() / base.clamp_min(1e-12) + cfg.lam * (beta * w).sum()
                loss.backward()
                scale = _update(theta, k, cfg.lr, scale)
                losses.append(float(loss.detach()))
        scores = torch.sigmoid(theta.detach()).cpu().numpy().astype(float)
    finally:
        restore()
    seconds = time.perf_counter() - t0
    scores[0] = np.inf
    mask = fit_scores(wb, scores, target)
    data = {"folder": str(folder), "split": cfg.split, "images_drawn": len(order) * cfg.batch,
            "unique_images": len(used), "updates": len(order)}
    meta = {"method": "router", "config": cfg.to_json(), "scores": np.where(np.isfinite(scores), scores, 1.0).tolist(),
            "losses": losses, "train_seconds": seconds, "data": data, "memory": peak_memory(wb.device),
            "needs": {"data": f"{len(used)} MNIST images ({cfg.split} split), {data['images_drawn']} draws",
                      "training": f"{len(order)} router updates"}}
    return mask, meta
