"""The other ways of deciding what to cache that the paper positions itself against, each as a
producer of a blockmask mask at a MAC budget (issue 17; docs/METHODS_COMPARED.md):

* ``feature-change`` — block caching from measured feature change (Wimbauer et al.):
  :mod:`.feature_change`; no data, no training.
* ``router`` — a per-step, per-unit router trained on noised real images (Learning-to-Cache):
  :mod:`.router`; needs the MNIST data folder.
* ``global`` — all gates optimised through the whole K-step chain at once (DiP-GO): :mod:`.global_opt`;
  memory grows with K.

Each producer is ``make_mask(wb, steps, target, config, condition=..., progress=...)`` →
``(rectified mask (K, N), meta)`` with the mask's rectified MAC ratio within ±2% of ``target``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import numpy as np

from blockmask.core.errors import BlockmaskError
from blockmask.core.validate import check_int
from blockmask.learning.methods import feature_change, global_opt, router
from blockmask.learning.methods.budget import fit_scores


class Method(NamedTuple):
    name: str
    label: str
    config: type  # its frozen config dataclass
    make: Callable[..., tuple[np.ndarray, dict]]
    help: str


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} registered twice")
    if not dataclasses.is_dataclass(method.config):
        raise TypeError(f"{method.name}: config must be a dataclass")
    METHODS[method.name] = method
    return method


register(Method("feature-change", "Feature-change caching (Wimbauer et al.)", feature_change.FeatureChangeConfig,
                feature_change.make_mask,
                "One unmasked run measures each unit's output change per step; a unit refreshes when its change "
                "accumulated since the last refresh passes a threshold, searched to meet the MAC budget. No data."))
register(Method("router", "Router trained on data (L2C-style)", router.RouterConfig, router.make_mask,
                "Per-step, per-unit router values trained with the diffusion loss on noised MNIST images from the "
                "data folder, thresholded to the MAC budget. Needs the MNIST data folder."))
register(Method("global", "Global chain optimisation (DiP-GO-style)", global_opt.GlobalConfig, global_opt.make_mask,
                "All gates optimised at once through the whole K-step sampling run (backpropagation through every "
                "step), thresholded to the MAC budget. Memory grows with K."))


def get(name: str) -> Method:
    if name not in METHODS:
        raise BlockmaskError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def config_for(name: str, **fields):
    """The method's config with ``fields`` (unknown names are one clear error)."""
    m = get(name)
    known = {f.name for f in dataclasses.fields(m.config)}
    bad = sorted(set(fields) - known)
    if bad:
        raise BlockmaskError(f"{name} has no option {bad[0]!r}; options: {', '.join(sorted(known))}")
    return m.config(**fields)


def produce(wb, name: str, *, steps: int, target_macs: float, config=None, condition=None,
            progress: bool = False) -> tuple[np.ndarray, dict]:
    """(rectified mask, meta) of method ``name`` at ``target_macs`` for K = ``steps``."""

    m = get(name)
    check_int("steps", steps, low=2)
    cfg = config if config is not None else m.config()
    if not isinstance(cfg, m.config):
        raise BlockmaskError(f"{name} takes a {m.config.__name__}, got {type(cfg).__name__}")
    mask, meta = m.make(wb, steps, target_macs, cfg, condition=condition, progress=progress)
    meta = {**meta, "target_macs": target_macs, "macs_ratio": wb.macs.ratio(mask)}
    return mask, meta


def refit(wb, source_meta: dict, *, target_macs: float) -> tuple[np.ndarray, dict]:
    """Bring the cell scores a router / global run stored (its mask file's meta) to another budget,
    without training again: L2C's own way to trade compute (one router, one threshold per budget)."""

    prod = source_meta.get("producer") or {}
    name, scores = prod.get("method"), source_meta.get("scores")
    if name not in ("router", "global") or scores is None:
        raise BlockmaskError("--from-scores needs a mask file written by 'blockmask method router' or 'global' "
                             f"(this one is {name or 'not a method mask'})")
    s = np.asarray(scores, float)
    if s.ndim != 2 or s.shape[1] != len(wb.units):
        raise BlockmaskError(f"stored scores have shape {s.shape}, the model has {len(wb.units)} units")
    s[0] = np.inf
    mask = fit_scores(wb, s, target_macs)
    meta = {**prod, "refit_from": {"target_macs": prod.get("target_macs"), "train_seconds": prod.get("train_seconds")},
            "train_seconds": 0.0, "target_macs": target_macs, "macs_ratio": wb.macs.ratio(mask), "scores": scores}
    return mask, meta


__all__ = ["refit", "METHODS", "Method", "config_for", "get", "produce", "register"]
