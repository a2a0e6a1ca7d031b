"""Issue 28 at the presenter level (blockmask.viz): presets only from the model's own masks, with
their provenance and held-out PSNR, identical masks listed once; progress from the slow producers;
no server path in a visitor's error; honest timing flags; K changes resample the edited mask."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blockmask.core.errors import BlockmaskError
from blockmask.viz import MaskEditor, presets, tables
from blockmask.viz.compare import timing_flags
from blockmask.viz.context import load_context
from blockmask.viz.provenance import provenance

CONFIGS = Path(__file__).resolve().parent / "configs"
K = 6


@pytest.fixture(scope="module")
def tiny():
    return load_context(f"config:{CONFIGS / 'tiny-unet.json'}", device="cpu")


@pytest.fixture(scope="module")
def bundled():
    from blockmask.io.models import bundled_models

    cache = {}

    def get(name):
        if name not in bundled_models():
            pytest.skip(f"{name} is not installed")
        if name not in cache:
            cache[name] = load_context(name, device="cpu")
        return cache[name]

    return get


@pytest.mark.parametrize("name", ["mnist-ldm", "mnist-pixart", "mnist-ddpm", "mnist-dit"])
def test_only_own_masks_are_offered(bundled, name):
    ctx = bundled(name)
    learned = [p.key for p in presets.presets(ctx, 50) if p.key.startswith("learned:")]
    assert learned and all(k.startswith(f"learned:{name}-") for k in learned), learned
    _, source, _ = presets.initial_mask(ctx, presets.default_steps(ctx))
    assert name in source
    assert all(r.startswith((name, "current")) or "(" in r or r.startswith("All ones")
               for r in tables.presets_frame(ctx, 50)["mask"])


def test_provenance_from_metadata():
    rule = {"calibration": {"start": "fora rows + 17 full steps (γ=1)", "validation": {"kept": "start"}},
            "heldout": {"psnr": 36.07, "num": 32, "seed": 5000}}
    assert provenance(rule).kind == "rule" and provenance(rule).psnr_text == "36.1 dB held-out"
    refined = {"calibration": {"start": "deepcache b0 N=3", "validation": {"kept": "refined"}}}
    assert provenance(refined).kind == "refined rule" and provenance(refined).psnr is None
    assert provenance({"calibration": {"start": "learned (per step)", "validation": {"kept": "start"}}}).kind == \
        "learned"
    assert provenance({"training": {"steps": 50}, "scores": [[1]]}).kind == "learned"
    assert provenance({}).kind == "unknown" and provenance({"macs": {"ratio": 0.5}}).kind == "unknown"
    prov = {"family": "refined", "name": "refined from fora N=3", "params": {"refined_from": "fora N=3"}}
    plan = {"family": "refined", "plan": {"steps": 22, "provenance": prov, "validation": {"psnr": 33.3}}}
    p = provenance(plan)
    assert p.kind == "planner: refined rule" and "22 steps" in p.detail and p.psnr_text == "33.3 dB validation"


def test_shipped_labels_say_provenance_not_learned(bundled):
    ctx = bundled("mnist-dit")
    labels = {p.key: p.label for p in presets.presets(ctx, 50)}
    b35 = labels["learned:mnist-dit-050steps-b35.json"]
    assert "rule" in b35 and "dB held-out" in b35 and not b35.lower().startswith("learned")
    df = tables.presets_frame(ctx, 50, np.ones((50, ctx.n_units), bool))
    assert {"provenance", "PSNR vs plain (dB)", "PSNR measured on"} <= set(df.columns)
    row = df[df["mask"] == "mnist-dit-050steps-b35"].iloc[0]
    assert row["PSNR vs plain (dB)"] == "36.07" and "held-out" in row["PSNR measured on"]


def test_identical_masks_listed_once_with_both_names(tiny, tmp_path, monkeypatch):
    fora, _, _ = presets.build(tiny, "fora", K)
    (tmp_path / "masks").mkdir()
    data = json.loads(MaskEditor.create(tiny, K, fora).download_bytes(tiny))
    data["meta"]["heldout"] = {"psnr": 30.0, "num": 8, "seed": 5000}
    for name in ("a-twin.json", "b-twin.json"):
        (tmp_path / "masks" / name).write_text(json.dumps(data))
    monkeypatch.setenv("BLOCKMASK_ASSETS", str(tmp_path))
    items = presets.presets(tiny, K)
    learned = [p for p in items if p.key.startswith("learned:")]
    assert [p.key for p in learned] == ["learned:a-twin.json"]  # b-twin is the same bits: listed once
    assert "b-twin" in learned[0].label and "FORA(interval=3)" in learned[0].label
    assert "a-twin" in next(p for p in items if p.key == "fora").help
    df = tables.presets_frame(tiny, K)
    row = df[df["mask"].str.contains("a-twin")].iloc[0]
    assert "b-twin" in row["mask"] and "FORA(interval=3)" in row["mask"] and row["provenance"] == "unknown"
    assert not df["mask"].str.fullmatch("FORA\\(interval=3\\)").any()


def test_slow_producer_reports_progress(tiny):
    seen = []
    mask, _, _ = presets.build(tiny, "method:feature-change", K, progress=lambda f, t: seen.append((f, t)),
                               macs_ratio=0.7)
    assert mask.shape == (K, tiny.n_units) and len(seen) >= K - 1
    assert seen[-1][0] == pytest.approx(1.0) and all(0 <= f <= 1 for f, _ in seen)


def test_router_error_shows_no_server_path(tiny, monkeypatch, tmp_path):
    missing = tmp_path / "secret-place" / "mnist"
    monkeypatch.setenv("BLOCKMASK_MNIST", str(missing))
    with pytest.raises(BlockmaskError) as e:
        presets.build(tiny, "method:router", K, macs_ratio=0.7)
    assert "secret-place" not in str(e.value) and str(tmp_path) not in str(e.value)
    assert "[server folder]" in str(e.value)


def test_timing_flags():
    calm = {"unreliable_reasons": []}
    assert timing_flags(calm, [1.2, 1.3, 1.25], load=0.1, cores=2) == ()
    spread = timing_flags(calm, [0.5, 1.2, 8.53], load=0.1, cores=2)
    assert len(spread) == 1 and "0.50-8.53x" in spread[0]
    assert "busy" in timing_flags(calm, [1.0, 1.1], load=5.0, cores=2)[0]
    above = {"unreliable_reasons": ["speedup 3.17x is above the ideal 2.00x (1 / MAC ratio)"]}
    assert "above the ideal" in timing_flags(above, [3.1, 3.2], load=0.0, cores=2)[0]


def test_changing_k_resamples_the_edit(tiny):
    ed = MaskEditor.create(tiny, K)
    ed.set_row(3, False)
    ed.toggle(2, 1)
    new, msgs = ed.resampled(tiny, 2 * K)
    assert new.fits(tiny, 2 * K) and new.mask[0].all() and "resampled" in msgs[0].text
    assert not new.mask.all() and len(new.undo_stack) == len(ed.undo_stack)
    back, _ = new.resampled(tiny, K)
    np.testing.assert_array_equal(back.mask, ed.mask)  # K -> 2K -> K on DDIM: the same rows
    back.undo()
    assert back.mask[2, 1] and not back.mask[3].any()
