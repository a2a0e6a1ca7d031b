"""benchmarks/paced.py: two sampling runs interleaved call by call, each on its own model copy, give
the images each gives alone, and each run's time is its own parts only."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from paced import PacedRun, Spec, interleaved, paced_ratio, twin_of  # noqa: E402

from blockmask.core import baselines  # noqa: E402


def hooked(model: torch.nn.Module) -> bool:
    return any(getattr(getattr(m, "_diffusers_hook", None), "hooks", None) for m in model.modules())


@pytest.mark.parametrize("name", ["tiny-dit", "tiny-unet"])
@pytest.mark.parametrize("reuse", ["hold", "forecast"])
def test_interleaved_runs_give_their_own_images(workbenches, name, reuse):
    wb = workbenches(name)
    twin = twin_of(wb.model)
    n = len(wb.units)
    keep = np.array([u.residual for u in wb.units]) if name == "tiny-dit" else np.zeros(n, bool)
    m = baselines.fora(4, n, interval=2, keep=keep) if keep.any() else baselines.uniform(4, n, every=2)
    cond = wb.condition(class_label=[1, 2], guidance_scale=1.0) if "dit" in name else None
    plain = PacedRun(wb, twin, Spec(6), seed=3, batch=2, condition=cond)
    masked = PacedRun(wb, wb.model, Spec(4, m, reuse), seed=3, batch=2, condition=cond)
    calls = []
    real = masked.call
    masked.call = lambda c: (calls.append(("m", c)), real(c))[1]
    real_p = plain.call
    plain.call = lambda c: (calls.append(("p", c)), real_p(c))[1]
    real_p2 = plain.call
    plain.call = lambda c: (seen_hooks.append(hooked(twin)), real_p2(c))[1]
    seen_hooks = []
    a, b = interleaved(plain, masked, a_first=False)
    assert seen_hooks == [False] * 6  # the plain copy carries no hook while the masked run's are on
    # merged by progress (c + ½) / calls: 4 calls of one run among 6 of the other
    assert calls == [("p", 0), ("m", 0), ("p", 1), ("m", 1), ("p", 2), ("p", 3), ("m", 2), ("p", 4), ("m", 3), ("p", 5)]
    want_a = wb.images(wb.generate(None, steps=6, seed=3, num_images=2, condition=cond)).numpy()
    want_b = wb.images(wb.generate(m, steps=4, seed=3, num_images=2, condition=cond, reuse=reuse)).numpy()
    assert np.array_equal(a, want_a) and np.array_equal(b, want_b)
    assert plain.seconds > 0 and masked.seconds > 0
    assert not hooked(wb.model) and not hooked(twin)  # the execution's hooks are off again


def test_paced_ratio_rounds(workbenches, monkeypatch):
    wb = workbenches("tiny-unet")
    twin = twin_of(wb.model)
    seeds = []
    real = PacedRun.start
    monkeypatch.setattr(PacedRun, "start", lambda self: (seeds.append(self.seed), real(self))[1])
    r = paced_ratio(wb, twin, Spec(4), Spec(2), rounds=3, batch=1, condition=None)
    assert r["rounds"] == 3 and 0 < r["min"] <= r["median"] <= r["max"]
    assert sorted(set(seeds)) == [1, 2, 3, 4] and len(seeds) == 8  # a warm-up round, then seeds 2, 3, 4
    assert all(p is q for p, q in zip(twin.parameters(), wb.model.parameters()))  # one set of weights
    assert all(a is not b for a, b in zip(twin.modules(), wb.model.modules()))  # its own modules


def test_paced_calls_reports_each_round_and_refuses_bad_input(capsys):
    from conftest import tiny_spec
    from paced_calls import main

    assert main([tiny_spec("tiny-dit"), "--steps", "4", "--batch", "2", "--rounds", "2", "--reuse", "forecast"]) == 0
    out = capsys.readouterr().out
    assert out.count("round ") == 2 and "computed / plain" in out and "reused / plain" in out
    assert main([tiny_spec("tiny-dit"), "--rule", "blocks", "--steps", "4", "--batch", "1", "--rounds", "1",
                 "--no-recycle"]) == 0
    assert "no recycling" in capsys.readouterr().out
    from blockmask.hooks import runsums

    plan = runsums.plan
    assert main([tiny_spec("tiny-dit"), "--steps", "4", "--batch", "1", "--rounds", "1", "--no-run-sums"]) == 0
    assert "no run sums" in capsys.readouterr().out and runsums.plan is plan  # put back
    from blockmask.hooks import chaincache

    chain = chaincache.plan
    assert main([tiny_spec("tiny-dit"), "--rule", "blocks", "--steps", "4", "--batch", "1", "--rounds", "1",
                 "--no-chain-cache"]) == 0
    assert "no chain cache" in capsys.readouterr().out and chaincache.plan is chain  # put back
    assert main([tiny_spec("tiny-dit"), "--rounds", "0"]) == 2
    assert main([tiny_spec("tiny-unet"), "--steps", "4"]) == 2
    err = capsys.readouterr().err
    assert "--rounds must be at least 1" in err.replace("--interval, --steps, --batch and ", "")
    assert "no transformer blocks" in err


def test_counted_macs_are_the_timed_runs_own(workbenches):
    """counted_macs counts the code the paced run times: the plain run as a sampling run counts it, a
    FORA run below its planned MAC ratio (the shortcuts skip the norms and make the gates once)."""
    from blockmask.hooks.costs import count_macs
    from paced import counted_macs
    from blockmask.sampling.sample import sample

    wb = workbenches("tiny-dit")
    twin = twin_of(wb.model)
    cond = wb.condition(class_label=[1, 2], guidance_scale=1.0)
    plain = counted_macs(wb, twin, Spec(4), batch=2, condition=cond)
    want, _ = count_macs(lambda: sample(twin, num_steps=4, scheduler=wb.scheduler(), seed=1, batch=2, condition=cond))
    assert plain == pytest.approx(want, rel=1e-9) and plain > 0
    keep = np.array([u.residual for u in wb.units])
    m = baselines.fora(4, len(wb.units), interval=2, keep=keep)
    fora = counted_macs(wb, wb.model, Spec(4, m), batch=2, condition=cond)
    assert fora / plain < wb.macs.ratio(m)


def test_call_profile_reports_each_kind_of_call_and_refuses_bad_input(capsys, monkeypatch):
    from call_profile import main
    from conftest import tiny_spec

    from blockmask.hooks import containers, shortcuts

    monkeypatch.setattr(shortcuts.GateTable, "for_block", shortcuts.GateTable.__dict__["for_block"])  # undone after
    monkeypatch.setattr(containers, "install", containers.install)
    assert main([tiny_spec("tiny-dit"), "--steps", "6", "--batch", "1", "--every", "1", "--rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "plain: 2 calls" in out and "computed: 1 calls" in out and "reused: 1 calls" in out
    assert main([tiny_spec("tiny-dit"), "--steps", "6", "--batch", "1", "--no-gate-tables"]) == 0
    assert "no gate tables" in capsys.readouterr().out
    assert main([tiny_spec("tiny-dit"), "--rows", "0"]) == 2
    assert "must be at least 1" in capsys.readouterr().err
    # a U-Net: the reuse rows reuse every unit, with the whole-container shortcut and without
    assert main([tiny_spec("tiny-unet"), "--steps", "6", "--batch", "1", "--every", "1", "--no-containers"]) == 0
    out = capsys.readouterr().out
    assert "no containers" in out and "reused: 1 calls" in out


def test_run_overheads_reports_each_part_and_refuses_bad_input(capsys):
    from conftest import tiny_spec
    from run_overheads import main

    from blockmask.hooks import runsums, shortcuts
    from blockmask.hooks.execution import MaskedExecution

    real = (shortcuts.GateTable._make, runsums.RunSums.take, torch.Tensor.addcmul_, MaskedExecution.whole_run)
    assert main([tiny_spec("tiny-dit"), "--steps", "4", "--batch", "2", "--runs", "1", "--reuse", "forecast"]) == 0
    out = capsys.readouterr().out
    for part in ("set-up and finish", "gate tables", "run sums", "lean", "non-block call"):
        assert part in out
    import re

    passes = re.search(r"run sums: [0-9.]+ ms per computed step, ([0-9.]+) passes of ([0-9.]+) µs", out)
    assert passes and float(passes.group(1)) > 0 and float(passes.group(2)) > 0  # (the take's passes were timed)
    assert (shortcuts.GateTable._make, runsums.RunSums.take, torch.Tensor.addcmul_, MaskedExecution.whole_run) == real
    assert main([tiny_spec("tiny-dit"), "--runs", "0"]) == 2
    assert main([tiny_spec("tiny-unet"), "--steps", "4"]) == 2
    err = capsys.readouterr().err
    assert "must be at least 1" in err and "not a DiT" in err
