"""Issue 28 in both apps: every bundled model opens on its own mask and offers only its own masks, a
model switch leaves no control with another model's units (the "Done when" test), and the fixes of
the walk (Auto-update off, progress for slow presets, messages next to their button, K changes
resample, labelled CFG MACs, Gradio's status after Cancel). Streamlit through AppTest, Gradio through
its handlers, as tests/test_streamlit_app.py and tests/test_gradio_app.py do."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = Path(__file__).resolve().parents[1] / "app"
TINY = "config:" + str(Path(__file__).resolve().parent / "configs" / "tiny-unet.json")
BUNDLED = ["mnist-ddpm", "mnist-ldm", "mnist-dit", "mnist-pixart"]
sys.path.insert(0, str(APP))
import gradio_handlers as h  # noqa: E402
import gradio_training  # noqa: E402


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("BLOCKMASK_APP_ALLOW", raising=False)
    warnings.simplefilter("ignore")  # gr.Warning / gr.Info outside a request are Python warnings


def _bundled():
    from blockmask.io.models import bundled_models

    have = bundled_models()
    missing = [m for m in BUNDLED if m not in have]
    if missing:
        pytest.skip(f"bundled models not installed: {missing}")


def _own(name: str, labels) -> list[str]:
    """Shipped-mask labels among ``labels`` that name another model."""
    return [x for x in labels if x.startswith("mnist-") and not x.startswith(f"{name}-")]


def _st(monkeypatch, model: str | None, steps: int | None = None) -> AppTest:
    if model:
        monkeypatch.setenv("BLOCKMASK_APP_MODEL", model)
    else:
        monkeypatch.delenv("BLOCKMASK_APP_MODEL", raising=False)
    at = AppTest.from_file(str(APP / "main.py"), default_timeout=300)
    if steps:
        at.session_state["steps"] = steps
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _st_checks(at: AppTest, name: str) -> None:
    ctx = h.get_context(name, "ddim")
    ed = at.session_state["editor"]
    assert name in ed.source and ed.shape[1] == ctx.n_units, ed.source
    labels = next(s for s in at.selectbox if s.key == "preset_pick").options
    assert any(x.startswith(f"{name}-") for x in labels) and not _own(name, labels), labels
    unit = next(s for s in at.selectbox if s.label == "unit")
    assert list(unit.options) == [f"{j}: {u.name}" for j, u in enumerate(ctx.units)]
    assert unit.value in range(ctx.n_units)
    rows = next(d.value for d in at.dataframe if d.value.columns[0] == "mask")["mask"]
    assert not _own(name, rows), list(rows)


def test_streamlit_each_bundled_model_own_masks_and_units(monkeypatch):
    """Done when: each bundled model opens on its own mask, offers only its own masks, and after a
    switch no control shows another model's units."""
    _bundled()
    at = _st(monkeypatch, None)
    _st_checks(at, "mnist-ddpm")
    for name in ["mnist-dit", "mnist-ldm", "mnist-pixart", "mnist-ddpm"]:  # U-Net → DiT → U-Net → DiT → U-Net
        next(s for s in at.selectbox if s.key == "model_pick").set_value(name).run()
        assert not at.exception, [e.value for e in at.exception]
        _st_checks(at, name)
    for name in ["mnist-ldm", "mnist-pixart"]:  # and each opened fresh, as a new visitor would
        _st_checks(_st(monkeypatch, name), name)


def test_gradio_each_bundled_model_own_masks_and_units(monkeypatch):
    _bundled()
    monkeypatch.delenv("BLOCKMASK_APP_MODEL", raising=False)
    for name in BUNDLED:
        s = h.new_session(name)
        assert name in s.editor.source and s.editor.steps == 50, s.editor.source
        labels = [label for label, _ in h.preset_choices(s)]
        assert any(x.startswith(f"{name}-") for x in labels) and not _own(name, labels), labels
        assert not _own(name, h.presets_table(s)["mask"])
    s = h.new_session("mnist-ddpm")
    for name in ["mnist-dit", "mnist-ldm", "mnist-pixart", "mnist-ddpm"]:
        out = h.load_model(s, name, 50, "ddim")
        s, ctx = out[0], h.get_context(name, "ddim")
        assert name in s.editor.source and s.editor.shape[1] == ctx.n_units
        grid = json.loads(out[1])
        assert grid["units"] == [u for u in json.loads(h.grid_value(h.new_session(name)))["units"]]
        preset = out[10]  # the preset dropdown's update
        assert not _own(name, [label for label, _ in preset["choices"]])
        assert preset["value"] == f"learned:{name}-050steps-b35.json"
        assert not _own(name, out[8]["mask"])  # the presets table


# --- the walk's fixes (tiny random-init U-Net) ----------------------------------------------
def test_streamlit_auto_update_off_and_generate_labels(monkeypatch):
    at = _st(monkeypatch, TINY, 6)
    assert next(c for c in at.checkbox if c.key == "auto_generate").value is False
    at.session_state["mask_click"] = [(2, 1)]
    at.run()
    next(b for b in at.button if b.key == "generate").click().run()
    assert not at.exception and at.session_state["result"] is not None
    at.session_state["mask_click"] = [(3, 1)]
    at.run()  # an edit after Generate: no new run (Auto-update is off), the result is marked stale
    assert any("Stale" in w.value for w in at.warning)


def test_streamlit_messages_next_to_their_button(monkeypatch):
    at = _st(monkeypatch, TINY, 6)
    next(s for s in at.selectbox if s.key == "preset_pick").set_value(
        next(o for o in h.presets.presets(h.get_context(TINY, "ddim"), 6) if o.key == "fora")).run()
    next(b for b in at.button if b.key == "load_preset").click().run()
    main = list(at.main)  # every element in page order: the preset message is not above section 1
    first_header = next(i for i, e in enumerate(main) if getattr(e, "value", None) == "1 · Start from a mask")
    assert not any("Loaded FORA" in str(getattr(e, "value", "")) for e in main[:first_header])
    assert any("Loaded FORA" in s.value for s in at.success)
    next(b for b in at.button if b.key == "rectify").click().run()
    main = list(at.main)
    rect = next(i for i, e in enumerate(main) if getattr(e, "key", None) == "rectify")
    said = [i for i, e in enumerate(main) if "Rectification" in str(getattr(e, "value", ""))
            and getattr(e, "type", "") in ("info", "success")]
    assert said and all(i > rect for i in said)  # below the Rectify button, not at the top of the page
    assert all(i < rect + 6 for i in said)


def test_streamlit_slow_preset_shows_progress(monkeypatch):
    from blockmask.viz import presets

    seen = []
    real = presets.build

    def spy(ctx, key, steps, progress=None, **kw):
        seen.append((key, progress))
        return real(ctx, key, steps, progress=progress, **kw)

    monkeypatch.setattr(presets, "build", spy)
    at = _st(monkeypatch, TINY, 6)
    pick = next(o for o in presets.presets(h.get_context(TINY, "ddim"), 6) if o.key == "method:feature-change")
    next(s for s in at.selectbox if s.key == "preset_pick").set_value(pick).run()
    next(b for b in at.button if b.key == "load_preset").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(k == "method:feature-change" and callable(p) for k, p in seen)
    assert any("Feature-change" in s.value for s in at.success)


def test_streamlit_k_change_resamples_the_edit(monkeypatch):
    at = _st(monkeypatch, TINY, 6)
    at.session_state["mask_click"] = [(3, 2)]
    at.run()
    assert not at.session_state["editor"].mask[3, 2]
    next(n for n in at.number_input if n.key == "steps").set_value(12).run()
    ed = at.session_state["editor"]
    assert ed.steps == 12 and not ed.mask.all() and "resampled" in ed.source
    assert ed.undo_stack  # the history came along
    assert any("resampled" in i.value for i in at.sidebar.info)


def test_gradio_k_change_resamples_and_slow_preset_progress(monkeypatch):
    monkeypatch.setenv("BLOCKMASK_APP_MODEL", TINY)
    s = h.new_session(TINY, 6)
    s.editor.toggle(3, 2)
    out = h.load_model(s, "tiny-unet", 12, "ddim")
    ed = out[0].editor
    assert ed.steps == 12 and not ed.mask.all() and "resampled" in ed.source and ed.undo_stack
    seen = []
    h.load_preset(out[0], "method:feature-change", 3, 0, 2, 0.7, 0, progress=lambda f, desc="": seen.append(f))
    assert seen and max(seen) == pytest.approx(1.0) and "Feature-change" in out[0].editor.source
    md = h.readout_md(out[0])
    assert "MACs per image" in md


def test_gradio_cancel_updates_training_status(monkeypatch):
    monkeypatch.setenv("BLOCKMASK_APP_MODEL", TINY)
    import gradio_demo

    demo = gradio_demo.build(TINY)
    ids = {getattr(b, "elem_id", None): i for i, b in demo.blocks.items()}
    deps = [d for d in demo.config["dependencies"] if [ids["train-cancel"], "click"] in
            [list(t) for t in d["targets"]]]
    assert any(d["cancels"] for d in deps)
    assert any(ids["train-status"] in d["outputs"] for d in deps)
    assert gradio_training.cancelled() == gradio_training.CANCELLED and "cancelled" in gradio_training.CANCELLED


def test_generation_readouts_label_cfg_and_unreliable_timing(monkeypatch):
    from blockmask.viz import tables
    from blockmask.viz.compare import compare
    from blockmask.viz.context import Draw

    ctx = h.get_context(TINY, "ddim")
    import numpy as np

    r = compare(ctx, np.ones((4, ctx.n_units), bool), Draw(num_images=1), repeats=1)
    assert not r.cfg and "one model pass" in r.macs_note
    import dataclasses

    noisy = dataclasses.replace(r, speedup=9.0, mac_speedup=2.0, unreliable=("speedup 9.00x is above the ideal",),
                                cfg=True)
    df = tables.comparison_frame(noisy)
    assert "x2 CFG" in df["MACs per image"][1] and "above the ideal" in df["speedup"][1]
    assert "measurement noise" in noisy.speed_text() and "×2" in noisy.macs_note
