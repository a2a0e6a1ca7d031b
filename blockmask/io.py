"""Atomic file output: write to a temporary file next to the target, then rename.

A crash or a full disk never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from .errors import BlockmaskError


def _check_parent(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise BlockmaskError(f"output folder does not exist: {parent}")
    if not os.access(parent, os.W_OK):
        raise BlockmaskError(f"output folder is not writable: {parent}")
    if path.is_dir():
        raise BlockmaskError(f"output path is a folder, expected a file: {path}")


def _mode_for(path: Path) -> int:
    """The mode the output should have: an existing file's own, else what the umask gives a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, briefly, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically rename ``tmp_path`` to ``path``. The file gets the
    mode an ordinary write would give it (an overwrite keeps the old mode; a new file follows the
    umask), not the temp file's 0600."""
    path = Path(path)
    _check_parent(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def w(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, w)


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    """Strict JSON (no NaN/Infinity tokens: non-finite floats are written as null)."""
    from .mask import jsonable

    return atomic_write_text(path, json.dumps(jsonable(obj), indent=1, allow_nan=False) + "\n")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def w(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, w)
