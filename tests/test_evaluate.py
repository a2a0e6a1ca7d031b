"""Evaluation harness on a tiny config: offline FID pipeline, content cache, report files."""

import json
import math
import re

import numpy as np
import pytest

from blockmask.cli.main import main
from blockmask.eval.evaluate import EvalConfig, Method, evaluate, psnr
from blockmask.eval.report import to_markdown

from conftest import CONFIGS, needs_mnist

SPEC = f"config:{CONFIGS / 'tiny-unet-mnist.json'}"


@pytest.fixture(scope="module")
def wb():
    from blockmask.workbench import Workbench

    return Workbench.load(SPEC)


def test_psnr():
    a = np.zeros((2, 1, 4, 4))
    assert psnr(a, a)[1] == math.inf
    assert psnr(a, a + 0.1)[1] == pytest.approx(20.0)


@needs_mnist
def test_evaluate_rows_and_cache(wb, tmp_path, monkeypatch):
    k = 4
    methods = [Method("original", None, k), Method("FORA N=2", wb.baseline("fora", steps=k, interval=2), k),
               Method("DDIM 2 steps", None, 2)]
    rows = evaluate(wb, methods, EvalConfig(n=12, batch=6, cache_dir=tmp_path, bench_batch=2, bench_repeats=1))
    assert [r["method"] for r in rows] == ["original", "FORA N=2", "DDIM 2 steps"]
    orig, fora, fewer = rows
    assert orig["macs_ratio"] == 1 and orig["speedup"] == 1 and orig["psnr"] == math.inf
    assert fora["macs_ratio"] == pytest.approx(wb.macs.ratio(methods[1].mask)) and fora["psnr"] < math.inf
    assert fewer["macs_ratio"] == 0.5 and all(r["n"] == 12 and math.isfinite(r["fid"]) for r in rows)
    # Second run: everything comes from the content-keyed cache (no sampling at all).
    import blockmask.eval.evaluate as ev

    monkeypatch.setattr(ev, "generate_set", lambda *a, **k: pytest.fail("cache miss"))
    again = evaluate(wb, methods, EvalConfig(n=12, batch=6, cache_dir=tmp_path, bench_batch=2, bench_repeats=1))
    assert [r["fid"] for r in again] == [r["fid"] for r in rows]
    assert re.search(r"\| FORA N=2 +\| 4 +\|", to_markdown(rows))


@needs_mnist
def test_eval_cli_writes_report(tmp_path, capsys):
    m = tmp_path / "m.json"
    assert main(["mask", "uniform", SPEC, "--steps", "4", "--every", "2", "-o", str(m)]) == 0
    capsys.readouterr()
    rc = main(["eval", SPEC, "--steps", "4", "--mask", f"learned={m}", "--deepcache", "2", "--fewer-steps",
               "--random-matched", "--num-samples", "8", "--batch", "4", "--bench-batch", "2", "--bench-repeats", "1",
               "--cache-dir", str(tmp_path / "c"), "-o", str(tmp_path / "out"), "--json"])
    out = json.loads(capsys.readouterr().out)
    names = [r["method"] for r in out["rows"]]
    assert rc == 0 and names[:3] == ["original", "learned", "DeepCache N=2 b0"] and "random @ learned MACs" in names
    for f in ("results.csv", "results.md", "pareto.html"):
        assert (tmp_path / "out" / f).is_file()
    assert "png" in out["files"] or "png_error" in out["files"]
    # every row says where its speed was measured; the markdown names the machine once
    assert all(r["device"].startswith("CPU") for r in out["rows"])
    assert "Speedups measured on: CPU" in (tmp_path / "out" / "results.md").read_text()

    # `blockmask report` redraws the same tables from the CSV alone (e.g. a CSV made on a GPU machine)
    rc = main(["report", str(tmp_path / "out" / "results.csv"), "-o", str(tmp_path / "again"), "--json"])
    again = json.loads(capsys.readouterr().out)
    assert rc == 0 and [r["method"] for r in again["rows"]] == names
    assert (tmp_path / "again" / "results.md").read_text() == (tmp_path / "out" / "results.md").read_text()
    assert (tmp_path / "again" / "results.csv").read_text() == (tmp_path / "out" / "results.csv").read_text()


def test_report_cli_rejects_bad_csv(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert main(["report", str(bad), "-o", str(tmp_path / "o")]) == 2
    assert "not a blockmask results.csv" in capsys.readouterr().err
    bad.write_text("method,steps,macs_ratio,speedup,n,fid\norig,4,1.0,fast,8,3.0\n")
    assert main(["report", str(bad), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "speedup" in err and len(err.strip().splitlines()) == 1
    assert main(["report", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()
