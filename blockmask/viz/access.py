"""Which models a visitor of an app may load (the public-Space security model, README "Security").

A visitor picks a *name* from a fixed list; the name maps to a spec only the operator chose:

* the bundled models (``assets/models/``) and the random-init fallback are always offered;
* ``$BLOCKMASK_APP_MODEL`` (the start model) is offered;
* ``$BLOCKMASK_APP_ALLOW`` (comma-separated) and the apps' ``--allow-model SPEC`` flag add folders,
  ``config:PATH.json`` files and hub ids. The single entry ``*`` lets visitors type any spec — only
  for a machine you alone use.

Masks named by a hub id or a folder (``MaskEditor.load_source``) follow the same rule: none are
accepted unless the operator lists them in ``$BLOCKMASK_APP_ALLOW_MASKS`` (comma-separated) or with the
apps' ``--allow-mask`` flag — an exact repo id or folder, a prefix ending in ``/`` or ``*`` (``someone/``,
``./masks/``), or ``*`` for any. The shipped mask names are always accepted.

Anything else is refused with one message that does not say whether such a file or folder exists;
an allowed model that fails to load gets one message for missing and unreadable alike. Choice values
are short names (bundled name, config stem, folder name, hub id): no machine paths reach the page.
"""

from __future__ import annotations

import dataclasses
import os
from collections import OrderedDict
from pathlib import Path
from threading import Lock
from typing import Callable, Generic, TypeVar

from blockmask.core.errors import BlockmaskError
from blockmask.io.models import bundled_masks
from blockmask.viz.context import spec_label

ENV_ALLOW = "BLOCKMASK_APP_ALLOW"
ENV_ALLOW_MASKS = "BLOCKMASK_APP_ALLOW_MASKS"
ANY = "*"
MAX_UPLOAD_BYTES = 2_000_000  # a K=1000 × N=100 mask with Δ_k/λ_k meta is ~0.5 MB
MAX_MODELS = 3  # loaded models kept per app process (LRU)

T = TypeVar("T")


class ModelNotOffered(BlockmaskError):
    """The visitor asked for a model this app does not offer."""


def _name(spec: str) -> str:
    """Short public name of a spec: config stem, folder name, hub id or bundled name."""
    if spec.startswith("config:"):
        return Path(spec[7:]).stem
    if spec.startswith(("/", ".", "~")):
        return Path(spec).name
    return spec


@dataclasses.dataclass(frozen=True)
class ModelPolicy:
    """Public name → spec of every model an app offers, in picker order."""

    names: tuple[tuple[str, str], ...]  # (public name, spec)
    any_spec: bool = False  # the operator allowed typed specs ('*')

    @classmethod
    def from_env(cls, defaults: list[str], extra: list[str] | tuple[str, ...] = ()) -> "ModelPolicy":
        """``defaults``: specs always offered (start model, bundled, fallback); ``extra``: --allow-model."""
        allow = [s.strip() for s in os.environ.get(ENV_ALLOW, "").split(",") if s.strip()] + list(extra)
        pairs: dict[str, str] = {}
        for spec in [*defaults, *[a for a in allow if a != ANY]]:
            name = _name(spec)
            while name in pairs and pairs[name] != spec:  # two folders with one name: number them
                name += "'"
            pairs.setdefault(name, spec)
        return cls(tuple(pairs.items()), ANY in allow)

    def label(self, name: str) -> str:
        """Picker label of a public name (no machine paths: folders show their name)."""

        spec = dict(self.names).get(name, name)
        return spec_label(spec) if not spec.startswith(("/", ".", "~")) else f"{name} (local folder)"

    def choices(self) -> list[str]:
        return [n for n, _ in self.names]

    def name_of(self, spec: str) -> str:
        for n, s in self.names:
            if s == spec:
                return n
        return spec

    def resolve(self, choice: str) -> str:
        """The spec behind a visitor's choice; ModelNotOffered (one message, no file probing) otherwise."""
        choice = str(choice or "").strip()
        for n, s in self.names:
            if choice == n:
                return s
        if self.any_spec and choice:
            return choice
        raise ModelNotOffered(f"model {choice[:80]!r} is not offered by this app; choose one of: "
                              f"{', '.join(self.choices())} (the operator can allow more with ${ENV_ALLOW})")


class MaskNotOffered(BlockmaskError):
    """The visitor named a mask (hub id or folder) that the operator did not allow."""


@dataclasses.dataclass(frozen=True)
class MaskPolicy:
    """Which hub ids / folders visitors may load a mask from (none unless the operator allows them)."""

    entries: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, extra: list[str] | tuple[str, ...] = ()) -> "MaskPolicy":
        """``$BLOCKMASK_APP_ALLOW_MASKS`` (comma-separated) plus the apps' ``--allow-mask`` values."""
        env = [s.strip() for s in os.environ.get(ENV_ALLOW_MASKS, "").split(",")]
        return cls(tuple(e for e in [*env, *(str(x).strip() for x in extra)] if e))

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    @staticmethod
    def _norm(s: str) -> str:
        """A folder entry/source as an absolute path string (hub ids stay as they are; a hub-id-like name
        that exists on disk is a folder to the loader, so it is resolved too)."""
        if s.startswith(("/", ".", "~")) or (s.rstrip("*") and Path(s.rstrip("*")).exists()):
            tail = "/" if s.endswith(("/", "*")) else ""
            return str(Path(s.rstrip("*")).expanduser().resolve()) + tail
        return s

    def allows(self, source: str) -> bool:
        source = str(source or "").strip()
        if not source or "\0" in source or len(source) > 500:
            return False
        if source in bundled_masks():
            return True
        if any(part == ".." for part in source.replace("\\", "/").split("/")):
            return False  # never climb out of an allowed folder or prefix
        src = self._norm(source)
        for e in self.entries:
            if e == ANY:
                return True
            if e.endswith(("/", "*")):
                pre = self._norm(e).rstrip("*")
                if src.startswith(pre) and len(src) > len(pre):
                    return True
            elif src == self._norm(e):
                return True
        return False

    def check(self, source: str) -> str:
        """The source (stripped) when allowed; MaskNotOffered with how to enable it otherwise."""
        source = str(source or "").strip()
        if not source:
            raise MaskNotOffered("type a hub repo id (owner/name) or a folder to load a mask from")
        if not self.allows(source):
            how = ("this app loads no masks from the hub or folders" if not self.enabled else
                   f"mask {source[:80]!r} is not allowed by this app")
            raise MaskNotOffered(f"{how}; the operator can allow repo ids, folders or prefixes with "
                                 f"${ENV_ALLOW_MASKS}=owner/name,owner/ or --allow-mask")
        return source


def load_failed(name: str, err: Exception) -> BlockmaskError:
    """One message for an allowed model that is missing, unreadable or broken (nothing about which)."""
    return BlockmaskError(f"model {name!r} could not be loaded (missing, unreadable or not a supported "
                          f"diffusers model{'; offline' if os.environ.get('HF_HUB_OFFLINE') == '1' else ''})")


class LRU(Generic[T]):
    """A small thread-safe LRU cache of loaded objects (shared by every visitor of an app)."""

    def __init__(self, size: int = MAX_MODELS):
        self.size, self._d, self._lock = size, OrderedDict(), Lock()

    def get(self, key, make: Callable[[], T]) -> T:
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
            val = make()  # under the lock: two visitors never load one model twice
            self._d[key] = val
            while len(self._d) > self.size:
                self._d.popitem(last=False)
            return val

    def __len__(self) -> int:
        return len(self._d)


def check_upload_size(size: int | None, name: str = "uploaded file") -> None:
    """Refuse an upload over :data:`MAX_UPLOAD_BYTES` before its bytes are read."""
    if size is not None and size > MAX_UPLOAD_BYTES:
        raise BlockmaskError(f"{name}: {size / 1e6:.1f} MB is over this app's limit of "
                             f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB for a mask file")
