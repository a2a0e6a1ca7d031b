"""Outputs: checked before any work, locked against a second run, written atomically.

* :func:`check_output_file` / :func:`check_output_folder`: the folder exists and is writable, the
  path is not a folder (or not a file, for folder outputs) — called before a run starts, so a long
  run never fails at its last step.
* :class:`OutputLock`: ``OUTPUT.lock`` held with ``flock`` for the whole run (the CLI takes it for
  every command that writes); a second run on the same output is refused with one line. Opened with
  ``O_NOFOLLOW``: a planted link is refused, its target never touched. A killed run's lock dies with
  its process, and the next run removes the temp files it left (``.NAME.XXXXXXXX.tmp``).
* :func:`atomic_write`: write to a temporary file next to the target, then rename: a crash or a full
  disk never leaves a half-written file under the final name; the temp file is removed on any
  exception, and on SIGINT/SIGTERM once :func:`install_signal_cleanup` made SIGTERM an exception.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import signal
import stat
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from blockmask.core.errors import OutputError


def _check_parent(path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"output folder does not exist: {parent}")
    if not parent.is_dir():
        raise OutputError(f"output folder is not a folder: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder is not writable: {parent}")
    if path.is_dir():
        raise OutputError(f"output path is a folder, expected a file: {path}")
    if path.is_symlink() and not path.exists():
        raise OutputError(f"output {path} is a dangling symbolic link (or a link loop); remove it or choose another")
    if path.exists() and not path.is_file():
        raise OutputError(f"output path exists and is not a regular file: {path}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"output file is not writable: {path}")


def check_output_file(path) -> Path:
    """Refuse, before any work, an output file that could not be written at the end."""
    path = Path(path)
    if not str(path) or path.name in ("", ".", ".."):
        raise OutputError(f"output must be a file name, got {str(path)!r}")
    _check_parent(path)
    return path


def check_output_folder(path) -> Path:
    """Refuse, before any work, an output folder that is a file or whose parent is missing/unwritable."""
    path = Path(path)
    if path.is_symlink() and not path.exists():  # mkdir would fail on it once the work is done
        raise OutputError(f"output {path} is a dangling symbolic link (or a link loop); remove it or choose another")
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"output {path} exists and is not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise OutputError(f"output folder is not writable: {path}")
        return path
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"output folder's parent does not exist: {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"output folder's parent is not writable: {parent}")
    return path


def _temp_pattern(name: str) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(name)}\.[a-z0-9_]{{8}}\.tmp$")  # what atomic_write's mkstemp makes


def remove_stale_temps(path) -> list[Path]:
    """Delete temp files a killed writer of ``path`` left (call only while holding its lock)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    pat = _temp_pattern(path.name)
    gone = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return gone
    for e in entries:
        if pat.match(e.name):
            try:
                os.unlink(e.path)
                gone.append(Path(e.path))
            except OSError:
                pass
    return gone


def remove_stale_temps_in(folder) -> list[Path]:
    """Delete every temp file :func:`atomic_write` left inside an output folder (call only while
    holding the folder's lock)."""
    pat = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
    gone = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return gone
    for e in entries:
        if pat.match(e.name) and e.is_file(follow_symlinks=False):
            try:
                os.unlink(e.path)
                gone.append(Path(e.path))
            except OSError:
                pass
    return gone


class OutputLock:
    """Exclusive lock on ``PATH.lock`` for one run writing ``path`` (a file, or with ``folder=True`` a
    folder; plus its companions, e.g. the checkpoint). ``flock`` is released by the kernel when the
    process dies, so a killed run never blocks the next one; the lock file is removed on a clean exit.

    The lock file is opened with ``O_NOFOLLOW | O_NONBLOCK`` and must be a regular file with one link:
    a symlink (or hard link, FIFO, device) planted at ``PATH.lock`` is refused and its target never
    opened, truncated or written."""

    def __init__(self, path, companions: tuple = (), folder: bool = False):
        self.path = Path(path)
        base = Path(os.path.abspath(self.path)) if folder else self.path  # a folder "." locks ../NAME.lock
        self.lock_path = Path(str(base) + ".lock")
        self.companions = [Path(c) for c in companions]
        self.folder = folder
        self.fd = None

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.lock_path, flags, 0o666 & ~_umask())
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise OutputError(f"lock file {self.lock_path} is a symbolic link; remove it (a lock never "
                                  "follows a link)") from None
            raise OutputError(f"cannot create lock file {self.lock_path}: {e.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            what = "is not a regular file" if not stat.S_ISREG(st.st_mode) else "has other hard links"
            raise OutputError(f"lock file {self.lock_path} {what}; remove it")
        return fd

    def __enter__(self) -> "OutputLock":
        import fcntl

        (check_output_folder if self.folder else check_output_file)(self.path)
        for _ in range(10):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputError(f"another run is writing {self.path} (lock {self.lock_path} is held); wait for "
                                  "it or choose another output") from None
            try:  # the file we locked must still be the one at lock_path (not unlinked by a finishing run)
                same = os.fstat(fd).st_ino == os.lstat(self.lock_path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise OutputError(f"could not lock {self.lock_path}")
        self.fd = fd
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:  # a full disk: the flock alone is the lock
            pass
        for p in [self.path, *self.companions]:
            remove_stale_temps(p)
        if self.folder and self.path.is_dir():
            remove_stale_temps_in(self.path)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is None:
            return
        try:
            if os.fstat(self.fd).st_ino == os.lstat(self.lock_path).st_ino:
                os.unlink(self.lock_path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM, so ``finally`` blocks and temp-file cleanup run."""


def install_signal_cleanup() -> None:
    """Turn SIGTERM into an exception (SIGINT already is KeyboardInterrupt): temp files are removed
    and locks released on the way out. Main thread only; a no-op elsewhere."""
    def handler(signum, frame):
        raise Terminated(128 + signum)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        pass


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except OSError as e:
        _unlink(tmp)
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    except BaseException:
        _unlink(tmp)
        raise
    return path


def atomic_write_all(writers: list[tuple[Path, Callable[[str], None], bool]]) -> dict[Path, str | None]:
    """Several files as one: every ``write(tmp)`` runs first (each to a temp file next to its target),
    then all are renamed. A required writer that fails (a full disk) removes every temp file and
    raises, so no partial set is left; an optional one that fails is skipped and its error returned."""
    staged, errors = [], {}
    try:
        for path, write, required in writers:
            path = Path(path)
            _check_parent(path)
            try:
                fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
            except OSError as e:
                raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
            os.close(fd)
            staged.append((tmp, path))
            try:
                write(tmp)
                os.chmod(tmp, _mode_for(path))
            except OSError as e:
                if required:
                    raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
                errors[path] = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            except Exception as e:
                if required:
                    raise
                errors[path] = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
            if path in errors:
                _unlink(tmp)
                staged.pop()
    except BaseException:
        for tmp, _ in staged:
            _unlink(tmp)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)
    return {Path(p): errors.get(Path(p)) for p, _, _ in writers}


def text_writer(text: str) -> Callable[[str], None]:
    def w(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return w


def _unlink(p) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def w(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, w)


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    """Strict JSON (no NaN/Infinity tokens: non-finite floats are written as null)."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=1, allow_nan=False) + "\n")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    def w(tmp):
        with open(tmp, "wb") as f:
            f.write(data)

    return atomic_write(path, w)


def jsonable(obj):
    """Make meta JSON-safe: numpy → lists/floats, non-finite floats → None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    return obj
