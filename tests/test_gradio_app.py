"""The Gradio demo: every handler called directly, then the launched app driven by gradio_client.
Tiny random-init U-Net, K=6 (the real default model is exercised by test_streamlit_app and the
browser tests)."""

from __future__ import annotations

import socket
import sys
import warnings
from pathlib import Path

import gradio as gr
import numpy as np
import pytest

APP = Path(__file__).resolve().parents[1] / "app"
TINY = "config:" + str(Path(__file__).resolve().parent / "configs" / "tiny-unet.json")
K = 6
sys.path.insert(0, str(APP))
import gradio_handlers as h  # noqa: E402


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BLOCKMASK_APP_MODEL", TINY)
    warnings.simplefilter("ignore")  # gr.Warning outside a request is a Python warning


@pytest.fixture
def s():
    return h.new_session(TINY, K)


def _sel(x, y):
    return gr.SelectData(None, {"index": [x, y], "value": None})


def test_view_and_load_model(s):
    out = h.view(s)
    assert out[0] is s and out[1].ndim == 3 and "MACs per image" in out[2]
    res = h.load_model(s, TINY, K + 2, "ddpm")
    assert res[0].editor.steps == K + 2 and res[0].scheduler == "ddpm"
    same = h.load_model(s, TINY, "abc", "ddim")  # non-numeric steps: warning, state kept
    assert same[0] is s
    bad = h.load_model(s, "nobody/no-such-model", K, "ddim")
    assert bad[0] is s


def test_click_toggle_region_row_column(s):
    from blockmask.viz import figures

    lay = figures.image_layout(s.ctx, K)
    c = lay["cell"]
    h.click_cell(s, "Toggle", _sel(lay["x0"][3] + c // 2, 2 * c + c // 2))
    assert not s.editor.mask[2, 3]
    h.click_cell(s, "Toggle", _sel(lay["x0"][3] + 1, 0))  # row 0: refused
    assert s.editor.mask[0].all()
    h.click_cell(s, "Set reused", _sel(lay["x0"][4] + 1, c + 1))
    assert not s.editor.mask[1, 4]
    h.toggle_cell(s, 3, 1)
    assert not s.editor.mask[3, 1]
    h.toggle_cell(s, "x", 1)  # bad input: no change, no exception
    h.set_region(s, 4, 5, 0, 2, "Set reused")
    assert not s.editor.mask[4:6, 0:3].any()
    h.set_row(s, 2, False)
    assert not s.editor.mask[2].any()
    prev = s.editor.mask.copy()
    h.set_column(s, 7, False)
    assert not s.editor.mask[1:, 7].any()
    h.undo(s)
    np.testing.assert_array_equal(s.editor.mask, prev)
    h.redo(s)
    assert not s.editor.mask[1:, 7].any()
    h.reset(s)
    assert s.editor.mask.all()


def test_rectify_preset_show_pre(s):
    h.load_preset(s, "random", 3, 1, 2, 0.5, 1)
    before = s.editor.mask.copy()
    assert not before.all()
    out = h.rectify(s)
    assert not (s.editor.mask & ~before).any() and "rectification" in out[2].lower()
    pre = h.show_pre(s, True)
    assert pre[1].shape == out[1].shape
    h.load_preset(s, "fora", "abc", 1, 2, 0.5, 0)  # non-numeric parameter: warning, mask kept
    np.testing.assert_array_equal(s.editor.mask, h.show_pre(s, False)[0].editor.mask)
    h.load_preset(s, "fora", 2, 1, 2, 0.5, 0)
    assert not s.editor.mask[1].any() and s.editor.mask[2].all()


def test_upload_download(s, tmp_path):
    h.toggle_cell(s, 2, 2)
    path = h.download_mask(s)
    assert Path(path).name.endswith(".json")
    h.reset(s)
    h.upload_mask(s, path)
    assert not s.editor.mask[2, 2]
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    keep = s.editor.mask.copy()
    h.upload_mask(s, str(bad))
    np.testing.assert_array_equal(s.editor.mask, keep)
    h.upload_mask(s, None)


def test_generate_and_delta(s):
    h.set_region(s, 1, K - 1, 2, 6, "Set reused")
    o, m, d, md = h.generate(s, 0, 2, 0, 1.0, progress=lambda *a, **k: None)
    assert o.shape == m.shape == d.shape and o.dtype == np.uint8
    assert "speedup" in md and "PSNR" in md
    with pytest.raises(gr.Error):
        h.generate(s, "abc", 2, 0, 1.0, progress=lambda *a, **k: None)
    o, *_ = h.generate(s, 1, 0, 0, 1.0, progress=lambda *a, **k: None)  # zero images → 1, with a warning
    out = h.compute_delta_plot(s, progress=lambda *a, **k: None)
    assert out[5] is not None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_launch_and_drive_with_client():
    from gradio_client import Client

    import gradio_demo

    demo = gradio_demo.build(TINY)
    port = _free_port()
    demo.queue().launch(server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        c = Client(f"http://127.0.0.1:{port}/", verbose=False)
        names = set(c.view_api(return_format="dict")["named_endpoints"])
        assert {"/generate", "/toggle", "/rectify", "/load_preset", "/upload_mask", "/download_mask"} <= names
        before = c.predict(1, 1, api_name="/toggle")[1]
        after = c.predict(1, 1, api_name="/toggle")[1]  # toggled back: the session state persists
        assert "computed cells 279/280" in before and "computed cells 280/280" in after
        o, m, d, md = c.predict(0, 2, 0, 1.0, api_name="/generate")
        assert Path(o).read_bytes()[:4] == b"\x89PNG" and "speedup" in md
    finally:
        demo.close()
