"""One loaded model as the apps see it: read-only facts (units, MACs, graph, timesteps) and a lock.

A :class:`ModelContext` is shared by every user of an app (``st.cache_resource`` / a module-level
cache in Gradio), so nothing here is mutated per user. Masked sampling installs per-instance hooks
on the model, so runs on one model are serialised with :attr:`ModelContext.lock`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from functools import cached_property
from pathlib import Path

import numpy as np

from blockmask.adapters import adapter_for
from blockmask.core.errors import BlockmaskWarning
from blockmask.core.units import Unit
from blockmask.hooks.costs import MacProfile, format_macs
from blockmask.io.models import DEFAULT_MODEL, bundled_models
from blockmask.io.resources import app_dir
from blockmask.workbench import Workbench

APP_DIR = app_dir()  # the installed app files (blockmask_app; the repository's app/ in a checkout)
FALLBACK_CONFIG = APP_DIR / "fallback-unet.json"
FALLBACK_SPEC = f"config:{FALLBACK_CONFIG}"
FALLBACK_LABEL = "random init U-Net (no trained model installed)"
ENV_MODEL = "BLOCKMASK_APP_MODEL"  # tests point the apps at a tiny config with this
HUB_EXAMPLES = ("google/ddpm-cifar10-32", "facebook/DiT-XL-2-256")

_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _model_lock(model) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(model), threading.Lock())


def default_model_spec() -> str:
    """$BLOCKMASK_APP_MODEL, else the bundled default model, else a random-init fallback config."""
    env = os.environ.get(ENV_MODEL, "").strip()
    if env:
        return env
    if DEFAULT_MODEL in bundled_models():
        return DEFAULT_MODEL
    return FALLBACK_SPEC


def model_choices() -> list[str]:
    """Specs for the model picker: the app default first, bundled models, the random-init fallback."""
    out = [default_model_spec(), *bundled_models(), FALLBACK_SPEC]
    return list(dict.fromkeys(out))


def spec_label(spec: str) -> str:
    """Short picker label for a spec."""
    if spec == FALLBACK_SPEC:
        return FALLBACK_LABEL
    if spec.startswith("config:"):
        return f"{Path(spec[7:]).stem} (random init)"
    return spec


@dataclasses.dataclass(frozen=True)
class Draw:
    """Which samples an app run makes: ``num_images`` from generator seed ``seed``, for ``class_label``
    (None: unconditional or the model's default) with classifier-free guidance ``guidance_scale``; a text
    model's ``prompt`` (a :class:`blockmask.viz.prompts.Prompt`; None: random embeddings per seed)."""

    seed: int = 0
    num_images: int = 2
    class_label: int | None = None
    guidance_scale: float = 1.0
    prompt: object = None


@dataclasses.dataclass(eq=False)
class ModelContext:
    """Read-only view of one model + scheduler for the apps."""

    wb: Workbench
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    warnings: tuple[str, ...] = ()  # BlockmaskWarnings of the load (default scheduler, cast weights): shown by the apps

    @property
    def spec(self) -> str:
        return self.wb.loaded.spec

    @property
    def scheduler_name(self) -> str:
        return self.wb.scheduler_name

    @property
    def key(self) -> str:
        """Identifies model + scheduler (for caches and to notice a model switch)."""
        return f"{self.spec}|{self.wb.loaded.fingerprint}|{self.scheduler_name}"

    @property
    def random_init(self) -> bool:
        return self.wb.loaded.random_init

    @property
    def label(self) -> str:
        name = spec_label(self.spec)
        tag = " — random init, images are noise-like" if self.random_init else ""
        return f"{name} · {type(self.wb.model).__name__} · {self.n_units} units{tag}"

    @cached_property
    def units(self) -> list[Unit]:
        return self.wb.units

    @property
    def n_units(self) -> int:
        return len(self.units)

    @cached_property
    def macs(self) -> MacProfile:
        return self.wb.macs

    @cached_property
    def graph(self):
        return self.wb.graph

    @cached_property
    def is_unet(self) -> bool:
        return all(u.name.startswith(("down_blocks", "up_blocks", "mid_block")) for u in self.units)

    @cached_property
    def num_classes(self) -> int | None:
        return adapter_for(self.wb.model).num_classes(self.wb.model)

    @cached_property
    def takes_text(self) -> bool:
        """Text-conditioned (cross-attention U-Net, PixArt): the apps show a prompt-embeddings input."""
        return bool(adapter_for(self.wb.model).is_text_conditioned(self.wb.model))

    @cached_property
    def text_width(self) -> int | None:
        """Width D of the prompt embeddings (L, D) the model expects, when it takes text."""
        if not self.takes_text:
            return None
        cfg = self.wb.model.config
        return getattr(cfg, "caption_channels", None) or getattr(cfg, "cross_attention_dim", None)  # PixArt: text width

    @cached_property
    def supports_guidance(self) -> bool:
        return bool(adapter_for(self.wb.model).supports_guidance(self.wb.model))

    @cached_property
    def default_guidance(self) -> float:
        """The guidance scale the apps start with: the model's own (``default_guidance_scale`` in a
        bundled model's blockmask.json), else 1.5 for models that support guidance, else 1 (off)."""
        if not self.supports_guidance:
            return 1.0
        info = getattr(self.wb.model, "_blockmask_info", None) or {}
        try:
            return max(1.0, float(info.get("default_guidance_scale", 1.5)))
        except (TypeError, ValueError):
            return 1.5

    @cached_property
    def _timesteps(self) -> dict[int, list[int]]:
        return {}

    def timesteps(self, steps: int) -> list[int]:
        """Scheduler timesteps for K steps (cached; the scheduler itself is rebuilt per call)."""
        if steps not in self._timesteps:
            self._timesteps[steps] = self.wb.timesteps(steps)
        return self._timesteps[steps]

    def blocks(self) -> list[tuple[str, int, int]]:
        """(block name, first column, last column) runs of consecutive units in one block."""
        out: list[tuple[str, int, int]] = []
        for u in self.units:
            if out and out[-1][0] == u.block:
                out[-1] = (u.block, out[-1][1], u.index)
            else:
                out.append((u.block, u.index, u.index))
        return out

    def macs_text(self, mask: np.ndarray, *, cfg: bool = False) -> str:
        """'1.23G of 2.00G MACs per image (61.5 %)' for a mask."""
        mult = 2 if cfg else 1
        tot, base = self.macs.total(mask) * mult, self.macs.baseline(mask.shape[0]) * mult
        return f"{format_macs(tot)} of {format_macs(base)} MACs per image ({100 * tot / base:.1f} %)"


def load_context(spec: str, scheduler: str = "ddim", *, device: str | None = "auto") -> ModelContext:
    """Load a model (raises BlockmaskError with a one-line message) and warm its cached facts."""
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", BlockmaskWarning)
        wb = Workbench.load(spec, device=device, scheduler=scheduler)
    notes = tuple(str(w.message) for w in seen if issubclass(w.category, BlockmaskWarning))
    ctx = ModelContext(wb, _model_lock(wb.model), notes)
    ctx.units, ctx.macs, ctx.graph  # measure once, up front (the graph takes a few forwards)
    return ctx


def with_scheduler(ctx: ModelContext, scheduler: str) -> ModelContext:
    """The same loaded model under another scheduler (shares weights, caches and lock)."""
    wb = dataclasses.replace(ctx.wb, scheduler_name=scheduler)
    wb.scheduler()  # validates the name
    return ModelContext(wb, ctx.lock, ctx.warnings)
