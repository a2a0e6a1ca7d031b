"""``kill -9`` at random points of a training run, and inside its checkpoint and final writes:
``--resume`` loses at most the step in progress and ends with the same mask as an uninterrupted run,
with no temp file, lock or checkpoint left (issue 13). Budget runs (λ bisection) too.

The runs are forked from a clean fork server (blockmask imported once, no autograd state: forking
the test process itself after other tests ran backward passes is unsafe), then killed with SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time

import numpy as np
import pytest

from blockmask.mask import MaskFile
from blockmask.train import TrainConfig
from blockmask.train_run import RefineConfig, checkpoint_path, run_training, search_path

from conftest import tiny_spec

CFG = TrainConfig(steps=6, iters=3, batch=1, lam=1.0, seed=3)
BUDGET = dict(target_macs=0.7, max_trials=3, refine=RefineConfig(enabled=False))
_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["blockmask.api", "blockmask.train_run"])


def _child(spec, out, resume, budget, kill_in, progress_file):
    """A training run in a forked process; ``kill_in``: SIGKILL itself inside a write
    ("final-before-rename", "final-after-rename", "checkpoint-3")."""
    try:
        import blockmask.io as bio
        from blockmask.api import Workbench

        wb = Workbench.load(spec)

        real_replace = bio.os.replace
        ckpt = checkpoint_path(out)
        writes = {"ckpt": 0}

        def replace(src, dst):
            if str(dst) == str(ckpt):
                writes["ckpt"] += 1
                if kill_in == "checkpoint-3" and writes["ckpt"] == 3:
                    os.kill(os.getpid(), signal.SIGKILL)  # temp file written, not renamed
            if str(dst) == str(out) and kill_in == "final-before-rename":
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)
            if str(dst) == str(out) and kill_in == "final-after-rename":
                os.kill(os.getpid(), signal.SIGKILL)  # mask in place, checkpoint not yet removed

        bio.os.replace = replace

        def announce(rep):  # called after the step's checkpoint is written
            if progress_file is not None:
                with open(progress_file, "a") as f:
                    f.write(f"{rep.k}\n")

        run_training(wb, CFG, out, resume=resume, callback=announce, progress=False, **(BUDGET if budget else {}))
        os._exit(0)
    except BaseException:  # noqa: BLE001 - report through the exit code, never run pytest's teardown here
        import traceback

        traceback.print_exc()
        os._exit(3)


def _run(wb, out, *, resume, budget=False, kill_in=None, kill_after=None, progress_file=None):
    p = _CTX.Process(target=_child, args=(wb.loaded.spec, out, resume, budget, kill_in, progress_file))
    p.start()
    if kill_after is not None:
        p.join(kill_after)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
    p.join(300)
    return p.exitcode


def _announced(progress_file) -> int | None:
    try:
        lines = open(progress_file).read().split()
    except FileNotFoundError:
        return None
    return int(lines[-1]) if lines else None


def _finish(wb, out, budget):
    """Resume (or start, when the kill came before the first checkpoint) until the run completes."""
    for _ in range(3):
        if out.exists() and not checkpoint_path(out).exists() and not search_path(out).exists():
            return
        resume = checkpoint_path(out).exists() or search_path(out).exists()
        assert _run(wb, out, resume=resume, budget=budget) == 0
    raise AssertionError("did not finish")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from blockmask.api import Workbench

    t0 = time.perf_counter()
    wb = Workbench.load(tiny_spec("tiny-unet"))
    wb.macs, wb.graph  # noqa: B018 - what a child also measures before training
    load = time.perf_counter() - t0
    d = tmp_path_factory.mktemp("ref")
    t0 = time.perf_counter()
    full, _ = run_training(wb, CFG, d / "full.json", progress=False)
    seconds = time.perf_counter() - t0 + load  # a child loads the model, then trains
    budget, _ = run_training(wb, CFG, d / "budget.json", progress=False, **BUDGET)
    return wb, full, budget, seconds


def _check_clean(out, ref: MaskFile):
    got = MaskFile.load(out)
    assert np.array_equal(got.mask, ref.mask) and got.meta["scores"] == ref.meta["scores"]
    left = sorted(p.name for p in out.parent.iterdir() if p.name != out.name and p.name != "progress")
    assert left == [], f"left behind: {left}"


@pytest.mark.slow
@pytest.mark.parametrize("point", ["random-0", "random-1", "random-2", "checkpoint-3", "final-before-rename",
                                   "final-after-rename"])
def test_kill_9_then_resume_gives_the_same_mask(reference, tmp_path, point):
    wb, full, _, seconds = reference
    out = tmp_path / "m.json"
    progress = tmp_path / "progress"
    if point.startswith("random"):
        rng = random.Random(f"blockmask-kill-{point}")
        code = _run(wb, out, resume=False, kill_after=rng.uniform(0.05, 1.0) * seconds, progress_file=progress)
    else:
        code = _run(wb, out, resume=False, kill_in=point, progress_file=progress)
    assert code in (-signal.SIGKILL, 0)
    ck = checkpoint_path(out)
    k = _announced(progress)
    if k is not None and not out.exists():  # every announced step is in the checkpoint: ≤ the step in progress lost
        import json

        assert len(json.loads(ck.read_text())["state"]["rows"]) >= k + 1
    if point.startswith("final"):
        assert ck.exists() and (out.exists() == (point == "final-after-rename"))  # checkpoint kept until the end
    if point in ("checkpoint-3", "final-before-rename"):
        assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())  # the kill left a temp file…
    _finish(wb, out, budget=False)
    _check_clean(out, full)  # …which the resumed run removed


@pytest.mark.slow
def test_kill_9_budget_run_resumes(reference, tmp_path):
    """--target-macs (λ bisection) checkpoints each trial and the search; resume continues it."""
    wb, _, budget, seconds = reference
    out = tmp_path / "b.json"
    p = _CTX.Process(target=_child, args=(wb.loaded.spec, out, False, True, None, None))
    p.start()
    t0 = time.time()
    while not search_path(out).exists() and p.is_alive() and time.time() - t0 < 120:
        time.sleep(0.02)  # the first λ trial is done and recorded
    if p.is_alive():  # …and the next one is under way: kill it there
        os.kill(p.pid, signal.SIGKILL)
    p.join(60)
    assert p.exitcode == -signal.SIGKILL and search_path(out).exists() and not out.exists()
    _finish(wb, out, budget=True)
    got = MaskFile.load(out)
    assert np.array_equal(got.mask, budget.mask) and got.meta["budget"]["trials"] == budget.meta["budget"]["trials"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]


def test_two_runs_on_one_output_are_refused(reference, tmp_path):
    from blockmask.errors import OutputError
    from blockmask.io import OutputLock

    wb = reference[0]
    out = tmp_path / "m.json"
    with OutputLock(out):
        with pytest.raises(OutputError, match="another run is writing"):
            run_training(wb, CFG, out, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sigterm_removes_temp_files(tmp_path):
    """SIGTERM during a write: the temp file is removed and the old file kept (CLI installs the handler)."""
    import subprocess
    import sys

    script = (
        "import os, signal, time\n"
        "from blockmask.io import atomic_write, install_signal_cleanup\n"
        "install_signal_cleanup()\n"
        "def w(tmp):\n"
        "    open(tmp, 'w').write('partial')\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        f"atomic_write({str(tmp_path / 'out.txt')!r}, w)\n"
    )
    (tmp_path / "out.txt").write_text("old")
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "writing"
    p.send_signal(signal.SIGTERM)
    assert p.wait(60) == 128 + signal.SIGTERM
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.txt"] and (tmp_path / "out.txt").read_text() == "old"
