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
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_bench.py"), "--dry-run", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-800:]
    rows = [row for row in json.loads(out.read_text())["rows"] if "speedup" in row]
    assert {row["mask"] for row in rows} == {"all-ones", "learned-shape-50%", "blocks-shape-50%", "fora-2",
                                          "deepcache-b0-n3"}
    assert {row["mode"] for row in rows} == {"eager", "rowgraph"}
    assert all(row["speedup"] > 0 and 0 < row["macs_ratio"] <= 1 for row in rows)
    shaped = [row["macs_ratio"] for row in rows if row["mask"].endswith("shape-50%")]
    assert all(0.35 < x < 0.65 for x in shaped), shaped  # the learned-shape mask is scaled to about 50%
    assert all(row["max_abs_diff_vs_eager"] == 0 for row in rows if row["mode"] == "rowgraph")
    assert "| model | mode |" in r.stdout


@pytest.mark.slow
def test_gpu_train_time_dry_run(tmp_path):
    out = tmp_path / "t.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_train_time.py"), "--dry-run", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-800:]
    res = json.loads(out.read_text())
    assert res["finished"] and res["steps_done"] == res["steps"] - 1 == len(res["per_step"])  # row 0 is not learned
    assert res["whole_mask_s"] > 0 and not res["whole_mask_is_projection"]


def test_gpu_bench_model_subset_and_bad_name(tmp_path):
    out = tmp_path / "b.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/gpu_bench.py"), "--dry-run", "--modes", "eager",
                        "--models", "tiny-dit", "--rounds", "1", "--out", str(out)], capture_output=True, text=True,
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
    from blockmask.workbench import Workbench

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
    """benchmarks/app_latency.py drives both apps in Chromium and times issue 28's three latencies: click →
    grid, Rectify → grid, click → the frontier plot's live point (tiny U-Net, synthetic frontier file)."""
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)")
    from frontier_fixture import write_tiny_frontier

    from blockmask.workbench import Workbench

    spec = "config:" + str(ROOT / "tests/configs/tiny-unet.json")
    write_tiny_frontier(tmp_path, Workbench.load(spec))
    out = tmp_path / "lat.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/app_latency.py"), "--model", spec, "--frontier-dir",
                        str(tmp_path), "--repeats", "2", "--warmup", "0", "--json", str(out)],
                       capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-800:]
    res = json.loads(out.read_text())
    for app in ("streamlit", "gradio"):
        a = res["apps"][app]
        assert a["frontier_traces"] > 0, app  # the frontier file was found and plotted
        for k in ("click_grid", "rectify_grid", "click_frontier", "click_readout"):
            assert a[k]["n"] == 2 and a[k]["missed"] == 0 and 0 < a[k]["median"] < 30_000, (app, k, a[k])
    assert "click_frontier" in r.stdout and "target < 500 ms" in r.stdout


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
    # --speed-only: new speed for the chosen rows, everything else (FID included) kept
    before = df
    r = subprocess.run(common + ["--speed-only", "--rounds", "2", "--only", "FORA"], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-800:]
    df = pd.read_csv(out / "results.csv").set_index("method")
    assert df.loc["FORA N=2", "bench"] == "batch 8, 2 interleaved rounds"
    assert df.loc["learned b60", "bench"] == "batch 8, 1 interleaved rounds"
    for col in ("macs_ratio", "psnr", "fid"):
        assert df[col].equals(before[col])
    assert "2 interleaved rounds / " in (out / "results.md").read_text() or \
        " / batch 8, 2 interleaved rounds" in (out / "results.md").read_text()


def test_budget_table_latent_unet_rows_use_real_deepcache_at_the_models_guidance():
    """On mnist-ldm the DeepCache rows run the real DeepCache on its StableDiffusionPipeline at the
    model's own guidance (2): the same images as blockmask's preset mask through the table's own rows;
    --guidance overrides it for every row."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import budget_table as bt
    from blockmask.workbench import Workbench

    wb = Workbench.load("mnist-ldm")
    g = bt.guidance_of(wb)
    assert g == 2.0 and bt.guidance_of(wb, 1.0) == 1.0
    mask = wb.baseline("deepcache", steps=6, interval=3, branch=0)
    real = bt.deepcache_rows(wb, 6, (0,), (3,), guidance=g)[0]
    assert real.name == "DeepCache b0 N=3" and real.family == "DeepCache b0 (PyPI)"
    preset = bt.our_rows(wb, 6, {"p": mask}, "x", guidance=g)[0]
    a = real.run(7, 4)
    assert a.shape == (4, 1, 32, 32) and np.array_equal(a, preset.run(7, 4))
    real1 = bt.deepcache_rows(wb, 6, (0,), (3,), guidance=1.0)[0]
    assert not np.array_equal(a, real1.run(7, 4))  # the override reaches the peer's pipeline too
    assert np.array_equal(real1.run(7, 4), bt.our_rows(wb, 6, {"p": mask}, "x", guidance=1.0)[0].run(7, 4))
    plain, _, rows = bt.build_rows(wb, [], 6, [3], guidance=1.0)  # every row of a table gets the one scale
    assert np.array_equal(plain.run(7, 2), bt.our_rows(wb, 6, {"o": None}, "o", guidance=1.0)[0].run(7, 2))
    assert not np.array_equal(plain.run(7, 2), bt.our_rows(wb, 6, {"o": None}, "o", guidance=g)[0].run(7, 2))


def test_methods_summary_shows_fid_and_lowest_fid_only_when_all_measured():
    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import methods_summary as ms

    rows = [("learned b35", "learned (blockmask)", 0.35, 30.0, 12.0), ("router-b35", "router", 0.35, 16.0, 40.0),
            ("FORA N=3", "FORA", 0.34, 29.5, 11.5), ("DDIM 17 steps", "DDIM fewer steps", 0.34, 29.0, 10.0),
            ("learned b55", "learned (blockmask)", 0.55, 33.0, float("nan"))]
    df = pd.DataFrame([dict(method=m, family=f, macs_ratio=r, psnr=p, fid=d, fid_n=1000, speedup=2.0)
                       for m, f, r, p, d in rows])
    text = ms.winners(df)
    head, _, b35, b55 = text.strip().splitlines()
    assert "lowest FID (N = 1000)" in head and "MACs, PSNR, FID, speed" in head
    assert "**learned** (30.00 dB)" in b35 and "**DDIM 17 steps** (10.00)" in b35 and "FID 40.00" in b35
    assert "not all measured" in b55 and "FID —" in b55
    assert "FID" not in ms.winners(df.drop(columns=["fid", "fid_n"]))


def test_fid_plot_turns_logarithmic_when_one_row_is_broken(tmp_path):
    """A broken row (FID 60+ beside rows near 5) would flatten the FID plot: its y axis becomes
    logarithmic with labelled ticks; rows of similar FID keep a linear axis."""
    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from budget_report import write_outputs

    base = dict(family="FORA", psnr=30.0, speedup=2.0, speedup_min=1.9, speedup_max=2.1, note="", device="cpu",
                fid_n=1000, kid=0.2)
    rows = [dict(base, method="FORA N=2", macs_ratio=0.5, fid=4.9),
            dict(base, method="FORA N=3", macs_ratio=0.35, fid=5.2)]
    broken = dict(base, method="x", family="cache-dit DBCache (PyPI)", macs_ratio=0.37, fid=63.5)
    for name, extra, log in (("flat", [], False), ("broken", [broken], True)):
        write_outputs(pd.DataFrame(rows + extra), tmp_path / name, title="t: fidelity")
        html = (tmp_path / name / "pareto-fid.html").read_text()
        assert ('"type":"log"' in html) is log, name
        assert ('"ticktext":["0.1"' in html) is log


def test_frontier_report_shows_what_each_budget_gets(tmp_path):
    """benchmarks/frontier_report.py: a budget whose own plan a cheaper plan supersedes on validation
    (as ``Frontier.at_budget`` answers it) shows that cheaper plan, and names its own plan beside it."""
    import pandas as pd

    cols = dict(steps=4, gain_over_fewer_steps_db=0.0, gain_low_db=0.0, gain_high_db=0.0, learning_gain_db=None,
                met_by=None, reuse="hold")
    rows = [dict(kind="plan", name="p30", family="rule", provenance="fora N=3 K=6", budget=0.3, macs_ratio=0.29,
                 valid_psnr=31.0, test_psnr=31.2, **cols),
            dict(kind="plan", name="p50", family="fewer-steps", provenance="DDIM 5 steps", budget=0.5, macs_ratio=0.5,
                 valid_psnr=29.0, test_psnr=29.1, **cols),
            dict(kind="peer fewer-steps", name="DDIM 5 steps", family="fewer-steps", provenance=None, budget=None,
                 macs_ratio=0.5, valid_psnr=29.0, test_psnr=29.1, **{**cols, "met_by": "p30"})]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/frontier_report.py"), str(tmp_path)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-800:]
    lines = r.stdout.splitlines()
    assert "| 30.0% | fora N=3 K=6 (rule) | 4 | 29.0% | 31.00 | 31.20 | +0.00 [+0.00, +0.00] |  |" in lines
    assert "| 50.0% | fora N=3 K=6 (rule) | 4 | 29.0% | 31.00 | 31.20 | +0.00 [+0.00, +0.00] | DDIM 5 steps " \
           "(29.00 / 29.10 dB) |" in lines
    assert any(ln.startswith("- the answer's family over 2 budgets: rule 2 (each budget's own plan: rule 1, "
                             "fewer-steps 1; 1 own plans superseded") for ln in lines)
    # --before: an earlier results.csv of the same frontier; what each budget got then and gets now
    old = pd.DataFrame(rows)
    old.loc[0, ["provenance", "valid_psnr", "test_psnr"]] = ["blocks N=2 K=4", 28.0, 28.5]  # 30%: worse before
    old.to_csv(tmp_path / "old.csv", index=False)
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/frontier_report.py"), str(tmp_path), "--before",
                        str(tmp_path / "old.csv")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-800:]
    lines = r.stdout.splitlines()
    assert "| 30.0% | blocks N=2 K=4, 29.0% (28.00 / 28.50) | fora N=3 K=6, 29.0% (31.00 / 31.20) | +2.70 dB |" in lines
    # before, 50% got its own plan (DDIM 5 steps, 29.1 on test) since the 30% plan rated lower; now the 30% plan
    assert "| 50.0% | DDIM 5 steps, 50.0% (29.00 / 29.10) | fora N=3 K=6, 29.0% (31.00 / 31.20) | +2.10 dB |" in lines
    assert any(ln.startswith("- 2 budgets in both: the answer changed at 2; its test PSNR moved by a median +2.40 dB")
               for ln in lines)
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks/frontier_report.py"), str(tmp_path), "--before",
                        str(tmp_path / "nope.csv")], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "nope.csv not found" in r.stderr and r.stderr.count("\n") == 1
