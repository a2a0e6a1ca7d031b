"""Original vs masked generation from the same seeds, and the per-step output variation Δ_k.

Results are cached by content (model/scheduler key, K, seeds, count, condition, mask hash), so
re-running with an unchanged mask costs nothing; the original run is shared by every mask.
"""

from __future__ import annotations

import dataclasses
import io
import math
import threading
import time
from collections import OrderedDict
from typing import Callable

import numpy as np
import torch

from blockmask.core.errors import BlockmaskError
from blockmask.core.mask import mask_hash
from blockmask.learning.scaling import feature_variation
from blockmask.learning.train import TrainConfig
from blockmask.sampling.sample import SampleOptions, sample, to_grid
from blockmask.viz.context import Draw, ModelContext
from blockmask.viz.presenter import check_reuse_mode, reuse_text
from blockmask.viz.prompts import condition

MAX_IMAGES = 16  # the apps cap the number of images at this
Progress = Callable[[float, str], None]

_CACHE: OrderedDict = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 32


def _cached(key, make):
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    val = make()
    with _CACHE_LOCK:
        _CACHE[key] = val
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return val


@dataclasses.dataclass(frozen=True)
class Run:
    images: torch.Tensor  # (B, C, H, W) in [0, 1]
    seconds: float
    trajectory: torch.Tensor | None = None  # (K, B, C, H, W) latents after each step (None when too large)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Everything the generate panel shows."""

    original: np.ndarray  # (H', W', 3) uint8 grid
    masked: np.ndarray  # (H', W', 3) uint8 grid
    difference: np.ndarray  # (H', W', 3) uint8 grid, |orig − masked| amplified
    diff_gain: float  # the amplification used for the difference image
    mse: float
    psnr: float  # dB, inf when identical
    original_s: float  # median wall time of one sampling run (all images), plain model
    masked_s: float  # the same with the mask
    speedup: float  # original_s / masked_s (medians of interleaved repeats)
    speedup_lo: float  # smallest and largest per-repeat ratio plain_i / masked_i: the spread
    speedup_hi: float
    repeats: int  # interleaved timed repeats (plain, masked, plain, masked, …) after warm-up
    device: str  # what the times were measured on (device name, CPU threads)
    mac_speedup: float  # ideal speedup, 1 / MAC ratio: noise-free
    macs_original: float  # per image, whole sampling run (×2 with CFG)
    macs_masked: float
    macs_percent: float
    num_images: int  # = the timed batch
    cached: bool  # from this session's results (same mask, seeds, settings): times are from when it ran
    errors: np.ndarray | None = None  # (K,) ‖x_k(masked) − x_k(original)‖ / ‖x_k(original)‖ per step
    key: tuple = ()  # what the result was computed for (mask hash first)
    unreliable: tuple[str, ...] = ()  # why the timing cannot be trusted (timing_flags): shown next to it
    cfg: bool = False  # classifier-free guidance: two model passes per step, MACs above are doubled
    reuse: str = "hold"  # what the masked run's reused units returned (blockmask.core.forecast): hold | forecast

    @property
    def above_ideal(self) -> bool:
        """Measured speedup above the ideal 1 / MAC ratio: timing noise, never a real gain."""
        return self.speedup > self.mac_speedup

    @property
    def macs_note(self) -> str:
        passes = "×2: guidance runs the model twice per step" if self.cfg else "one model pass per step"
        return f"{passes}; {reuse_text(self.reuse)}"

    def speed_text(self) -> str:
        """'1.42× (1.31–1.50× over 3 repeats) · ideal 1.80× · CPU … · batch 2'."""
        spread = "" if self.repeats < 2 else f" ({self.speedup_lo:.2f}–{self.speedup_hi:.2f}× over {self.repeats} repeats)"
        flag = "" if not self.unreliable else " · UNRELIABLE timing: " + "; ".join(self.unreliable)
        if self.above_ideal:
            flag += " (a speedup above the ideal is measurement noise, not a real gain)"
        return (f"{self.speedup:.2f}×{spread} · ideal (MACs) {self.mac_speedup:.2f}× · {self.device} · "
                f"batch {self.num_images} · {reuse_text(self.reuse)}{flag}")


SPREAD_MAX = 2.0  # per-repeat speedups further apart than this factor: the timing is noise
LOAD_MAX = 1.0  # 1-minute load average per core above which timings are flagged


def timing_flags(bench: dict, ratios: list[float], load: float | None = None, cores: int | None = None
                 ) -> tuple[str, ...]:
    """Why a measured speedup cannot be trusted: :func:`blockmask.workbench.bench_reliability`'s reasons (above
    the ideal, runs spread wider than their median), per-repeat speedups spread over a factor
    :data:`SPREAD_MAX`, and a busy machine (load average per core over :data:`LOAD_MAX`)."""
    import os

    out = list(bench.get("unreliable_reasons", ()))
    if len(ratios) > 1 and min(ratios) > 0 and max(ratios) / min(ratios) > SPREAD_MAX:
        out.append(f"per-repeat speedups spread {min(ratios):.2f}-{max(ratios):.2f}x (more than {SPREAD_MAX:g}x apart)")
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not on this platform
            load = None
    cores = cores or os.cpu_count() or 1
    if load is not None and load / cores > LOAD_MAX:
        out.append(f"the machine is busy (load average {load:.1f} on {cores} cores)")
    return tuple(out)


def clamp_images(n) -> tuple[int, str | None]:
    """(usable count, message or None) for a user-given number of images."""
    try:
        n = int(n)
    except (TypeError, ValueError):
        return 1, f"number of images must be a whole number, got {n!r}; using 1"
    if n < 1:
        return 1, f"number of images must be at least 1 (got {n}); using 1"
    if n > MAX_IMAGES:
        return MAX_IMAGES, f"at most {MAX_IMAGES} images per run on this demo (asked for {n}); using {MAX_IMAGES}"
    return n, None


TRAJECTORY_MAX = 20_000_000  # latent elements kept per run (K × B × C × H × W) for the divergence plot


def _run(ctx: ModelContext, mask, steps, draw: Draw, progress: Progress | None, what: str, reuse: str = "hold") -> Run:
    seed, n = draw.seed, draw.num_images
    cond = condition(ctx, draw.class_label, draw.guidance_scale, draw.prompt)
    cb = None if progress is None else (lambda k, kk: progress(k / kk, f"{what}: step {k}/{kk}"))
    traj: list = []
    keep = None
    dev = ctx.wb.device
    with ctx.lock:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        lat = sample(ctx.wb.model, num_steps=steps, mask=mask, scheduler=ctx.wb.scheduler(), seed=seed, batch=n,
                     condition=cond, options=SampleOptions(
                         callback=cb, reuse=reuse,
                         on_latents=lambda k, x: traj.append(x.detach().float().cpu().clone())
                         if x.numel() * steps <= TRAJECTORY_MAX else None))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    if len(traj) == steps:
        keep = torch.stack(traj)  # (K, B, C, H, W)
    return Run(ctx.wb.images(lat), dt, keep)


def divergence(a: torch.Tensor | None, b: torch.Tensor | None) -> np.ndarray | None:
    """(K,) ‖x_k(masked) − x_k(original)‖ / ‖x_k(original)‖ after each step: where the error enters."""
    if a is None or b is None or a.shape != b.shape:
        return None
    d = (b - a).flatten(1).norm(dim=1) / a.flatten(1).norm(dim=1).clamp_min(1e-12)
    return d.numpy().astype(float)


def compare(ctx: ModelContext, mask: np.ndarray, draw: Draw = Draw(), *, repeats: int = 3,
            progress: Progress | None = None, session: dict | None = None, reuse: str = "hold") -> Comparison:
    """Generate with the plain model and with ``mask`` from the same seeds, then time both as
    ``repeats`` interleaved runs after that warm-up (:meth:`Workbench.bench`): median and spread.

    ``draw``: the seeds, images, class, guidance and prompt (:class:`Draw`). ``session`` is the caller's
    own result store (one per app user): a repeat request with the same mask and settings is served
    from it (``cached``), and no user ever sees another's timings. ``reuse``: what the masked run's reused units return, "hold" or "forecast"
    (:mod:`blockmask.core.forecast`; the plain run reuses nothing). Raises BlockmaskError for invalid inputs
    (class label out of range, CFG on an unguided model, an unknown reuse mode…).
    """

    mask = np.asarray(mask, bool)
    reuse = check_reuse_mode(reuse)
    steps = mask.shape[0]
    prompt = draw.prompt
    draw = dataclasses.replace(draw, seed=int(draw.seed), num_images=int(draw.num_images),
                               class_label=None if draw.class_label is None else int(draw.class_label),
                               guidance_scale=float(draw.guidance_scale))
    seed, n, label, g = draw.seed, draw.num_images, draw.class_label, draw.guidance_scale
    repeats = int(repeats)
    if not 1 <= repeats <= 20:
        raise BlockmaskError(f"timed repeats must be 1..20, got {repeats}")
    base = (ctx.key, steps, seed, n, label, g, None if prompt is None else prompt.digest)
    key = (mask_hash(mask),) + base + (repeats, reuse)  # the reuse mode last (the apps' stale notes read it)
    if session is not None and key in session:
        return dataclasses.replace(session[key], cached=True)
    part = (lambda lo, hi: (lambda f, t: progress(lo + (hi - lo) * f, t))) if progress else (lambda lo, hi: None)
    orig = _cached(("orig",) + base, lambda: _run(ctx, None, steps, draw, part(0, 0.2), "original"))
    masked = _cached(("masked", key[0], reuse) + base, lambda: _run(ctx, mask, steps, draw, part(0.2, 0.4), "masked",
                                                                    reuse))
    cond = condition(ctx, label, g, prompt)
    tick = part(0.4, 1.0)
    with ctx.lock:  # warm-up: the image runs above (and one plain + masked run here)
        b = ctx.wb.bench(mask, batch=n, repeats=repeats, warmup=1, seed=seed, condition=cond,
                         options=SampleOptions(reuse=reuse),
                         progress=None if tick is None else
                         (lambda t: tick(int(t.split("/")[0].split()[-1]) / repeats, "timing: " + t)))
    if progress:
        progress(1.0, "done")
    a, bb = orig.images, masked.images
    mse = float(((a - bb) ** 2).mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    diff = (a - bb).abs()
    peak = float(diff.max())
    gain = 1.0 if peak == 0 else min(1.0 / peak, 50.0)
    mult = 2 if g > 1.0 else 1
    p = ctx.macs
    mo, mm = p.baseline(steps) * mult, p.total(mask) * mult
    ratios = [x / max(y, 1e-9) for x, y in zip(b["plain_all_s"], b["masked_all_s"])]
    flags = timing_flags(b, ratios)
    out = Comparison(to_grid(a), to_grid(bb), to_grid((diff * gain).clamp(0, 1)), gain, mse, psnr, b["plain_s"],
                     b["masked_s"], b["speedup"], min(ratios), max(ratios), repeats, b["device_name"],
                     b["mac_speedup"], mo, mm, 100 * mm / mo, n, False,
                     divergence(orig.trajectory, masked.trajectory), key=key,
                     unreliable=flags, cfg=mult == 2, reuse=reuse)
    if session is not None:
        session[key] = out
        while len(session) > 8:  # a few recent results per user
            session.pop(next(iter(session)))
    return out


def png_bytes(grid: np.ndarray, scale: int = 1) -> bytes:
    """uint8 (H, W, 3) → PNG bytes (nearest-neighbour upscaled by ``scale``)."""
    from PIL import Image

    img = Image.fromarray(grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def upscale(grid: np.ndarray, scale: int) -> np.ndarray:
    return grid.repeat(scale, 0).repeat(scale, 1) if scale > 1 else grid


def compute_delta(ctx: ModelContext, steps: int, *, seed: int = 0, num_images: int = 1, class_label: int | None = None,
                  guidance_scale: float = 1.0, progress: Progress | None = None, prompt=None) -> np.ndarray:
    """Δ_k = ||F(k) − F(k−1)|| / ||F(k−1)|| of the model output over one unmasked run (METHOD.md
    Eq. 9); (K,) with Δ_0 = NaN. Cached per (model, scheduler, K, seed, count, condition). A text model
    runs on ``prompt`` (:mod:`blockmask.viz.prompts`; refused without one)."""

    if ctx.takes_text:
        condition(ctx, class_label, guidance_scale, prompt)  # no prompt: one line, before any work

    def make():
        if ctx.takes_text:
            cond = condition(ctx, class_label, guidance_scale, prompt)
        else:
            cond = ctx.wb.condition(class_label=class_label, guidance_scale=guidance_scale) \
                if (class_label is not None or guidance_scale != 1) else None
        cb = None if progress is None else (lambda k, kk: progress(k / kk, f"unmasked run: step {k}/{kk}"))
        with ctx.lock:
            return feature_variation(ctx.wb.model, ctx.wb.scheduler(), num_steps=steps, seed=seed, batch=num_images,
                                     condition=cond, callback=cb)

    return _cached(("delta", ctx.key, steps, seed, num_images, class_label, float(guidance_scale),
                    None if prompt is None else prompt.digest), make)


def default_lambda(delta: np.ndarray) -> np.ndarray:
    """λ_k that training with default settings would use for this Δ (Eq. 10)."""

    return TrainConfig(steps=max(2, len(delta))).lambda_schedule().weights(delta)


def delta_from_meta(meta: dict, steps: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(Δ, λ) arrays of length K from a mask file's meta when present and the right length."""
    out = []
    for key in ("delta", "lambda"):
        v = meta.get(key) if isinstance(meta, dict) else None
        try:
            arr = np.array([np.nan if x is None else x for x in v], float) if v is not None else None
        except (TypeError, ValueError):
            arr = None
        out.append(arr if arr is not None and arr.shape == (steps,) else None)
    return out[0], out[1]
