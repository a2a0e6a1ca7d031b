"""``kill -9`` at points of a training run the child itself reports (right after a step's checkpoint,
inside the next step's first model call), and inside its checkpoint and final writes:
``--resume`` loses at most the step in progress and ends with the same mask as an uninterrupted run,
with no temp file, lock or checkpoint left (issue 13). Budget runs (λ bisection) too.

The runs are forked from a clean fork server (blockmask imported once, no autograd state: forking
the test process itself after other tests ran backward passes is unsafe), then killed with SIGKILL."""

from __future__ import annotations

import multiprocessing
import os
import signal

import numpy as np
import pytest

from blockmask.io.maskfile import MaskFile
from blockmask.learning.train import TrainConfig
from blockmask.learning.run import RefineConfig, RunOptions, checkpoint_path, run_training, search_path

from conftest import tiny_spec

CFG = TrainConfig(steps=6, iters=3, batch=1, lam=1.0, seed=3)
BUDGET = dict(target_macs=0.7, max_trials=3, refine=RefineConfig(enabled=False))
_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["blockmask.workbench", "blockmask.learning.run"])


def _child(spec, out, resume, budget, kill_in, progress_file):
    """A training run in a forked process; ``kill_in``: SIGKILL itself inside a write
    ("final-before-rename", "final-after-rename", "checkpoint-3"), right after step k's checkpoint is
    announced ("announced-k"), inside step k's first model call ("inside-k"), or inside the first model
    call after the budget search's first record ("search-1")."""
    try:
        import blockmask.io.files as bio
        from blockmask.workbench import Workbench

        wb = Workbench.load(spec)

        real_replace = bio.os.replace
        ckpt = checkpoint_path(out)
        writes = {"ckpt": 0}
        armed = [False]

        def kill_if_armed(_module, _args):
            if armed[0]:
                os.kill(os.getpid(), signal.SIGKILL)  # inside a step: its forward under way

        wb.model.register_forward_pre_hook(kill_if_armed)

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
            if str(dst) == str(search_path(out)) and kill_in == "search-1":
                armed[0] = True  # the first λ trial is recorded: die inside the next one

        bio.os.replace = replace

        def announce(rep):  # called after the step's checkpoint is written
            if progress_file is not None:
                with open(progress_file, "a") as f:
                    f.write(f"{rep.k}\n")
            if kill_in == f"announced-{rep.k}":
                os.kill(os.getpid(), signal.SIGKILL)  # between steps: checkpoint k written, k + 1 not begun
            if kill_in == f"inside-{rep.k + 1}":
                armed[0] = True

        run_training(wb, CFG, out, RunOptions(resume=resume, **(BUDGET if budget else {})), callback=announce,
                     progress=False)
        os._exit(0)
    except BaseException:  # noqa: BLE001 - report through the exit code, never run pytest's teardown here
        import traceback

        traceback.print_exc()
        os._exit(3)


def _run(wb, out, *, resume, budget=False, kill_in=None, progress_file=None):
    p = _CTX.Process(target=_child, args=(wb.loaded.spec, out, resume, budget, kill_in, progress_file))
    p.start()
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
    from blockmask.workbench import Workbench

    wb = Workbench.load(tiny_spec("tiny-unet"))
    d = tmp_path_factory.mktemp("ref")
    full, _ = run_training(wb, CFG, d / "full.json", progress=False)
    budget, _ = run_training(wb, CFG, d / "budget.json", RunOptions(**BUDGET), progress=False)
    return wb, full, budget


def _check_clean(out, ref: MaskFile):
    got = MaskFile.load(out)
    assert np.array_equal(got.mask, ref.mask) and got.meta["scores"] == ref.meta["scores"]
    left = sorted(p.name for p in out.parent.iterdir() if p.name != out.name and p.name != "progress")
    assert left == [], f"left behind: {left}"


@pytest.mark.slow
@pytest.mark.parametrize("point", ["inside-2", "announced-2", "inside-4", "inside-5", "checkpoint-3",
                                   "final-before-rename", "final-after-rename"])
def test_kill_9_then_resume_gives_the_same_mask(reference, tmp_path, point):
    wb, full, _ = reference
    out = tmp_path / "m.json"
    progress = tmp_path / "progress"
    code = _run(wb, out, resume=False, kill_in=point, progress_file=progress)
    assert code == -signal.SIGKILL  # every point is reached: the child died there
    ck = checkpoint_path(out)
    k = _announced(progress)
    step = int(point.split("-")[1]) if point.startswith(("inside", "announced")) else None
    if point.startswith("inside"):
        assert k == step - 1 and not out.exists()  # died in step `step`, before its checkpoint
    if point.startswith("announced"):
        assert k == step and not out.exists()
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
    wb, _, budget = reference
    out = tmp_path / "b.json"
    code = _run(wb, out, resume=False, budget=True, kill_in="search-1")  # killed inside the second λ trial
    assert code == -signal.SIGKILL and search_path(out).exists() and not out.exists()
    _finish(wb, out, budget=True)
    got = MaskFile.load(out)
    assert np.array_equal(got.mask, budget.mask) and got.meta["budget"]["trials"] == budget.meta["budget"]["trials"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.json"]


def test_two_runs_on_one_output_are_refused(reference, tmp_path):
    from blockmask.core.errors import OutputError
    from blockmask.io.files import OutputLock

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
        "from blockmask.io.files import atomic_write, install_signal_cleanup\n"
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
