"""The evaluation cache never runs code and never reports numbers it did not compute
(blockmask.eval.cache): planted pickles, forged or edited rows, and keys that cover every input."""

import json
import pickle

import numpy as np
import pytest
import torch

from blockmask.eval.cache import SignedCache, npy_bytes, npy_load
from blockmask.eval.evaluate import EvalConfig, Method, evaluate, fidelity_metrics

from conftest import CONFIGS, needs_mnist

SPEC = f"config:{CONFIGS / 'tiny-unet-mnist.json'}"


@pytest.fixture(autouse=True)
def _key(tmp_path, monkeypatch):
    monkeypatch.setenv("BLOCKMASK_CACHE_KEY_FILE", str(tmp_path / "key" / "cache-key"))


@pytest.fixture(scope="module")
def wb():
    from blockmask.workbench import Workbench

    return Workbench.load(SPEC)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # what an attacker's .pt does when unpickled: run a command
        import os

        return (os.system, (f"touch {self.marker}",))


def _plant(folder, marker):
    """A malicious pickle under every name torch-fidelity's cache would load for our reference set
    (the files it writes itself with ``cache=True``, as blockmask used it before), plus a few more."""
    import torch_fidelity

    from blockmask.data.classifier import register_fidelity_extractor
    from blockmask.eval.evaluate import _Images, _fidelity_kwargs

    register_fidelity_extractor()
    x = _Images(np.random.default_rng(0).random((8, 1, 32, 32), np.float32))
    torch_fidelity.calculate_metrics(input1=x, input2=x, **{**_fidelity_kwargs("mnist-cnn", 8), "cache": True,
                                     "cache_root": str(folder / "fidelity"), "input2_cache_name": "mnist32-mnist-cnn"})
    planted = list((folder / "fidelity").rglob("*.pt"))
    assert planted
    for p in planted + [folder / "reference.pt", folder / "row-0.pt"]:
        with open(p, "wb") as f:
            pickle.dump(_Payload(marker), f)
    return planted


def test_signed_cache_round_trip_and_tampering(tmp_path, capsys):
    c = SignedCache(tmp_path / "c")
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    c.put("row-a", {"fid": 1.5, "method": "x"}, npy_bytes(arr))
    meta, payload = c.get("row-a")
    assert meta == {"fid": 1.5, "method": "x"} and np.array_equal(npy_load(payload), arr)
    # an edited number, an edited payload, a forged entry: all rejected, none raises
    j = tmp_path / "c" / "row-a.json"
    d = json.loads(j.read_text())
    d["meta"]["fid"] = 0.1
    j.write_text(json.dumps(d))
    assert c.get("row-a") is None and "signature does not match" in capsys.readouterr().err
    c.put("row-a", {"fid": 1.5}, npy_bytes(arr))
    (tmp_path / "c" / "row-a.bin").write_bytes(npy_bytes(arr + 1))
    assert c.get("row-a") is None and "does not match its recorded hash" in capsys.readouterr().err
    (tmp_path / "c" / "row-b.json").write_text("[" * 10000)
    (tmp_path / "c" / "row-b.bin").write_bytes(b"x")
    assert c.get("row-b") is None and c.rejected == ["row-a", "row-a", "row-b"]
    # another user's key (a cache folder copied from elsewhere) does not verify either
    c.put("row-c", {"fid": 2.0}, npy_bytes(arr))
    other = SignedCache(tmp_path / "c")
    other.key = b"k" * 32
    assert other.get("row-c") is None


def test_fidelity_metrics_equal_torch_fidelity(tmp_path):
    """Our feature route gives torch-fidelity's own numbers (calculate_metrics, cache off)."""
    import torch_fidelity

    from blockmask.data.classifier import register_fidelity_extractor
    from blockmask.eval.evaluate import _Images, _fidelity_kwargs

    rng = np.random.default_rng(0)
    a, b = rng.random((40, 1, 32, 32), np.float32), rng.random((60, 1, 32, 32), np.float32) ** 2
    register_fidelity_extractor()
    ref = torch_fidelity.calculate_metrics(input1=_Images(a), input2=_Images(b), **_fidelity_kwargs("mnist-cnn", 40))
    c = SignedCache(tmp_path / "c")
    for _ in range(2):  # second time: reference features from the signed cache
        ours = fidelity_metrics(a, b, extractor="mnist-cnn", cache=c, ref_name="ref-test")
        assert ours["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-6)
        assert ours["kid"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-6)
        assert ours["is"] == pytest.approx(ref["inception_score_mean"], rel=1e-6)
    assert (tmp_path / "c" / "ref-test.bin").is_file() and not list((tmp_path / "c").rglob("*.pt"))


@needs_mnist
def test_planted_pickle_never_runs_and_forged_rows_are_recomputed(wb, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    marker = tmp_path / "PWNED"
    _plant(cache, marker)
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    methods = [Method("original", None, 3), Method("uniform", wb.baseline("uniform", steps=3, every=2), 3)]
    kw = dict(n=6, batch=6, cache_dir=cache, bench_batch=1, bench_repeats=1)
    rows = evaluate(wb, methods, EvalConfig(**kw))
    assert not marker.exists() and not loads, "a planted pickle was loaded"
    # forge the cached row (a better FID) and its signature field: detected, recomputed, real number back
    for j in cache.glob("row-*.json"):
        d = json.loads(j.read_text())
        d["meta"]["fid"] = 0.0
        j.write_text(json.dumps(d))
    again = evaluate(wb, methods, EvalConfig(**kw))
    assert [r["fid"] for r in again] == [r["fid"] for r in rows] and rows[0]["fid"] > 0
    assert "signature does not match" in capsys.readouterr().err
    assert not marker.exists() and not loads


@needs_mnist
def test_row_key_covers_every_input(wb, tmp_path, monkeypatch):
    """Changing the extractor, the benchmark batch/repeats or the device name misses the cache."""
    import blockmask.eval.evaluate as ev

    methods = [Method("original", None, 3)]
    base = dict(n=6, batch=6, cache_dir=tmp_path / "c", bench_batch=1, bench_repeats=1)
    evaluate(wb, methods, EvalConfig(**base))
    calls = []
    real = ev.generate_set
    monkeypatch.setattr(ev, "generate_set", lambda *a, **k: calls.append(1) or real(*a, **k))
    evaluate(wb, methods, EvalConfig(**base))
    assert calls == []  # same inputs: cached
    evaluate(wb, methods, EvalConfig(**{**base, "bench_repeats": 2}))
    evaluate(wb, methods, EvalConfig(**{**base, "bench_batch": 2}))
    monkeypatch.setattr(ev, "device_name", lambda d: "another GPU")
    evaluate(wb, methods, EvalConfig(**base))
    assert len(calls) == 3
    with pytest.raises(Exception, match="extractor 'no-such-extractor'"):
        evaluate(wb, methods, EvalConfig(**{**base, "extractor": "no-such-extractor"}))  # a miss: it tries to compute
