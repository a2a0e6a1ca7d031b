"""Benchmark scripts run end to end on tiny configs (CPU dry runs)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_mnist

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_bench_dry_run(tmp_path):
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_bench.py"), "--dry-run", "--modes", "eager",
                        "--out", str(out)], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-800:]
    rows = json.loads(out.read_text())["rows"]
    assert {row["mask"] for row in rows} == {"all-ones", "50%-MACs", "learned-style"}
    assert all(row["speedup"] > 0 and 0 < row["macs_ratio"] <= 1 for row in rows)
    assert "| model | mode |" in r.stdout


def test_gpu_bench_model_subset_and_bad_name(tmp_path):
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_bench.py"), "--dry-run", "--modes", "eager",
                        "--models", "tiny-dit", "--repeats", "1", "--out", str(out)], capture_output=True, text=True,
                       timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-800:]
    assert {row["model"] for row in json.loads(out.read_text())["rows"]} == {"tiny-dit"}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_bench.py"), "--dry-run", "--models", "nope"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "unknown model(s) nope" in r.stderr


@needs_mnist
@pytest.mark.parametrize("model", ["mnist-ddpm", "mnist-dit"])
def test_train_bundled_quick_run(tmp_path, model):
    """scripts/train_bundled.py end to end for a few steps: a loadable diffusers folder + training.json."""
    out = tmp_path / model
    r = subprocess.run([sys.executable, str(ROOT / "scripts/train_bundled.py"), "--model", model, "--max-steps", "3",
                        "--batch", "4", "--minutes", "5", "--device", "cpu", "--no-grid", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-800:]
    meta = json.loads((out / "training.json").read_text())
    assert meta["final"] and meta["steps"] == 3 and meta["final_loss_ema"] > 0
    from blockmask.api import Workbench

    assert len(Workbench.load(str(out)).units) > 0
    if model == "mnist-ddpm":  # no CUDA here: a clear one-line error, not a traceback
        r = subprocess.run([sys.executable, str(ROOT / "scripts/train_bundled.py"), "--model", model, "--device",
                            "cuda", "--max-steps", "1", "--out", str(tmp_path / "x")], capture_output=True, text=True,
                           timeout=300)
        import torch

        if not torch.cuda.is_available():
            assert r.returncode != 0 and "torch sees no CUDA device" in r.stderr and "Traceback" not in r.stderr


def test_app_generate_benchmark_runs():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/app_generate.py"), "--steps", "4", "--images", "1"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-800:]
    assert "mnist-ddpm K=4" in r.stdout and "original + masked, 1 images each" in r.stdout


def test_reference_macs_script():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/reference_macs.py")], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-800:]
    assert "| dit-xl-2-256 | DiTTransformer2DModel | 84 | 118.67 |" in r.stdout


@pytest.mark.slow
@pytest.mark.browser
def test_app_latency_benchmark_runs(tmp_path):
    """benchmarks/app_latency.py clicks real cells in Chromium and sees the readout and chart change."""
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)")
    out = tmp_path / "lat.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/app_latency.py"), "--model",
                        "config:" + str(ROOT / "tests/configs/tiny-unet.json"), "--clicks", "2", "--json", str(out)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-800:]
    res = json.loads(out.read_text())
    assert len(res["readout_ms"]["all"]) == 2 and all(0 < v < 30_000 for v in res["chart_ms"]["all"])
    assert "readout  median" in r.stdout


@pytest.mark.slow
@needs_mnist
def test_budget_table_rows_summary_and_fid_pass(tmp_path):
    """benchmarks/budget_table.py on a tiny U-Net: the real DeepCache, FORA, DDIM fewer steps and a random
    mask at the learned mask's MACs are measured; the summary compares the learned mask with the best rule
    at <= its MACs; the FID pass adds FID/KID to exactly the rows a reader compares (--fid-rows auto)."""
    import pandas as pd

    spec = "config:" + str(ROOT / "tests/configs/tiny-unet.json")
    masks = tmp_path / "masks"
    masks.mkdir()
    r = subprocess.run(["blockmask", "mask", "fora", spec, "--steps", "4", "--interval", "2", "-o",
                        str(masks / "tiny-004steps-b60.json")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-800:]
    short = tmp_path / "short-002steps.json"  # all ones at 2 of the 4 steps: plain DDIM with 2 steps
    r = subprocess.run(["blockmask", "mask", "ones", spec, "--steps", "2", "-o", str(short)], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-800:]
    out = tmp_path / "table"
    common = [sys.executable, str(ROOT / "benchmarks/budget_table.py"), "--model", spec, "--steps", "4", "--batch", "4",
              "--intervals", "2", "--masks", str(masks), "-o", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(common + ["--num", "4", "--rounds", "1", "--extra", f"steps auto={short}"], capture_output=True,
                       text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-800:]
    df = pd.read_csv(out / "results.csv")
    assert {"learned b60", "DeepCache b0 N=2", "DeepCache b1 N=2", "FORA N=2", "uniform every 2",
            "random @ b60"} <= set(df.method)
    assert df.method.str.startswith("DDIM").sum() == 1
    learned, fora = (df.set_index("method").loc[n] for n in ("learned b60", "FORA N=2"))
    assert learned.macs_ratio == pytest.approx(fora.macs_ratio) and learned.psnr == pytest.approx(fora.psnr)
    assert "| learned b60 |" in (out / "summary.md").read_text()
    # an --extra mask runs at its own step count, judged against the plain 4-step run like every row
    auto, ddim2 = (df.set_index("method").loc[n] for n in ("short-002steps", "DDIM 2 steps"))
    assert auto.macs_ratio == pytest.approx(0.5, abs=0.01) and auto.psnr == pytest.approx(ddim2.psnr)
    r = subprocess.run(common + ["--fid", "8"], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-800:]
    df = pd.read_csv(out / "results.csv").set_index("method")
    measured = set(df.index[df.fid.notna()])
    assert {"original", "learned b60", "FORA N=2"} <= measured and "uniform every 2" not in measured
    assert (df.loc[list(measured), "fid_n"] == 8).all() and (df.loc[list(measured), "fid"] > 0).all()
    assert "FID learned / best rule" in (out / "summary.md").read_text() and (out / "pareto-fid.html").exists()
