"""Atomic outputs: no temp file left, and the mode an ordinary write would give."""

import os
import stat

from blockmask.io.files import atomic_write_text


def test_new_file_follows_umask_and_overwrite_keeps_mode(tmp_path):
    old = os.umask(0o027)
    try:
        p = atomic_write_text(tmp_path / "a.json", "{}")
        assert stat.S_IMODE(p.stat().st_mode) == 0o640
    finally:
        os.umask(old)
    os.chmod(p, 0o604)
    atomic_write_text(p, "[]")
    assert stat.S_IMODE(p.stat().st_mode) == 0o604 and p.read_text() == "[]"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["a.json"]  # no .tmp left behind
