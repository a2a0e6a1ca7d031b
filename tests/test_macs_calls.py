"""MACs per model call (issues 26 and 30, bug 2): Heun / EDM call the model twice per step (the last
step once), and every MAC figure (MacProfile, the Workbench, the mask file, ``blockmask macs``)
must equal a FlopCounterMode count of the real run."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockmask.cli.main import main
from blockmask.hooks.costs import MacProfile, count_macs
from blockmask.core.errors import BlockmaskError
from blockmask.sampling.sample import sample
from blockmask.core.schedulers import calls_per_row, make_scheduler

from conftest import tiny_spec


def _mask(wb, steps: int, seed: int) -> np.ndarray:
    m = np.random.default_rng(seed).random((steps, len(wb.units))) < 0.5
    m[0] = True
    return wb.rectify(m).mask


@pytest.mark.parametrize("name", ["tiny-unet", "tiny-dit"])
@pytest.mark.parametrize("scheduler", ["ddim", "heun"])
def test_counted_macs_equal_flop_counter_of_the_real_run(workbenches, name, scheduler):
    wb = workbenches(name, scheduler)
    m = _mask(wb, 4, seed=1)
    assert not m.all()
    real, _ = count_macs(lambda: sample(wb.model, num_steps=4, mask=m, scheduler=wb.scheduler(), seed=0))
    plain, _ = count_macs(lambda: sample(wb.model, num_steps=4, mask=None, scheduler=wb.scheduler(), seed=0))
    p = wb.macs
    assert p.total(m) == pytest.approx(real, rel=0.01)
    assert p.baseline(4) == pytest.approx(plain, rel=0.01)
    assert p.ratio(m) == pytest.approx(real / plain, rel=0.01)
    assert p.model_calls(4) == (7 if scheduler == "heun" else 4)
    meta = wb.mask_file(m).meta["macs"]  # what the mask file records
    assert meta["total"] == pytest.approx(real, rel=0.01) and meta["ratio"] == pytest.approx(real / plain, rel=0.01)


def test_heun_calls_per_row_and_bare_profile_default():
    assert calls_per_row(make_scheduler("heun"), 4).tolist() == [2, 2, 2, 1]
    assert calls_per_row(make_scheduler("edm"), 3).tolist() == [2, 2, 1]
    assert calls_per_row(make_scheduler("ddim"), 5).tolist() == [1] * 5
    p = MacProfile(np.array([3.0, 5.0]), 2.0)  # the old signature: one call per row
    m = np.array([[1, 1], [0, 1], [1, 0]], bool)
    assert p.total(m) == 10 + 7 + 5 and p.baseline(3) == 30
    assert p.total(m, calls=[2, 2, 1]) == 20 + 14 + 5 and p.baseline(3, calls=[2, 2, 1]) == 50
    with pytest.raises(BlockmaskError):
        p.total(m, calls=[1, 1])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(1, 5), st.integers(0, 2**16))
def test_total_is_calls_weighted_sum_of_rows(k, n, seed):
    rng = np.random.default_rng(seed)
    p = MacProfile(rng.random(n) * 10, float(rng.random()))
    m = rng.random((k, n)) < 0.5
    calls = rng.integers(0, 3, k)
    rows = [p.total(m[j:j + 1]) for j in range(k)]  # one row, one call
    assert p.total(m, calls=calls) == pytest.approx(float(np.dot(calls, rows)))
    assert p.ratio(np.ones((k, n), bool), calls=calls + 1) == pytest.approx(1.0)


def test_cli_macs_counts_model_calls(capsys):
    rc = main(["macs", tiny_spec("tiny-unet"), "--steps", "4", "--scheduler", "heun", "--json"])
    heun = json.loads(capsys.readouterr().out)
    rc2 = main(["macs", tiny_spec("tiny-unet"), "--steps", "4", "--json"])
    ddim = json.loads(capsys.readouterr().out)
    assert rc == rc2 == 0
    assert heun["model_calls"] == 7 and heun["calls_per_step"] == [2, 2, 2, 1] and ddim["model_calls"] == 4
    assert heun["baseline_macs"] == pytest.approx(ddim["baseline_macs"] * 7 / 4)


def test_fewer_steps_ratio_counts_model_calls(workbenches):
    """eval's fewer-steps row: Heun with 2 steps of 4 is 3 model calls of 7, not 2/4."""
    from blockmask.eval.evaluate import Method, _speed

    r = _speed(workbenches("tiny-unet", "heun"), Method("Heun 2 steps", None, 2), 4, 1, 1, 1.0)
    assert r["macs_ratio"] == pytest.approx(3 / 7)
