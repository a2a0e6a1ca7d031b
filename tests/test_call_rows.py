"""blockmask.core.schedulers.call_rows: the mask row of each model call, stepped once per run and then
memoized per (scheduler class, config, timesteps)."""

import torch

from blockmask.core.schedulers import call_rows


def test_call_rows_is_memoized_per_run_and_follows_the_scheduler(monkeypatch):
    """Every sampling run asks for its call rows; the same (class, config, timesteps) is stepped once."""
    from blockmask.core import schedulers

    stepped = []
    real = schedulers.step
    monkeypatch.setattr(schedulers, "step", lambda *a, **k: (stepped.append(1), real(*a, **k))[1])
    monkeypatch.setattr(schedulers, "_ROWS", {})
    runs = {}
    for name in ("ddim", "heun", "ddim"):
        s = schedulers.make_scheduler(name)
        s.set_timesteps(5)
        before = len(stepped)
        runs.setdefault(name, []).append((call_rows(s), len(stepped) - before))
    assert runs["ddim"][0] == (list(range(5)), 5) and runs["ddim"][1] == (list(range(5)), 0)  # memo: no stepping
    assert runs["heun"][0][0] == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    s = schedulers.make_scheduler("ddim")
    s.set_timesteps(4)
    assert call_rows(s) == list(range(4))  # another step count: its own rows
    s = schedulers.make_scheduler("heun")
    s.set_timesteps(5)
    s.step(torch.zeros(1, 1, 2, 2), s.timesteps[0], torch.zeros(1, 1, 2, 2))  # mid-run: never from the memo
    before = len(stepped)
    call_rows(s)
    assert len(stepped) > before
