"""Presets for the mask editor: learned masks from ``assets/masks/`` that fit the current model and
step count, the baselines of METHOD.md §6 (all ones, DeepCache, FORA, uniform, random at a
MAC budget), and the other methods of docs/METHODS_COMPARED.md produced at a MAC budget."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from ..errors import BlockmaskError
from ..models import assets_dir
from .context import ModelContext


@dataclasses.dataclass(frozen=True)
class Preset:
    key: str  # "learned:<file>" or a baseline kind
    label: str
    params: tuple[str, ...] = ()  # parameters the UI should ask for
    help: str = ""


BASELINE_PRESETS = (
    Preset("ones", "All ones (plain model)", (), "Every unit runs at every step: the original model."),
    Preset("deepcache", "DeepCache", ("interval", "branch"),
           "Every `interval` steps run everything; in between only the shallow branch `branch` "
           "(DeepCache's cache_branch_id, 0 = shallowest) runs, deeper units reuse their cache."),
    Preset("fora", "FORA", ("interval",), "Every `interval` steps run every unit; in between reuse every attention "
           "and MLP (U-Net: every unit) while the transformer blocks' norms and modulation run."),
    Preset("blocks", "Block caching", ("interval",), "Every `interval` steps run everything; in between every "
           "transformer block returns its input plus its cached residual."),
    Preset("uniform", "Uniform", ("every",), "Each unit runs every `every` steps, phases staggered over units."),
    Preset("random", "Random at a MAC budget", ("macs_ratio", "seed"),
           "Random cells reused until the MACs fall to `macs_ratio` of the plain model (sanity floor)."),
)
# The other methods (issue 17, :mod:`blockmask.methods`): produced for the current model at a MAC budget.
METHOD_PRESETS = (
    Preset("method:feature-change", "Feature-change caching (Wimbauer et al.)", ("macs_ratio", "seed"),
           "One unmasked run measures each unit's output change; a unit refreshes when its accumulated change "
           "passes a threshold searched to meet `macs_ratio`. No data, a second or so."),
    Preset("method:router", "Router trained on MNIST (L2C-style)", ("macs_ratio", "seed"),
           "Per-step, per-unit router trained with the diffusion loss on noised MNIST images ($BLOCKMASK_MNIST), "
           "thresholded to `macs_ratio`. Needs the data folder; tens of seconds on a CPU."),
    Preset("method:global", "Global chain optimisation (DiP-GO-style)", ("macs_ratio", "seed"),
           "All gates optimised through the whole sampling run at once, thresholded to `macs_ratio`. Memory grows "
           "with the step count; about a minute on a CPU at 50 steps."),
)
PARAM_DEFAULTS = {"interval": 3, "branch": 0, "every": 2, "macs_ratio": 0.7, "seed": 0}


def masks_dir() -> Path:
    return assets_dir() / "masks"


def learned_label(path: Path, meta: dict) -> str:
    """``Learned: NAME — 35% MACs, 27.1 dB held-out`` (the numbers the mask file records)."""
    parts = []
    ratio = (meta.get("macs") or {}).get("ratio")
    if isinstance(ratio, (int, float)):
        parts.append(f"{ratio:.0%} MACs")
    held = (meta.get("heldout") or {}).get("psnr")
    if isinstance(held, (int, float)):
        parts.append(f"{held:.1f} dB held-out PSNR")
    return f"Learned: {path.stem}" + (f" — {', '.join(parts)}" if parts else "")


def learned_masks(ctx: ModelContext, steps: int | None = None) -> list[tuple[Path, int, list[str], dict]]:
    """(path, K, warnings, meta) of every ``assets/masks/*.json`` that fits the model (and K if given)."""
    out = []
    d = masks_dir()
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        try:
            mf, warns = ctx.wb.load_mask(p, steps=steps)
        except (BlockmaskError, OSError, ValueError):
            continue
        out.append((p, mf.num_steps, warns, mf.meta))
    return out


def default_steps(ctx: ModelContext, fallback: int = 20) -> int:
    """K of the first learned mask for this model, else ``fallback``."""
    found = learned_masks(ctx)
    return found[0][1] if found else fallback


def presets(ctx: ModelContext, steps: int) -> list[Preset]:
    """Learned masks that fit (model, K) first, then the baselines that apply to this model."""
    out = []
    for p, _, _, meta in learned_masks(ctx, steps):
        out.append(Preset(f"learned:{p.name}", learned_label(p, meta), (), "Mask learned by blockmask for this "
                          "model (budget runs: best rule or per-step mask on calibration seeds, refined; then "
                          "rectification). PSNR against the plain model on held-out seeds 5000.."))
    for b in BASELINE_PRESETS:
        if (b.key == "deepcache" and not ctx.is_unet) or (b.key == "blocks" and ctx.is_unet):
            continue
        out.append(b)
    return out + list(METHOD_PRESETS)


def build(ctx: ModelContext, key: str, steps: int, **params) -> tuple[np.ndarray, str, dict]:
    """(mask, source label, meta) for a preset; raises BlockmaskError for bad parameters."""
    if key.startswith("learned:"):
        path = masks_dir() / key.split(":", 1)[1]
        mf, _ = ctx.wb.load_mask(path, steps=steps)
        return mf.mask, f"learned mask {path.stem}", mf.meta
    if key.startswith("method:"):
        return _method(ctx, key.split(":", 1)[1], steps, **params)
    kw = {k: params.get(k, PARAM_DEFAULTS[k]) for k in next((b.params for b in BASELINE_PRESETS if b.key == key), ())}
    for name, v in kw.items():
        try:
            kw[name] = float(v) if name == "macs_ratio" else int(v)
        except (TypeError, ValueError):
            raise BlockmaskError(f"{name} must be a number, got {v!r}") from None
    mask = ctx.wb.baseline(key, steps=steps, **kw)
    label = next((b.label for b in BASELINE_PRESETS if b.key == key), key)
    args = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in kw.items())
    return mask, f"{label}({args})" if args else label, {"baseline": key, **kw}


def _method(ctx: ModelContext, name: str, steps: int, **params) -> tuple[np.ndarray, str, dict]:
    """A mask from one of the other methods at the preset's MAC budget (``blockmask.methods``)."""
    try:
        ratio, seed = float(params.get("macs_ratio", PARAM_DEFAULTS["macs_ratio"])), int(params.get("seed", 0))
    except (TypeError, ValueError):
        raise BlockmaskError("macs_ratio and seed must be numbers") from None
    with ctx.lock:  # the producers hook the shared model: one run on it at a time
        mask, meta = ctx.wb.method(name, steps=steps, target_macs=ratio, seed=seed, progress=True)
    label = next(p.label for p in METHOD_PRESETS if p.key == f"method:{name}")
    small = {k: v for k, v in meta.items() if k not in ("change", "scores", "losses")}
    return mask, f"{label}(macs_ratio={ratio:g}, seed={seed})", {"producer": small}


def initial_mask(ctx: ModelContext, steps: int) -> tuple[np.ndarray, str, dict]:
    """What a fresh editor shows: the first learned mask that fits, else all ones."""
    found = learned_masks(ctx, steps)
    if found:
        return build(ctx, f"learned:{found[0][0].name}", steps)
    return build(ctx, "ones", steps)
