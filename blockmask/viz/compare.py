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

from ..mask import mask_hash
from ..sample import to_grid
from .context import ModelContext

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


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Everything the generate panel shows."""

    original: np.ndarray  # (H', W', 3) uint8 grid
    masked: np.ndarray  # (H', W', 3) uint8 grid
    difference: np.ndarray  # (H', W', 3) uint8 grid, |orig − masked| amplified
    diff_gain: float  # the amplification used for the difference image
    mse: float
    psnr: float  # dB, inf when identical
    original_s: float
    masked_s: float
    speedup: float
    macs_original: float  # per image, whole sampling run (×2 with CFG)
    macs_masked: float
    macs_percent: float
    num_images: int
    cached: bool  # the masked run came from the cache (wall times are from when it ran)


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


def _run(ctx: ModelContext, mask, steps, seed, n, label, guidance, progress: Progress | None, what: str) -> Run:
    use = label is not None or guidance != 1
    cond = ctx.wb.condition(class_label=label, guidance_scale=guidance) if use else None
    cb = None if progress is None else (lambda k, kk: progress(k / kk, f"{what}: step {k}/{kk}"))
    dev = ctx.wb.device
    with ctx.lock:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        lat = ctx.wb.generate(mask, steps=steps, seed=seed, num_images=n, condition=cond, callback=cb)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    return Run(ctx.wb.images(lat), dt)


def _warm(ctx: ModelContext) -> None:
    """One tiny forward so the first timed run does not pay one-off setup costs."""
    if not getattr(ctx, "_warmed", False):
        with torch.no_grad():
            _run(ctx, None, 2, 0, 1, None, 1.0, None, "warm-up")
        object.__setattr__(ctx, "_warmed", True)


def compare(ctx: ModelContext, mask: np.ndarray, *, seed: int = 0, num_images: int = 2, class_label: int | None = None,
            guidance_scale: float = 1.0, progress: Progress | None = None) -> Comparison:
    """Generate with the plain model and with ``mask`` from the same seeds; time both; compare.

    Raises BlockmaskError for invalid inputs (class label out of range, CFG on an unguided model…).
    """
    mask = np.asarray(mask, bool)
    steps = mask.shape[0]
    n = int(num_images)
    label = None if class_label is None else int(class_label)
    g = float(guidance_scale)
    base = (ctx.key, steps, int(seed), n, label, g)
    half = (lambda f, t: progress(0.5 * f, t)) if progress else None
    rest = (lambda f, t: progress(0.5 + 0.5 * f, t)) if progress else None
    _warm(ctx)
    orig = _cached(("orig",) + base, lambda: _run(ctx, None, steps, seed, n, label, g, half, "original"))
    hit = ("masked", mask_hash(mask)) + base in _CACHE
    masked = _cached(("masked", mask_hash(mask)) + base,
                     lambda: _run(ctx, mask, steps, seed, n, label, g, rest, "masked"))
    if progress:
        progress(1.0, "done")
    a, b = orig.images, masked.images
    mse = float(((a - b) ** 2).mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
    diff = (a - b).abs()
    peak = float(diff.max())
    gain = 1.0 if peak == 0 else min(1.0 / peak, 50.0)
    cfg = g > 1.0
    mult = 2 if cfg else 1
    p = ctx.macs
    mo, mm = p.baseline(steps) * mult, p.total(mask) * mult
    return Comparison(to_grid(a), to_grid(b), to_grid((diff * gain).clamp(0, 1)), gain, mse, psnr, orig.seconds,
                      masked.seconds, orig.seconds / max(masked.seconds, 1e-9), mo, mm, 100 * mm / mo, n, hit)


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
                  guidance_scale: float = 1.0, progress: Progress | None = None) -> np.ndarray:
    """Δ_k = ||F(k) − F(k−1)|| / ||F(k−1)|| of the model output over one unmasked run (METHOD.md
    Eq. 9); (K,) with Δ_0 = NaN. Cached per (model, scheduler, K, seed, count, condition)."""

    def make():
        from ..scaling import feature_variation

        cond = ctx.wb.condition(class_label=class_label, guidance_scale=guidance_scale) \
            if (class_label is not None or guidance_scale != 1) else None
        cb = None if progress is None else (lambda k, kk: progress(k / kk, f"unmasked run: step {k}/{kk}"))
        with ctx.lock:
            return feature_variation(ctx.wb.model, ctx.wb.scheduler(), num_steps=steps, seed=seed, batch=num_images,
                                     condition=cond, callback=cb)

    return _cached(("delta", ctx.key, steps, seed, num_images, class_label, float(guidance_scale)), make)


def default_lambda(delta: np.ndarray) -> np.ndarray:
    """λ_k that training with default settings would use for this Δ (Eq. 10)."""
    from ..train import TrainConfig

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
