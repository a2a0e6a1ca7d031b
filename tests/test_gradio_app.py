"""The Gradio demo: every handler called directly (good and bad inputs), then the launched app driven
by gradio_client. Tiny random-init U-Net, K=6 (the real default model is exercised by
test_streamlit_app and the browser tests)."""

from __future__ import annotations

import json
import socket
import sys
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pandas as pd
import pytest

APP = Path(__file__).resolve().parents[1] / "app"
CONFIGS = Path(__file__).resolve().parent / "configs"
TINY = "config:" + str(CONFIGS / "tiny-unet.json")
DIT = "config:" + str(CONFIGS / "tiny-dit.json")
K = 6
sys.path.insert(0, str(APP))
import gradio_edits as ge  # noqa: E402
import gradio_handlers as h  # noqa: E402
import gradio_training  # noqa: E402

NOOP = lambda *a, **k: None  # noqa: E731 — a gr.Progress stand-in


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BLOCKMASK_APP_MODEL", TINY)
    monkeypatch.delenv("BLOCKMASK_APP_ALLOW", raising=False)
    warnings.simplefilter("ignore")  # gr.Warning outside a request is a Python warning


@pytest.fixture
def s():
    return h.new_session(TINY, K)


def _edit(**e) -> str:
    return json.dumps({"edit": {"seq": 1, "mode": "toggle", **e}})


def test_view_and_load_model(s):
    out = h.view(s)
    assert out[0] is s and json.loads(out[1])["K"] == K and "MACs per image" in out[2]
    res = h.load_model(s, "tiny-unet", K + 2, "ddpm")
    assert res[0].editor.steps == K + 2 and res[0].scheduler == "ddpm"
    assert res[-2]["visible"] is False  # unconditional model: no class label field
    assert res[-3]["visible"] is False and res[-4] == ""  # … and no prompt-embeddings upload


def test_dit_shows_class_label_and_guidance_and_honours_them():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BLOCKMASK_APP_ALLOW", DIT)
        s = h.new_session(TINY, 4)
        out = h.load_model(s, "tiny-dit", 4, "ddim")
        s2, lab, gui = out[0], out[-2], out[-1]
        assert lab["visible"] and "Class label (0–" in lab["label"] and gui["visible"]
        _, a, *_ = h.generate(s2, 0, 1, 1, 1.0, 1, progress=NOOP)
        _, b, *_ = h.generate(s2, 0, 1, 2, 1.0, 1, progress=NOOP)
        assert not np.array_equal(a, b)  # the class label reaches the model
        with pytest.raises(gr.Error, match="Class label must be a whole number"):
            h.generate(s2, 0, 1, 10_000, 1.0, 1, progress=NOOP)


def test_grid_edits_and_tools(s):
    ge.grid_edit(s, _edit(k0=2, k1=2, i0=3, i1=3))
    assert not s.editor.mask[2, 3] and s.grid_ack == 1
    ge.grid_edit(s, json.dumps({"edit": {"seq": 2, "k0": 1, "k1": 2, "i0": 4, "i1": 5, "mode": "off"}}))
    assert not s.editor.mask[1:3, 4:6].any() and json.loads(h.view(s)[1])["ack"] == 2
    assert len(ge.grid_edit(s, _edit(k0=3, k1=3, i0=3, i1=3, seq=3))) == 4 and len(h.after_edit(s)) == 6
    ge.toggle_cell(s, 3, 1)
    assert not s.editor.mask[3, 1]
    ge.set_region(s, 4, 5, 0, 2, "Set reused")
    assert not s.editor.mask[4:6, 0:3].any()
    ge.reuse_step(s, 2)
    assert not s.editor.mask[2].any()
    prev = s.editor.mask.copy()
    ge.reuse_unit(s, 7)
    assert not s.editor.mask[1:, 7].any()
    ge.undo(s)
    np.testing.assert_array_equal(s.editor.mask, prev)
    ge.redo(s)
    ge.reset(s)
    assert s.editor.mask.all()
    ge.grid_edit(s, json.dumps({"edit": {"seq": 3, "k0": 0, "k1": 0, "i0": 1, "i1": 1, "mode": "toggle"}}))
    ge.toggle_cell(s, 0, 2)
    assert s.editor.mask[0].all()  # step 0 is refused with the reason (a warning toast), never changed
    ge.set_mode(s, "Set reused")
    assert json.loads(h.view(s)[1])["mode"] == "off"


# (handler, args after the session, words the one-line error must contain)
BAD = [
    (ge.toggle_cell, (999, 3), "Step k must be a whole number in 0..5"),
    (ge.toggle_cell, (1.5, 0), "Step k must be a whole number"),
    (ge.toggle_cell, ("x", 1), "Step k"),
    (ge.toggle_cell, (1, -1), "Unit i"),
    (ge.toggle_cell, (None, 1), "Step k"),
    (ge.toggle_cell, (float("nan"), 1), "Step k"),
    (ge.toggle_cell, (True, 1), "Step k"),
    (ge.set_region, (1, 2, 0, 1, "Explode"), "Action must be one of"),
    (ge.set_region, (1, 99, 0, 1, "Toggle"), "Step k"),
    (ge.compute_step, ("1e9",), "Step k"),
    (ge.reuse_unit, (-3,), "Unit i"),
    (ge.set_mode, ("sideways",), "Action must be one of"),
    (ge.grid_edit, ("{nope",), "cannot read"),
    (ge.grid_edit, (json.dumps({"edit": {"seq": 1}}),), "cannot read"),
    (ge.grid_edit, (_edit(k0=1, k1=1, i0=1, i1=1, mode="zap"),), "cannot read"),
    (ge.grid_edit, (_edit(k0=1, k1=1, i0=999, i1=999),), "Unit i"),
    (ge.grid_edit, (_edit(k0=1, k1=1, i0=1, i1=1, seq=-4),), "Edit number"),
    (h.load_preset, ("nonsense", 3, 0, 2, 0.5, 0), "Preset must be one of"),
    (h.load_preset, ("fora", "abc", 0, 2, 0.5, 0), "interval must be a whole number"),
    (h.load_preset, ("fora", 0, 0, 2, 0.5, 0), "interval"),
    (h.load_preset, ("random", 3, 0, 2, float("inf"), 0), "MAC budget must be a number"),
    (h.load_preset, ("random", 3, 0, 2, 0.5, -1), "seed"),
    (h.load_model, ("nobody/no-such-model", K, "ddim"), "is not offered by this app"),
    (h.load_model, ("/etc", K, "ddim"), "is not offered by this app"),
    (h.load_model, ("config:/etc/passwd", K, "ddim"), "is not offered by this app"),
    (h.load_model, ("tiny-unet", "abc", "ddim"), "Sampling steps K must be a whole number in 1..1000"),
    (h.load_model, ("tiny-unet", 0, "ddim"), "Sampling steps K"),
    (h.load_model, ("tiny-unet", 1.5, "ddim"), "Sampling steps K"),
    (h.load_model, ("tiny-unet", K, "warp"), "Scheduler must be one of"),
    (h.upload_mask, (None,), "No file was uploaded"),
    (h.generate, ("abc", 2, 0, 1.0), "Seed must be a whole number"),
    (h.generate, (-1, 2, 0, 1.0), "Seed"),
    (h.generate, (0, 0, 0, 1.0), "Images must be a whole number in 1..16"),
    (h.generate, (0, 17, 0, 1.0), "Images"),
    (h.generate, (0, 2, 0, 1.0, 0), "Timed repeats"),
]


@pytest.mark.parametrize("fn,args,words", BAD, ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(BAD)])
def test_bad_inputs_one_clear_error_state_kept(s, fn, args, words):
    ge.toggle_cell(s, 2, 2)
    before = (s.editor.mask.copy(), len(s.editor.undo_stack), s.spec, s.scheduler, s.grid_ack, s.mode)
    files = sorted(Path(h._DOWNLOADS.name).rglob("*"))
    kw = {"progress": NOOP} if fn is h.generate else {}
    with pytest.raises(gr.Error) as ei:
        fn(s, *args, **kw)
    msg = str(ei.value.message)
    assert words in msg and "\n" not in msg and "Traceback" not in msg
    after = (s.editor.mask, len(s.editor.undo_stack), s.spec, s.scheduler, s.grid_ack, s.mode)
    np.testing.assert_array_equal(before[0], after[0])
    assert before[1:] == after[1:] and sorted(Path(h._DOWNLOADS.name).rglob("*")) == files  # nothing left behind


@pytest.mark.parametrize("content,words", [
    (b"{nope", "not valid JSON"), (b"", "empty"), (b"[1, 2]", "current mask is kept"),
    (json.dumps({"format": "blockmask/1", "mask": [[1] * 3] * 2}).encode(), "current mask is kept"),
    (b"[" * 5000 + b"]" * 5000, "current mask is kept"),
    (b" " * 2_000_001, "over this app's limit"),
])
def test_bad_uploads(s, tmp_path, content, words):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    keep = s.editor.mask.copy()
    with pytest.raises(gr.Error, match=words):
        h.upload_mask(s, str(bad))
    np.testing.assert_array_equal(s.editor.mask, keep)


def test_missing_and_unreadable_allowed_models_read_the_same(s, tmp_path, monkeypatch):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{nope")
    monkeypatch.setenv("BLOCKMASK_APP_ALLOW", f"{tmp_path / 'absent'},{broken}")
    msgs = []
    for name in ("absent", "broken"):
        with pytest.raises(gr.Error) as ei:
            h.load_model(s, name, K, "ddim")
        msgs.append(ei.value.message.replace(name, "X"))
    assert msgs[0] == msgs[1] and "could not be loaded" in msgs[0] and str(tmp_path) not in msgs[0]
    choices, _, custom = h.model_dropdown()
    assert not custom and not any(str(tmp_path) in lab or str(tmp_path) in v for lab, v in choices)  # no paths
    assert not any(v.startswith(("/", "config:")) for _, v in choices)


def test_download_folder_is_bounded(s, monkeypatch):
    monkeypatch.setattr(h, "MAX_DOWNLOADS", 3)
    for i in range(1, 6):
        ge.toggle_cell(s, i, 1)
        h.after_edit(s)  # the app writes the download after the grid and readout (app/gradio_demo.py)
    assert len(list(Path(h._DOWNLOADS.name).iterdir())) <= 3


def test_model_cache_is_bounded(monkeypatch):
    from blockmask.viz.access import LRU

    lru = LRU(2)
    made = []
    for key in ("a", "b", "a", "c", "d"):
        lru.get(key, lambda: made.append(key) or key)
    assert made == ["a", "b", "c", "d"] and len(lru) == 2


def test_upload_download_roundtrip_and_stale(s):
    ge.toggle_cell(s, 2, 2)
    out = h.view(s)
    path = out[-1]
    assert json.loads(Path(path).read_text())["mask"][2][2] in (0, False)  # download = the current mask
    _, o, m, d, md, stale, div, table = h.generate(s, 0, 2, 0, 1.0, 2, progress=NOOP)
    from blockmask.viz.tables import COMPARISON_COLUMNS, PRESET_COLUMNS

    assert isinstance(table, pd.DataFrame) and list(table.columns) == COMPARISON_COLUMNS
    assert list(table["run"]) == ["original", "masked"] and "over 2" in table["speedup"][1]
    presets_df = out[-2]  # the presets table: the current mask first, then the baselines at this K
    assert isinstance(presets_df, pd.DataFrame) and list(presets_df.columns) == PRESET_COLUMNS
    assert presets_df["mask"][0] == "current mask" and presets_df["computed cells"][0].startswith(
        f"{int(s.editor.mask.sum())} /") and any(presets_df["mask"].str.startswith("DeepCache"))
    assert div["visible"] and len(div["value"].data[0].y) == K  # per-step divergence
    assert o.shape == m.shape == d.shape and o.dtype == np.uint8 and o.shape[0] >= 300
    assert "over 2 repeats" in md and "ideal (MACs)" in md and "batch 2" in md and "Stale" not in stale
    ge.reset(s)
    assert "Stale" in h.view(s)[3]
    h.upload_mask(s, path)
    assert not s.editor.mask[2, 2] and "Stale" not in h.view(s)[3]
    again = h.generate(s, 0, 2, 0, 1.0, 2, progress=NOOP)[4]
    assert "from this session's results" in again
    other = h.new_session(TINY, K)  # another user: never sees this session's timings
    ge.toggle_cell(other, 2, 2)
    assert "from this session's results" not in h.generate(other, 0, 2, 0, 1.0, 2, progress=NOOP)[4]


def test_delta_panel(s):
    out = h.view(s)
    assert out[6]["visible"] is False and "no Δ_k" in out[7]
    out = h.compute_delta_plot(s, progress=NOOP)
    assert out[6]["visible"] is True and out[6]["value"] is not None
    assert json.loads(out[1])["delta"] is not None  # the Δ_k strip beside the grid rows


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_busy_port_takes_a_free_one(capsys):
    import gradio_demo

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        got = gradio_demo.pick_port("127.0.0.1", busy)
    assert got != busy and f"Port {busy} is busy" in capsys.readouterr().out


def test_launch_and_drive_with_client():
    from gradio_client import Client

    import gradio_demo

    demo = gradio_demo.build(TINY)
    port = _free_port()
    demo.queue().launch(server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        c = Client(f"http://127.0.0.1:{port}/", verbose=False)
        api = c.view_api(return_format="dict")["named_endpoints"]
        assert {"/generate", "/toggle", "/rectify", "/load_preset", "/upload_mask", "/download_mask",
                "/grid_edit"} <= set(api)
        labels = [r["label"] for e in api.values() for r in e["returns"]]
        assert not any(str(x).startswith("value_") for x in labels)  # every output is named
        assert [p["parameter_name"] for p in api["/toggle"]["parameters"]] == ["k", "i"]
        # a grid edit also answers with the frontier plot: its budget and point come last, optional
        params = api["/grid_edit"]["parameters"]
        assert [p["parameter_name"] for p in params][-2:] == ["budget", "point"]
        assert all(p["parameter_has_default"] for p in params[-2:])
        before = c.predict(1, 1, api_name="/toggle")[1]
        after = c.predict(1, 1, api_name="/toggle")[1]  # toggled back: the session state persists
        assert "computed cells 279/280" in before and "computed cells 280/280" in after
        with pytest.raises(Exception, match="Step k must be a whole number"):
            c.predict(999, 3, api_name="/toggle")
        c.predict(2, 3, api_name="/toggle")
        path = c.predict(api_name="/download_mask")
        assert json.loads(Path(path).read_text())["mask"][2][3] in (0, False)
        o, m, d, md, st, div, table = c.predict("0", 2, 0, 1.0, 1, api_name="/generate")
        assert Path(o).read_bytes()[:4] == b"\x89PNG" and "Speedup" in md
        assert table["headers"][:2] == ["run", "MACs per image"] and len(table["data"]) == 2
    finally:
        demo.close()


def test_train_panel_progress_curve_and_load(s):
    seen = []
    outs = list(gradio_training.train_mask(s, 0.5, False, 0.6, 2, 1, 0, 1.0, progress=lambda f, desc="": seen.append(desc)))
    final = outs[-1]
    assert final[0] is s and "trained here" in s.editor.source and "delta" in s.editor.meta
    assert final[-2] is not None and ("Loaded the trained mask" in final[-1] or "all ones" in final[-1])
    assert any("step" in d for d in seen)
    with pytest.raises(gr.Error, match="Iterations per step"):
        next(gradio_training.train_mask(s, 0.5, False, 0.6, 0, 1, 0, 1.0, progress=NOOP))


def test_train_cancel_stops_worker_and_keeps_mask(s):
    import threading
    import time

    keep = s.editor.mask.copy()
    gen = gradio_training.train_mask(s, 0.5, False, 0.6, 20, 1, 0, 1.0, progress=NOOP)
    first = next(gen)  # the first live update: training is running
    assert first[-1].startswith("Training…")
    gen.close()  # what Gradio does on Cancel
    t0 = time.time()
    while any(t.name == "blockmask-train" for t in threading.enumerate()) and time.time() - t0 < 60:
        time.sleep(0.2)
    assert not any(t.name == "blockmask-train" for t in threading.enumerate())  # stopped at its next step
    assert not s.ctx.lock.locked()
    np.testing.assert_array_equal(s.editor.mask, keep)


def test_load_mask_from_hub_only_when_allowed(s, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    m = np.ones(s.editor.shape, bool)
    m[3:, 0] = False
    mf = s.ctx.wb.mask_file(m)
    sha = "0123456789abcdef0123456789abcdef01234567"
    root = tmp_path / "hub" / "models--someone--tiny-mask"  # as the hub cache lays it out
    mf.save_pretrained(root / "snapshots" / sha)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(sha)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("BLOCKMASK_APP_ALLOW_MASKS", raising=False)
    monkeypatch.setattr(h, "ALLOW_MASKS", [])
    with pytest.raises(gr.Error, match="BLOCKMASK_APP_ALLOW_MASKS"):
        h.load_hub_mask(s, "someone/tiny-mask")
    assert s.editor.mask.all()
    monkeypatch.setattr(h, "ALLOW_MASKS", ["someone/"])
    with pytest.raises(gr.Error, match="someone/missing.*kept"):
        h.load_hub_mask(s, "someone/missing")
    out = h.load_hub_mask(s, "someone/tiny-mask")
    assert out[0] is s and np.array_equal(s.editor.mask, m) and "someone/tiny-mask" in out[2]


def test_prompt_embeddings_for_text_models_only(s, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    monkeypatch.setenv("BLOCKMASK_APP_ALLOW", "config:" + str(CONFIGS / "tiny-unet-cond.json"))
    out = h.load_model(s, "tiny-unet-cond", 4, "ddim")
    s2, note, prompt = out[0], out[-4], out[-3]
    assert prompt["visible"] is True and "random embeddings" in note
    files = []
    for seed in (1, 2):
        f = tmp_path / f"p{seed}.safetensors"
        save_file({"prompt_embeds": torch.randn(6, 24, generator=torch.Generator().manual_seed(seed))}, str(f))
        files.append(f)
    images = []
    for f in files:
        _, md = h.upload_prompt(s2, str(f))
        assert f.name in md
        res = h.generate(s2, 0, 1, 0, 1.0, 1, progress=NOOP)
        assert f.name in res[4]
        images.append(res[1])
    assert not np.array_equal(images[0], images[1])  # the embeddings reach the model
    bad = tmp_path / "bad.safetensors"
    save_file({"prompt_embeds": torch.randn(6, 7)}, str(bad))
    with pytest.raises(gr.Error, match="width 7.*expects 24.*previous prompt is kept"):
        h.upload_prompt(s2, str(bad))
    assert s2.prompt.name == "p2.safetensors"
    assert h.upload_prompt(s2, None)[0].prompt is None
