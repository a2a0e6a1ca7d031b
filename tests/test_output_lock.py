"""One output lock for every command that writes (issue 31, items 2 and 3): taken before any work,
never following a link, refusing a second writer with one line, cleaning a killed run's temp files."""

import fcntl
import os

import pytest

from blockmask.cli.main import main
from blockmask.core.errors import OutputError
from blockmask.io.files import OutputLock

from conftest import tiny_spec

MODEL = tiny_spec("tiny-unet")


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_lock_never_follows_a_symlink(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    out = tmp_path / "m.json"
    (tmp_path / "m.json.lock").symlink_to(victim)
    with pytest.raises(OutputError, match="symbolic link"):
        OutputLock(out).__enter__()
    assert victim.read_text() == "precious\n"
    dangling = tmp_path / "made-by-the-lock"
    (tmp_path / "n.json.lock").symlink_to(dangling)
    with pytest.raises(OutputError, match="symbolic link"):
        OutputLock(tmp_path / "n.json").__enter__()
    assert not dangling.exists()  # O_CREAT through a dangling link would have made it


def test_lock_refuses_a_hard_link_and_a_fifo(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    os.link(victim, tmp_path / "m.json.lock")
    with pytest.raises(OutputError, match="hard links"):
        OutputLock(tmp_path / "m.json").__enter__()
    assert victim.read_text() == "precious\n"
    os.mkfifo(tmp_path / "f.json.lock")
    with pytest.raises(OutputError, match="not a regular file"):
        OutputLock(tmp_path / "f.json").__enter__()


@pytest.mark.parametrize("command", ["mask", "train"])
def test_cli_refuses_a_symlinked_lock_and_leaves_its_target(command, tmp_path, capsys):
    """The issue's attack: OUT.lock linked to a victim file; train used to truncate it and write its PID."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "m.json.lock").symlink_to(victim)
    argv = (["mask", "ones", MODEL, "--steps", "3"] if command == "mask" else
            ["train", MODEL, "--steps", "3", "--iters", "1"])
    rc, out, err = _run(argv + ["-o", tmp_path / "m.json"], capsys)
    assert rc == 2 and err.count("\n") == 1 and "symbolic link" in err, err
    assert victim.read_text() == "precious\n" and not (tmp_path / "m.json").exists()


WRITERS = {
    "mask": ["mask", "ones", MODEL, "--steps", "3", "-o", "{o}"],
    "mask --rectify": ["mask", "random", MODEL, "--steps", "3", "--skip", "0.5", "--rectify", "-o", "{o}"],
    "rectify": ["rectify", "{src}", "--model", MODEL, "-o", "{o}"],
    "method": ["method", "feature-change", MODEL, "--steps", "3", "--target-macs", "0.6", "-o", "{o}"],
    "cachedit import": ["cachedit", "import", "{src}", "--model", MODEL, "-o", "{o}"],
    "train": ["train", MODEL, "--steps", "3", "--iters", "1", "-o", "{o}"],
    "sample": ["sample", MODEL, "--steps", "2", "--num-images", "1", "-o", "{o}"],
    "report": ["report", "{src}", "-o", "{o}"],
    "eval": ["eval", MODEL, "--steps", "2", "--num-samples", "2", "-o", "{o}"],
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_second_writer_gets_one_line_and_exit_2(name, tmp_path, capsys):
    """Another process holds the output's lock (flock on its own open file): every command that
    writes is refused before any work, with one line, and writes nothing."""
    src = tmp_path / "src.json"
    assert _run(["mask", "ones", MODEL, "--steps", "3", "-o", src], capsys)[0] == 0
    out = tmp_path / "out"
    argv = [str(a).replace("{o}", str(out)).replace("{src}", str(src)) for a in WRITERS[name]]
    before = sorted(p.name for p in tmp_path.iterdir())
    fd = os.open(tmp_path / "out.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        rc, stdout, err = _run(argv, capsys)
    finally:
        os.close(fd)
    assert rc == 2 and err.count("\n") == 1 and "another run is writing" in err, (rc, err)
    assert stdout == "" and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before + ["out.lock"])


def test_later_run_removes_stale_temp_files(tmp_path, capsys):
    """A killed `mask` or `sample` left its temp files: the next run on that output removes them
    (and only them)."""
    out = tmp_path / "m.json"
    stale = tmp_path / ".m.json.k2j4x9ab.tmp"
    other = tmp_path / ".other.json.k2j4x9ab.tmp"
    stale.write_text("half")
    other.write_text("another output's")
    assert _run(["mask", "ones", MODEL, "--steps", "3", "-o", out], capsys)[0] == 0
    assert not stale.exists() and other.exists() and out.is_file()
    assert not (tmp_path / "m.json.lock").exists()  # removed on a clean exit
    folder = tmp_path / "samples"
    folder.mkdir()
    stale = folder / ".grid.png.a1b2c3d4.tmp"
    stale.write_bytes(b"half a png")
    assert _run(["sample", MODEL, "--steps", "2", "--num-images", "1", "-o", folder], capsys)[0] == 0
    assert sorted(p.name for p in folder.iterdir()) == ["grid.png", "samples.npy"]
