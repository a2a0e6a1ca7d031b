"""Mask training (METHOD.md §2-3): behaviour, determinism, resume, budgets, memory, CLI errors."""

import dataclasses
import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from blockmask.cli.main import main
from blockmask.core.errors import BlockmaskError
from blockmask.io.maskfile import MaskFile
from blockmask.sampling.sample import sample
from blockmask.learning import train as train_module
from blockmask.learning.scaling import LambdaSchedule, Sensitivity, output_sensitivity, probe_steps
from blockmask.learning.train import Observers, TrainConfig, train_mask
from blockmask.learning.run import RunOptions, checkpoint_path, run_training

from conftest import tiny_spec


def _train(wb, **kw):
    cfg = TrainConfig(**{"steps": 6, "iters": 8, "batch": 2, "lr": 0.6, **kw})
    p = wb.macs
    return train_mask(wb.model, wb.scheduler(), cfg, p, observers=Observers(progress=False))


def test_lambda_zero_keeps_all_ones(workbenches):
    st = _train(workbenches("tiny-unet"), lam=0.0, iters=5)
    assert np.array(st.rows).all()


def test_larger_lambda_fewer_macs(workbenches):
    wb = workbenches("tiny-dit")
    ratios = []
    for lam in (0.0, 0.3, 3.0, 30.0):
        ratios.append(np.mean([wb.macs.ratio(np.array(_train(wb, lam=lam, seed=s).rows, bool)) for s in (0, 1)]))
    assert ratios[0] == 1.0 and ratios[-1] < ratios[0]
    assert all(b <= a + 0.05 for a, b in zip(ratios, ratios[1:])), ratios  # monotone on average


def test_loss_decreases_during_optimization(workbenches):
    """With a strong λ the objective is dominated by the (deterministic) sparsity term: it must go down."""
    st = _train(workbenches("tiny-unet"), lam=50.0, iters=15)
    for losses in st.losses[1:]:
        assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_seed_determinism(workbenches):
    wb = workbenches("tiny-dit")
    a, b = _train(wb, lam=1.0, seed=3), _train(wb, lam=1.0, seed=3)
    assert a.rows == b.rows and a.scores == b.scores


@pytest.mark.parametrize("sampler", ["random", "gumbel"])
def test_samplers_run_on_every_architecture(workbenches, sampler):
    for name in ("tiny-unet", "tiny-unet-cond", "tiny-dit", "tiny-pixart"):
        wb = workbenches(name)
        st = _train(wb, lam=1.0, sampler=sampler, iters=3, guidance_scale=2.0 if name != "tiny-unet" else 1.0)
        m = np.array(st.rows, bool)
        assert m.shape == (6, len(wb.units)) and m[0].all()


def test_delta_and_lambda():
    d = np.array([np.nan, 0.9, 0.5, 0.1, 0.05])
    lam = LambdaSchedule(lam=2.0, low=0.1, high=1.0, tau=0.5).weights(d)
    assert lam[1] == pytest.approx(0.2) and lam[3] == pytest.approx(2.0) and lam[4] == pytest.approx(2.0)
    assert (LambdaSchedule(mode="constant", lam=2.0).weights(d) == 2.0).all()
    with pytest.raises(BlockmaskError, match="lambda must be >= 0"):
        LambdaSchedule(lam=-1)


@pytest.mark.parametrize("norm", ["step", "sensitivity"])
def test_training_follows_its_own_masked_trajectory(workbenches, monkeypatch, norm):
    """Each step is learned on the state the already-binarized rows produce: every 0 learned in a row
    is a reused cache in the run that moves the trajectory on (not a fresh unmasked one)."""
    seen = {}

    class Recording(train_module.MaskedExecution):
        def __exit__(self, *exc):
            seen["skipped"] = self.skipped
            return super().__exit__(*exc)

    monkeypatch.setattr(train_module, "MaskedExecution", Recording)
    st = _train(workbenches("tiny-unet"), lam=3.0, feature_norm=norm, probes=None)
    zeros = int((~np.array(st.rows, bool)).sum())
    assert zeros > 0 and seen["skipped"] == zeros


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "dpm", "euler"])
def test_sensitivity_probe_equals_a_real_sampling_run(workbenches, scheduler):
    """final[k] is exactly the squared error of a full run whose row k reuses every cache (also for
    stochastic and multistep schedulers, whose RNG and history are restored at the restart)."""
    wb = workbenches("tiny-unet", scheduler)
    k_steps = 5
    sens = output_sensitivity(wb.model, wb.scheduler(), num_steps=k_steps, seed=3, batch=2, probes=None)
    assert sens.probed == [1, 2, 3, 4]
    ref = sample(wb.model, num_steps=k_steps, scheduler=wb.scheduler(), seed=3, batch=2)
    for k, fin in zip(sens.probed, sens.final):
        m = np.ones((k_steps, len(wb.units)), bool)
        m[k] = False
        out = sample(wb.model, num_steps=k_steps, scheduler=wb.scheduler(), mask=m, seed=3, batch=2)
        assert fin == pytest.approx(float((out - ref).pow(2).mean()), rel=1e-5, abs=1e-12)
    assert all(v > 0 for v in sens.local)


def test_sensitivity_weights_interpolate_and_normalize():
    s = Sensitivity(probed=[1, 3], local=[1.0, 4.0], final=[2.0, 0.5])
    w = s.weights(4)
    assert np.isnan(w[0])
    mean_final = 1.25
    assert w[1] == pytest.approx(2.0 / mean_final) and w[3] == pytest.approx(0.125 / mean_final)
    assert w[2] == pytest.approx(np.sqrt(2.0 * 0.125) / mean_final)  # log-linear between probes
    assert probe_steps(100, 5) == [1, 26, 50, 74, 99] and probe_steps(5, 24) == [1, 2, 3, 4]
    with pytest.raises(BlockmaskError, match="probes"):
        probe_steps(10, 1)


@pytest.mark.parametrize("arch", ["tiny-unet-cond", "tiny-dit", "tiny-pixart"])
def test_sensitivity_norm_and_mac_sparsity_on_every_architecture(workbenches, arch):
    wb = workbenches(arch)
    for accumulate in (True, False):
        st = _train(wb, lam=1.0, feature_norm="sensitivity", probes=3, accumulate=accumulate, sparsity="macs",
                    iters=3, guidance_scale=2.0)
        m = np.array(st.rows, bool)
        assert m.shape == (6, len(wb.units)) and m[0].all()
        assert st.sensitivity["probed"] == [1, 3, 5]


def test_mac_weighted_sparsity_skips_expensive_units_first(workbenches):
    """Under a pure sparsity objective (no feature error can outweigh λ), weighting by MACs makes the
    expensive units' scores fall fastest."""
    wb = workbenches("tiny-unet")
    macs = wb.macs.unit_macs
    big, small = int(np.argmax(macs)), int(np.argmin(macs))
    gap = {}
    for mode in ("macs", "count"):
        scores = np.array(_train(wb, lam=50.0, iters=3, sparsity=mode, sampler="gumbel").scores[1:])
        gap[mode] = scores[:, small].mean() - scores[:, big].mean()
    assert gap["macs"] > 0.05 and abs(gap["count"]) < gap["macs"] / 2, gap


def test_run_writes_mask_with_metadata_and_it_samples(workbenches, tmp_path):
    wb = workbenches("tiny-unet")
    mf, summary = run_training(wb, TrainConfig(steps=6, iters=4, batch=2, lam=2.0), tmp_path / "m.json", progress=False)
    back, warnings = wb.load_mask(tmp_path / "m.json", steps=6)
    assert not warnings and np.array_equal(back.mask, mf.mask)
    meta = back.meta
    assert len(meta["delta"]) == 6 and meta["delta"][0] is None and len(meta["lambda"]) == 6
    assert meta["rectified"]["applied"] and len(meta["rectified"]["raw_mask"]) == 6
    assert not (back.mask & ~np.array(meta["rectified"]["raw_mask"], bool)).any()
    assert summary["macs"]["ratio"] == pytest.approx(wb.macs.ratio(back.mask))
    out = sample(wb.model, num_steps=6, scheduler=wb.scheduler(), mask=back.mask, batch=2)
    assert out.isfinite().all()
    assert not checkpoint_path(tmp_path / "m.json").exists()


@pytest.mark.parametrize("norm", ["step", "sensitivity"])
def test_resume_equals_uninterrupted(workbenches, tmp_path, norm):
    wb = workbenches("tiny-dit")
    cfg = TrainConfig(steps=6, iters=4, batch=2, lam=1.0, seed=5, feature_norm=norm)
    full, _ = run_training(wb, cfg, tmp_path / "full.json", progress=False)

    class Killed(Exception):
        pass

    def kill_at_3(rep):
        if rep.k == 3:
            raise Killed

    out = tmp_path / "part.json"
    with pytest.raises(Killed):
        run_training(wb, cfg, out, progress=False, callback=kill_at_3)
    ck = checkpoint_path(out)
    assert ck.exists() and not out.exists()
    assert len(json.loads(ck.read_text())["state"]["rows"]) == 4  # rows 0..3 saved, none lost
    with pytest.raises(BlockmaskError, match="pass --resume"):
        run_training(wb, cfg, out, progress=False)
    with pytest.raises(BlockmaskError, match="other settings"):
        run_training(wb, dataclasses.replace(cfg, lam=2.0), out, RunOptions(resume=True), progress=False)
    resumed, _ = run_training(wb, cfg, out, RunOptions(resume=True), progress=False)
    assert np.array_equal(resumed.mask, full.mask) and resumed.meta["scores"] == full.meta["scores"]


def test_resume_rejects_bad_checkpoints(workbenches, tmp_path):
    wb = workbenches("tiny-dit")
    cfg = TrainConfig(steps=4, iters=2, batch=1)
    out = tmp_path / "m.json"
    ck = checkpoint_path(out)
    ck.write_text('{"format": "blockmask-train/1", "state": {"ro')
    with pytest.raises(BlockmaskError, match="corrupt"):
        run_training(wb, cfg, out, RunOptions(resume=True), progress=False)
    ck.write_text(json.dumps({"format": "blockmask-train/1", "fingerprint": "X:1", "units": [], "state": {}}))
    with pytest.raises(BlockmaskError, match="another model"):
        run_training(wb, cfg, out, RunOptions(resume=True), progress=False)
    assert not out.exists()


def test_target_macs_budget(workbenches, tmp_path):
    wb = workbenches("tiny-dit")
    from blockmask.learning.run import RefineConfig

    # λ bisection (the paper's way, --no-refine): ±2% of the budget
    mf, summary = run_training(wb, TrainConfig(steps=6, iters=4, batch=2, lam=0.5), tmp_path / "b.json",
                               RunOptions(target_macs=0.75, max_trials=4, refine=RefineConfig(enabled=False)),
                               progress=False)
    assert abs(wb.macs.ratio(mf.mask) / 0.75 - 1) <= 0.02
    assert mf.meta["budget"]["trials"]
    # the calibrated default: the best mask found within the budget, never above it
    mf, summary = run_training(wb, TrainConfig(steps=6, iters=4, batch=2, lam=0.5), tmp_path / "c.json",
                               RunOptions(target_macs=0.75, refine=RefineConfig(batch=4, passes=1)), progress=False)
    assert 0.85 * 0.75 <= wb.macs.ratio(mf.mask) <= 0.75 + 1e-9 and mf.meta["calibration"]["start"]


def test_training_never_touches_the_network(workbenches, monkeypatch, tmp_path):
    def refuse(*a, **k):
        raise AssertionError("network access during training")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    run_training(workbenches("tiny-unet"), TrainConfig(steps=4, iters=2, batch=1), tmp_path / "m.json", progress=False)


@pytest.mark.parametrize(
    "extra, msg",
    [
        (["--lambda", "-1"], "lambda must be >= 0"),
        (["--iters", "0"], "iters must be >= 1"),
        (["--target-macs", "1.5"], "--target-macs must be in (0, 1]"),
        (["--sweep", "a,b"], "--sweep takes"),
        (["--feature-norm", "sensitivity", "--probes", "1"], "probes must be >= 2"),
    ],
)
def test_cli_bad_hyperparameters(capsys, tmp_path, extra, msg):
    rc = main(["train", tiny_spec("tiny-unet"), "--steps", "4", "--iters", "2", "--batch", "1",
               "-o", str(tmp_path / "m.json"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and not (tmp_path / "m.json").exists()


def test_cli_train_and_sweep(capsys, tmp_path):
    rc = main(["train", tiny_spec("tiny-dit"), "--steps", "4", "--iters", "2", "--batch", "1", "--sweep", "0.1,10",
               "-o", str(tmp_path / "s.json"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(out["runs"]) == 2
    assert MaskFile.load(tmp_path / "s-lam0.1.json").num_steps == 4 and (tmp_path / "s-lam10.json").exists()


MEM_SCRIPT = """
import sys, json, os
os.environ["OMP_NUM_THREADS"] = "1"
from blockmask.workbench import Workbench
from blockmask.learning.train import TrainConfig
from blockmask.learning.run import run_training
wb = Workbench.load(sys.argv[1])
cfg = TrainConfig(steps=int(sys.argv[2]), iters=3, batch=2)
_, s = run_training(wb, cfg, sys.argv[3], progress=False)
print(json.dumps(s))
"""


@pytest.mark.slow
def test_memory_flat_in_k(tmp_path):
    """Only one step's graph is alive: peak RSS at K=100 is within 10% of K=10 (separate processes)."""
    peaks = {}
    for k in (10, 100):
        r = subprocess.run([sys.executable, "-c", MEM_SCRIPT, tiny_spec("tiny-unet"), str(k), str(tmp_path / f"{k}.json")],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-500:]
        peaks[k] = json.loads(r.stdout.strip().splitlines()[-1])["peak_rss_mb"]
    assert peaks[100] <= 1.1 * peaks[10], peaks
