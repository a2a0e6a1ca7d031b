"""Presets for the mask editor: shipped masks from ``assets/masks/`` made for the current model and
step count, the baselines of METHOD.md §6 (all ones, DeepCache, FORA, uniform, random at a
MAC budget), and the other methods of docs/METHODS_COMPARED.md produced at a MAC budget.

A shipped mask is offered only to the model it was made for: a file whose fingerprint differs, or
that names only some of the model's units, is another model's mask and is left out (the loader
warns; the apps listened to nothing before issue 28). Each shipped mask says where it came from
(:mod:`.provenance`) and its held-out PSNR where recorded; presets that are the same mask (identical
bits, e.g. a "learned" mask that is FORA) are listed once, with every name."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable

import numpy as np

from blockmask.core.errors import BlockmaskError
from blockmask.core.mask import mask_hash
from blockmask.io.models import assets_dir
from blockmask.viz.context import ModelContext
from blockmask.viz.prompts import condition
from blockmask.viz.provenance import Provenance, provenance


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
# The other methods (issue 17, :mod:`blockmask.learning.methods`): produced for the current model at a MAC budget.
METHOD_PRESETS = (
    Preset("method:feature-change", "Feature-change caching (Wimbauer et al.)", ("macs_ratio", "seed"),
           "One unmasked run measures each unit's output change; a unit refreshes when its accumulated change "
           "passes a threshold searched to meet `macs_ratio`. No data, a second or so."),
    Preset("method:router", "Router trained on MNIST (L2C-style)", ("macs_ratio", "seed"),
           "Per-step, per-unit router trained with the diffusion loss on noised MNIST images ($BLOCKMASK_MNIST), "
           "thresholded to `macs_ratio`. Needs the MNIST data folder on the server; shown with progress, tens of "
           "seconds to minutes on a CPU."),
    Preset("method:global", "Global chain optimisation (DiP-GO-style)", ("macs_ratio", "seed"),
           "All gates optimised through the whole sampling run at once, thresholded to `macs_ratio`. Memory grows "
           "with the step count; shown with progress, minutes on a CPU at 50 steps (5.5 min measured on a busy "
           "2-core machine)."),
)
Progress = Callable[[float, str], None]
PARAM_DEFAULTS = {"interval": 3, "branch": 0, "every": 2, "macs_ratio": 0.7, "seed": 0}


def masks_dir() -> Path:
    return assets_dir() / "masks"


FOREIGN = ("model fingerprint differs", "mask names ")  # load_mask warnings that mean: another model's mask
_FOUND: dict = {}
_CATALOG: dict = {}


def learned_label(path: Path, meta: dict, same: tuple[str, ...] = ()) -> str:
    """``NAME — refined rule (fora N=3), 35% MACs, 27.1 dB held-out`` (what the mask file records)."""
    prov = provenance(meta)
    parts = [prov.kind]
    ratio = (meta.get("macs") or {}).get("ratio")
    if isinstance(ratio, (int, float)):
        parts.append(f"{ratio:.0%} MACs")
    if prov.psnr is not None:
        parts.append(prov.psnr_text)
    return f"{path.stem} — {', '.join(parts)}" + (f" · same mask as {', '.join(same)}" if same else "")


def learned_masks(ctx: ModelContext, steps: int | None = None) -> list[tuple[Path, int, list[str], dict]]:
    """(path, K, warnings, meta) of every ``assets/masks/*.json`` made for this model (and K if given);
    another model's masks (fingerprint differs, or only some of the units named) are left out."""
    d = masks_dir()
    files = sorted(d.glob("*.json")) if d.is_dir() else []
    key = (ctx.key, steps, str(d), tuple((p.name, p.stat().st_mtime_ns) for p in files))
    if key in _FOUND:
        return _FOUND[key]
    out = []
    for p in files:
        try:
            mf, warns = ctx.wb.load_mask(p, steps=steps)
        except (BlockmaskError, OSError, ValueError):
            continue
        if any(w.startswith(FOREIGN) for w in warns):
            continue
        out.append((p, mf.num_steps, warns, mf.meta))
    _FOUND[key] = out
    while len(_FOUND) > 64:
        _FOUND.pop(next(iter(_FOUND)))
    return out


def default_steps(ctx: ModelContext, fallback: int = 20) -> int:
    """K of the first shipped mask for this model, else ``fallback``."""
    found = learned_masks(ctx)
    return found[0][1] if found else fallback


@dataclasses.dataclass(frozen=True)
class Entry:
    """One distinct mask among the presets at their default parameters (what the table compares)."""

    keys: tuple[str, ...]
    names: tuple[str, ...]
    mask: np.ndarray
    prov: Provenance | None  # shipped masks only (baselines are rules by construction)


def catalog(ctx: ModelContext, steps: int) -> list[Entry]:
    """Shipped masks that fit (model, K) and every cheap baseline at its default parameters, one entry
    per distinct mask (identical bits merged, with every name). Cached per (model, scheduler, K)."""
    found = learned_masks(ctx, steps)
    key = (ctx.key, steps, tuple(str(p) for p, *_ in found))
    if key in _CATALOG:
        return _CATALOG[key]
    rows: dict[str, Entry] = {}
    items = [(f"learned:{p.name}", p.stem, meta) for p, _, _, meta in found]
    items += [(b.key, None, None) for b in BASELINE_PRESETS if _applies(ctx, b.key)]
    for k, stem, meta in items:
        try:
            mask, source, _ = build(ctx, k, steps)
        except BlockmaskError:  # e.g. a baseline that does not apply at this K
            continue
        name = stem or source
        h = mask_hash(mask)
        if h in rows:
            e = rows[h]
            rows[h] = dataclasses.replace(e, keys=e.keys + (k,), names=e.names + (name,))
        else:
            rows[h] = Entry((k,), (name,), mask, None if meta is None else provenance(meta))
    _CATALOG[key] = out = list(rows.values())
    while len(_CATALOG) > 32:
        _CATALOG.pop(next(iter(_CATALOG)))
    return out


def _applies(ctx: ModelContext, key: str) -> bool:
    return not ((key == "deepcache" and not ctx.is_unet) or (key == "blocks" and ctx.is_unet))


def presets(ctx: ModelContext, steps: int) -> list[Preset]:
    """Shipped masks for (model, K) first (a mask identical to another shipped one is listed once, with
    both names), then the baselines that apply to this model, then the other methods."""
    entries = catalog(ctx, steps)
    same = {k: tuple(n for kk, n in zip(e.keys, e.names) if kk != k) for e in entries for k in e.keys}
    out, seen = [], set()
    for p, _, _, meta in learned_masks(ctx, steps):
        k = f"learned:{p.name}"
        if k in seen:
            continue
        twins = same.get(k, ())
        seen.update(kk for e in entries if k in e.keys for kk in e.keys)
        prov = provenance(meta)
        psnr = f" PSNR against the plain model: {prov.psnr_text}." if prov.psnr is not None else \
            " No held-out PSNR recorded."
        out.append(Preset(k, learned_label(p, meta, twins), (), f"Shipped mask for this model; provenance from its "
                          f"file: {prov.text}.{psnr}" + (f" Identical to {', '.join(twins)}." if twins else "")))
    for b in BASELINE_PRESETS:
        if not _applies(ctx, b.key):
            continue
        twins = [n for n in same.get(b.key, ()) if n not in (b.label,)]
        out.append(dataclasses.replace(b, help=b.help + f" At the default parameters this is the same mask as "
                                       f"{', '.join(twins)}.") if twins else b)
    return out + list(METHOD_PRESETS)


def build(ctx: ModelContext, key: str, steps: int, progress: Progress | None = None, prompt=None,
          **params) -> tuple[np.ndarray, str, dict]:
    """(mask, source label, meta) for a preset; raises BlockmaskError for bad parameters. ``progress``
    (fraction, text) is called while a slow producer (``method:*``) runs; on a text model it runs on
    ``prompt`` (:mod:`blockmask.viz.prompts`) and is refused without one."""
    if key.startswith("learned:"):
        path = masks_dir() / key.split(":", 1)[1]
        mf, _ = ctx.wb.load_mask(path, steps=steps)
        return mf.mask, f"shipped mask {path.stem} ({provenance(mf.meta).kind})", mf.meta
    if key.startswith("method:"):
        return _method(ctx, key.split(":", 1)[1], steps, progress, prompt, **params)
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


def public_text(text: str) -> str:
    """An error for a visitor: server paths (``/srv/data/mnist``, ``~/x``) replaced by words."""
    return SERVER_PATH.sub("[server folder]", str(text))


SERVER_PATH = re.compile(r"(?<![\w.$])(?:~|/)[^\s()'\",;]*[\w/]")


def _method(ctx: ModelContext, name: str, steps: int, progress: Progress | None = None, prompt=None,
            **params) -> tuple[np.ndarray, str, dict]:
    """A mask from one of the other methods at the preset's MAC budget (``blockmask.learning.methods``)."""
    try:
        ratio, seed = float(params.get("macs_ratio", PARAM_DEFAULTS["macs_ratio"])), int(params.get("seed", 0))
    except (TypeError, ValueError):
        raise BlockmaskError("macs_ratio and seed must be numbers") from None
    cond = None
    if ctx.takes_text:  # a text model: the visitor's prompt (or random embeddings, asked for)

        cond = condition(ctx, None, 1.0, prompt)
    try:
        with ctx.lock:  # the producers hook the shared model: one run on it at a time
            mask, meta = ctx.wb.method(name, steps=steps, target_macs=ratio, seed=seed, condition=cond,
                                       progress=progress if progress is not None else True)
    except BlockmaskError as e:  # the visitor sees it: no server paths
        raise BlockmaskError(public_text(e)) from None
    label = next(p.label for p in METHOD_PRESETS if p.key == f"method:{name}")
    small = {k: v for k, v in meta.items() if k not in ("change", "scores", "losses")}
    return mask, f"{label}(macs_ratio={ratio:g}, seed={seed})", {"producer": small}


def initial_mask(ctx: ModelContext, steps: int) -> tuple[np.ndarray, str, dict]:
    """What a fresh editor shows: the model's first shipped mask that fits, else all ones."""
    found = learned_masks(ctx, steps)
    if found:
        return build(ctx, f"learned:{found[0][0].name}", steps)
    return build(ctx, "ones", steps)
