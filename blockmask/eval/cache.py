"""The evaluation cache: signed entries, no pickle (METHOD.md §7).

An entry is two files in the cache folder: ``NAME.bin`` (the payload: ``.npy`` bytes of the samples,
or safetensors bytes of reference features) and ``NAME.json``::

    {"format": "blockmask-cache/1", "name": NAME, "meta": {...the row...},
     "sha256": <payload hash>, "mac": HMAC-SHA256(key, name + meta + sha256)}

The key is 32 random bytes in a file outside the cache folder, readable only by the user
(``$BLOCKMASK_CACHE_KEY_FILE``, default ``~/.config/blockmask/cache-key``, created on first use).
A cache folder copied from elsewhere, a row edited by hand or a planted file therefore never
verifies: it is reported once and recomputed. Payloads are read only after their hash matches, and
only with pickle-free loaders (``np.load(allow_pickle=False)``, safetensors). torch-fidelity's own
cache (which loads ``.pt`` files with pickle) is never used.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import secrets
import sys
from pathlib import Path

import numpy as np

from blockmask.core.errors import CacheError, FileFormatError
from blockmask.core.validate import field, read_bytes, read_json_file
from blockmask.io.files import atomic_write_bytes, atomic_write_json, jsonable

FORMAT = "blockmask-cache/1"
MAX_PAYLOAD = 4 * 2**30  # bytes


def key_file() -> Path:
    env = os.environ.get("BLOCKMASK_CACHE_KEY_FILE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "blockmask" / "cache-key"


_EPHEMERAL = secrets.token_bytes(32)  # when no key file can be kept: entries verify only in this process


def cache_key() -> bytes:
    """This user's secret cache key (created 0600 on first use)."""
    p = key_file()
    try:
        data = p.read_bytes()
        if len(data) >= 32:
            return data
    except OSError:
        pass
    try:  # write a complete key under a temp name, then link it in: a concurrent reader never sees half
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        try:
            os.link(tmp, p)  # fails if another process won the race: use its key
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        data = p.read_bytes()
        if len(data) < 32:
            raise OSError("cache key file too short")
        return data
    except OSError:
        print(f"warning: cannot keep a cache key at {p}; cached rows will be recomputed next time", file=sys.stderr)
        return _EPHEMERAL


def _mac(key: bytes, name: str, meta: dict, digest: str) -> str:
    msg = json.dumps({"name": name, "meta": meta, "sha256": digest}, sort_keys=True, allow_nan=False).encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


class SignedCache:
    """``put(name, meta, payload)`` / ``get(name) -> (meta, payload) | None`` in ``folder``."""

    def __init__(self, folder):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise CacheError(f"cache folder {self.folder} exists and is not a folder") from None
        except OSError as e:
            raise CacheError(f"cannot create cache folder {self.folder}: {e.strerror}") from None
        if not self.folder.is_dir():
            raise CacheError(f"cache folder {self.folder} exists and is not a folder")
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise CacheError(f"cache folder {self.folder} is not writable")
        self.key = cache_key()
        self.rejected: list[str] = []  # entries that failed verification (reported, then recomputed)

    def _paths(self, name: str) -> tuple[Path, Path]:
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"bad cache entry name {name!r}")
        return self.folder / f"{name}.json", self.folder / f"{name}.bin"

    def get(self, name: str):
        """(meta, payload bytes) when both files exist and verify; None otherwise (a failed check is
        reported on stderr and recorded in ``rejected``)."""
        meta_p, bin_p = self._paths(name)
        if not meta_p.exists() and not bin_p.exists():
            return None
        try:
            d = read_json_file(meta_p, "cache entry", max_bytes=16 * 2**20)
            if field(d, "format", "str", str(meta_p)) != FORMAT or d.get("name") != name:
                raise FileFormatError(meta_p, "is not an entry of this cache")
            meta = field(d, "meta", "dict", str(meta_p))
            digest = field(d, "sha256", "str", str(meta_p))
            mac = field(d, "mac", "str", str(meta_p))
            if not hmac.compare_digest(mac, _mac(self.key, name, meta, digest)):
                raise FileFormatError(meta_p, "signature does not match (written by someone else, or edited)")
            payload = read_bytes(bin_p, "cache payload", max_bytes=MAX_PAYLOAD)
            if hashlib.sha256(payload).hexdigest() != digest:
                raise FileFormatError(bin_p, "content does not match its recorded hash")
        except FileFormatError as e:
            self.rejected.append(name)
            print(f"warning: ignoring cache entry: {e}; recomputing it", file=sys.stderr)
            return None
        return meta, payload

    def put(self, name: str, meta: dict, payload: bytes) -> dict:
        """Write an entry; returns ``meta`` as it will be read back (JSON: non-finite numbers → None)."""
        meta_p, bin_p = self._paths(name)
        digest = hashlib.sha256(payload).hexdigest()

        meta = json.loads(json.dumps(jsonable(meta), allow_nan=False, default=float))  # what will be read back
        atomic_write_bytes(bin_p, payload)
        atomic_write_json(meta_p, {"format": FORMAT, "name": name, "meta": meta, "sha256": digest,
                                   "mac": _mac(self.key, name, meta, digest)})
        return meta


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    return buf.getvalue()


def npy_load(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)
