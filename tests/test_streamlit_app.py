"""The Streamlit app driven headlessly with ``streamlit.testing.v1.AppTest``.

Most tests point the app at a tiny random-init U-Net ($BLOCKMASK_APP_MODEL) with K=6 steps; one
starts it on the real default (the bundled model when installed, else the random-init fallback).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TINY = "config:" + str(Path(__file__).resolve().parent / "configs" / "tiny-unet.json")
STEPS = 6


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _app(monkeypatch, model: str | None = TINY, steps: int | None = STEPS) -> AppTest:
    if model:
        monkeypatch.setenv("BLOCKMASK_APP_MODEL", model)
    else:
        monkeypatch.delenv("BLOCKMASK_APP_MODEL", raising=False)
    at = AppTest.from_file(APP, default_timeout=240)
    if steps:
        at.session_state["steps"] = steps
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)


def test_starts_on_default_model(monkeypatch):
    from blockmask.viz.context import default_model_spec, load_context

    monkeypatch.delenv("BLOCKMASK_APP_MODEL", raising=False)
    try:
        load_context(default_model_spec(), device="cpu")
        loads = True
    except Exception:  # noqa: BLE001 — a broken bundled model must still leave a usable app
        loads = False
    at = _app(monkeypatch, model=None, steps=None)
    if loads:
        assert not at.error, [e.value for e in at.error]
    else:
        assert any("Could not load" in e.value and "random init" in e.value for e in at.error)
    ed = at.session_state["editor"]
    assert ed.mask[0].all() and ed.mask.shape[0] == at.session_state["steps"]
    assert "%" in _metric(at, "MACs % of original")


def test_click_toggles_cell_and_updates_macs(monkeypatch):
    at = _app(monkeypatch)
    before = _metric(at, "MACs per image"), _metric(at, "MACs % of original")
    assert before[1] == "100.0 %"
    # an edit exactly as the browser grid sends it (app/components/mask_grid.js), through the same handler
    at.session_state["mask_grid_edit"] = {"seq": 1, "k0": 2, "k1": 2, "i0": 1, "i1": 1, "mode": "toggle"}
    at.run()
    assert not at.exception
    assert not at.session_state["editor"].mask[2, 1]
    assert at.session_state["grid_ack"] == 1  # the browser may now adopt the server's cells again
    assert _metric(at, "MACs % of original") != before[1]
    # a dragged region set to "reused": every cell of steps 3..4 × units 0..2
    at.session_state["mask_grid_edit"] = {"seq": 2, "k0": 4, "k1": 3, "i0": 2, "i1": 0, "mode": "off"}
    at.run()
    assert not at.session_state["editor"].mask[3:5, 0:3].any() and at.session_state["grid_ack"] == 2
    # a malformed edit: one clear error, the mask untouched
    kept = at.session_state["editor"].mask.copy()
    at.session_state["mask_grid_edit"] = {"seq": "x", "k0": 1}
    at.run()
    assert not at.exception and (at.session_state["editor"].mask == kept).all()
    assert any("cannot read" in e.value for e in at.error)

    # row 0 is refused with the reason, mask unchanged
    at.session_state["mask_click"] = [(0, 3)]
    at.run()
    assert at.session_state["editor"].mask[0].all()
    assert any("Step 0 always computes" in w.value for w in at.warning)
    # undo (twice: the region, then the click) brings the cell back
    _button(at, "undo").click().run()
    assert at.session_state["editor"].mask[3:5, 0:3].all() and not at.session_state["editor"].mask[2, 1]
    _button(at, "undo").click().run()
    assert at.session_state["editor"].mask[2, 1]


def test_preset_loads(monkeypatch):
    at = _app(monkeypatch)
    pick = next(s for s in at.selectbox if s.key == "preset_pick")
    fora = next(o for o in pick.options if "FORA" in o)
    pick.select(fora).run()
    _button(at, "load_preset").click().run()
    assert not at.exception
    m = at.session_state["editor"].mask
    assert m[0].all() and not m[1].any() and _metric(at, "MACs % of original") != "100.0 %"
    assert any("Loaded FORA" in s.value for s in at.success)


def test_generate_and_rectify_keeps_pixels(monkeypatch):
    at = _app(monkeypatch)
    at.session_state["mask_click"] = [(k, i) for k in range(1, STEPS) for i in (2, 5, 9)]
    at.session_state["click_mode"] = "Set reused"
    at.run()
    _button(at, "generate").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.image) >= 2  # original, masked (and the difference)
    assert "×" in _metric(at, "Speedup (median)")
    float(_metric(at, "Speedup (median)").rstrip("×"))
    tables = {d.value.columns[0]: d.value for d in at.dataframe}  # st.dataframe → DataFrames
    assert list(tables["run"]["run"]) == ["original", "masked"]
    presets_df = tables["mask"]
    assert presets_df["mask"][0] == "current mask" and "MACs % of original" in presets_df.columns
    assert presets_df["computed cells"][0].startswith(f"{int(at.session_state['editor'].mask.sum())} /")
    out1 = at.session_state["result"][1]
    macs1 = out1.macs_masked
    _button(at, "rectify").click().run()
    assert not at.exception
    ed = at.session_state["editor"]
    assert ed.removed is not None
    _button(at, "generate").click().run()
    out2 = at.session_state["result"][1]
    assert out2.macs_masked <= macs1
    np.testing.assert_array_equal(out1.masked, out2.masked)  # rectification never changes pixels


def test_invalid_upload_keeps_mask(monkeypatch):
    at = _app(monkeypatch)
    at.session_state["mask_click"] = [(3, 4)]
    at.run()
    before = at.session_state["editor"].mask.copy()
    at.file_uploader[0].set_value(("bad.json", b"{not json", "application/json")).run()
    assert not at.exception
    assert any("bad.json" in e.value and "kept" in e.value for e in at.error)
    np.testing.assert_array_equal(at.session_state["editor"].mask, before)
    # a mask for another step count is refused too
    wrong = b'{"format": "blockmask/1", "num_steps": 2, "units": ["a"], "mask": [[1], [0]]}'
    at.file_uploader[0].set_value(("other.json", wrong, "application/json")).run()
    assert any("other.json" in e.value for e in at.error)
    np.testing.assert_array_equal(at.session_state["editor"].mask, before)
    assert at.file_uploader[0].key != "upload"  # the refused file was cleared from the widget
    big = b" " * 2_000_001  # over the limit: refused by its size, before it is read
    at.file_uploader[0].set_value(("big.json", big, "application/json")).run()
    assert any("over this app's limit" in e.value for e in at.error)
    np.testing.assert_array_equal(at.session_state["editor"].mask, before)


def test_bad_inputs_keep_app_usable(monkeypatch):
    at = _app(monkeypatch)
    next(t for t in at.text_input if t.key == "seed").input("abc").run()
    next(n for n in at.number_input if n.key == "num_images").set_value(0).run()
    _button(at, "generate").click().run()
    assert not at.exception
    assert any("Seed must be a whole number" in e.value for e in at.error)
    next(t for t in at.text_input if t.key == "seed").input("1").run()
    next(n for n in at.number_input if n.key == "num_images").set_value(500).run()
    _button(at, "generate").click().run()
    assert any("at most 16" in w.value.lower() for w in at.warning)
    assert at.session_state["result"][1].num_images == 16
    assert "over 3" in next(m for m in at.metric if m.label == "Speedup (median)").delta
    assert any("batch 16" in c.value and "Timed on" in c.value for c in at.caption)


def test_models_offered_only_and_one_load_message(monkeypatch, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{nope")
    monkeypatch.setenv("BLOCKMASK_APP_ALLOW", f"nobody/no-such-model,{broken}")
    at = _app(monkeypatch)
    pick = next(s for s in at.selectbox if s.key == "model_pick")
    assert "Other: hub id or local path…" not in pick.options  # visitors cannot type a spec
    assert not any(str(tmp_path) in o or o.startswith(("/", "config:")) for o in pick.options)  # no paths
    mask = at.session_state["editor"].mask.copy()
    msgs = []
    for name in ("nobody/no-such-model", "broken"):
        pick.select(name).run()
        assert not at.exception
        msgs.append(next(e.value for e in at.error if "could not be loaded" in e.value).replace(name, "X"))
        np.testing.assert_array_equal(at.session_state["editor"].mask, mask)
    assert msgs[0] == msgs[1] and str(tmp_path) not in msgs[0]


def test_class_conditional_model(monkeypatch):
    at = _app(monkeypatch, model="config:" + str(Path(TINY[7:]).parent / "tiny-dit.json"))
    keys = {n.key for n in at.number_input}
    assert {"label", "guidance"} <= keys
    next(n for n in at.number_input if n.key == "label").set_value(4).run()
    _button(at, "generate").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["result"][1].macs_original > 0


def test_train_panel(monkeypatch):
    from blockmask.viz import training

    at = _app(monkeypatch, steps=3)
    assert any(training.ESTIMATE_NOTE in w.value for w in at.warning)  # the estimate is measured, not guessed
    next(n for n in at.number_input if n.key == "t_iters").set_value(2).run()
    next(n for n in at.number_input if n.key == "t_batch").set_value(1).run()
    _button(at, "t_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    ed = at.session_state["editor"]
    assert "trained here" in ed.source and "delta" in ed.meta


def test_delta_note_goes_once_computed(monkeypatch):
    at = _app(monkeypatch)
    assert any("no Δ_k" in i.value for i in at.info)
    _button(at, "delta_btn").click().run()
    assert not at.exception and not any("no Δ_k" in i.value for i in at.info)
    assert not any(b.key == "delta_btn" for b in at.button)


def test_guided_tour(monkeypatch):
    from blockmask.viz.tour import TOUR

    at = _app(monkeypatch)
    assert any(TOUR[0][1][:40] in m.value for m in at.markdown)
    at.session_state["tour_step"] = TOUR[2][0]
    at.run()
    assert any("Rectify" in m.value and "dead work" in m.value for m in at.markdown)


@pytest.mark.parametrize("edit", [
    {"seq": 1}, {"seq": "x", "k0": 1, "k1": 1, "i0": 1, "i1": 1}, {"seq": 1, "k0": None, "k1": 1, "i0": 1, "i1": 1},
    {"seq": 1, "k0": 1, "k1": 1, "i0": 1, "i1": 1, "mode": "zap"}, "not a dict", None,
])
def test_bad_grid_edits_one_error_mask_kept(monkeypatch, edit):
    at = _app(monkeypatch)
    before = at.session_state["editor"].mask.copy()
    at.session_state["mask_grid_edit"] = edit
    at.run()
    assert not at.exception
    if edit is not None:
        assert [e.value for e in at.error] == ["The mask grid sent an edit this app cannot read; nothing changed."]
    np.testing.assert_array_equal(at.session_state["editor"].mask, before)


def test_load_mask_from_hub_only_when_allowed(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    from blockmask.viz.context import load_context

    wb = load_context(TINY, device="cpu").wb
    m = np.ones((STEPS, len(wb.units)), bool)
    m[2:, 2] = False
    sha = "0123456789abcdef0123456789abcdef01234567"
    root = tmp_path / "hub" / "models--someone--tiny-mask"  # as the hub cache lays it out
    wb.mask_file(m).save_pretrained(root / "snapshots" / sha)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(sha)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("BLOCKMASK_APP_ALLOW_MASKS", raising=False)
    at = _app(monkeypatch)
    next(t for t in at.text_input if t.key == "hub_mask").input("someone/tiny-mask").run()
    _button(at, "hub_load").click().run()
    assert any("BLOCKMASK_APP_ALLOW_MASKS" in e.value for e in at.error) and at.session_state["editor"].mask.all()
    monkeypatch.setenv("BLOCKMASK_APP_ALLOW_MASKS", "someone/")
    _button(at, "hub_load").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    np.testing.assert_array_equal(at.session_state["editor"].mask, m)
    next(t for t in at.text_input if t.key == "hub_mask").input("someone/missing").run()
    _button(at, "hub_load").click().run()
    assert sum("someone/missing" in e.value for e in at.error) == 1
    np.testing.assert_array_equal(at.session_state["editor"].mask, m)


def test_prompt_embeddings_for_text_models_only(monkeypatch):
    import torch
    from safetensors.torch import save

    at = _app(monkeypatch)  # an unconditional model: no prompt input
    assert not any(str(u.key).startswith("prompt_upload") for u in at.file_uploader)
    at = _app(monkeypatch, model=TINY.replace("tiny-unet.json", "tiny-unet-cond.json"), steps=4)
    up = next(u for u in at.file_uploader if str(u.key).startswith("prompt_upload"))
    assert any("random embeddings" in c.value for c in at.caption)
    images = []
    for seed in (1, 2):
        data = save({"prompt_embeds": torch.randn(6, 24, generator=torch.Generator().manual_seed(seed))})
        up.set_value((f"p{seed}.safetensors", data, "application/octet-stream")).run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        assert any(f"p{seed}.safetensors" in c.value for c in at.caption)
        _button(at, "generate").click().run()
        images.append(at.session_state["result"][1].original)
        up = next(u for u in at.file_uploader if str(u.key).startswith("prompt_upload"))
    assert not np.array_equal(images[0], images[1])  # the embeddings reach the model
    up.set_value(("bad.safetensors", save({"prompt_embeds": torch.randn(6, 7)}), "application/octet-stream")).run()
    assert sum("width 7" in e.value and "previous prompt is kept" in e.value for e in at.error) == 1
    assert at.session_state["prompt"][1].name == "p2.safetensors"
