"""The apps (issue 31, item 8): the server enforces Streamlit's upload limit, Gradio handlers read
only regular files, a refused input logs one line and no traceback, and folders with safetensors
are loaded with use_safetensors=True."""

from __future__ import annotations

import logging
import sys
import tomllib
import warnings
from pathlib import Path

import gradio as gr
import pytest

from blockmask.viz.access import MAX_UPLOAD_BYTES

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"
TINY = "config:" + str(ROOT / "tests" / "configs" / "tiny-unet.json")
sys.path.insert(0, str(APP))
import gradio_checks  # noqa: E402
import gradio_handlers as h  # noqa: E402


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BLOCKMASK_APP_MODEL", TINY)
    warnings.simplefilter("ignore")


@pytest.mark.parametrize("where", [ROOT, APP])
def test_streamlit_server_enforces_the_upload_limit(where):
    cfg = tomllib.loads((where / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["maxUploadSize"] == MAX_UPLOAD_BYTES // 1_000_000 == 2


def test_blockmask_app_streamlit_passes_the_limit(monkeypatch, capsys):
    import subprocess

    from blockmask.cli.main import main

    seen = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, env=None: seen.append(cmd) or 0)
    with pytest.raises(SystemExit):
        main(["app", "streamlit", "--headless"])
    cmd = seen[0]
    assert cmd[cmd.index("--server.maxUploadSize") + 1] == "2"


@pytest.mark.parametrize("handler", ["upload_mask", "upload_prompt"])
def test_gradio_uploads_must_be_regular_files(handler, caplog):
    s = h.new_session(TINY, 4)
    with caplog.at_level(logging.WARNING, logger="blockmask.app"):
        with pytest.raises(gr.Error, match="not a regular file") as e:
            getattr(h, handler)(s, "/dev/zero")
    assert e.value.print_exception is False  # Gradio prints no traceback for it
    assert [r.getMessage() for r in caplog.records if r.name == "blockmask.app"] == [f"refused: {e.value.message}"]


def test_every_refusal_is_one_log_line_without_traceback(caplog):
    s = h.new_session(TINY, 4)
    with caplog.at_level(logging.WARNING, logger="blockmask.app"):
        for call in (lambda: h.load_model(s, TINY, "1.5", "ddim"), lambda: h.upload_mask(s, None),
                     lambda: gradio_checks.choice("x", "Scheduler", ["ddim"])):
            with pytest.raises(gr.Error) as e:
                call()
            assert e.value.print_exception is False
    lines = [r.getMessage() for r in caplog.records if r.name == "blockmask.app"]
    assert len(lines) == 3 and all(line.startswith("refused: ") and "\n" not in line for line in lines)


def test_folders_with_safetensors_load_with_use_safetensors(tmp_path, monkeypatch):
    import diffusers

    from blockmask.workbench import Workbench

    wb = Workbench.load(TINY)
    root = tmp_path / "m"
    wb.model.save_pretrained(root, safe_serialization=True)
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text('{"_class_name": "DDIMScheduler"}')
    orig = diffusers.UNet2DModel.from_pretrained.__func__
    seen = {}

    def spy(cls, *a, **kw):
        seen.update(kw)
        return orig(cls, *a, **kw)

    monkeypatch.setattr(diffusers.UNet2DModel, "from_pretrained", classmethod(spy))
    Workbench.load(str(root))
    assert seen.get("use_safetensors") is True


def test_apps_get_the_load_warnings(tmp_path):
    """A folder without a scheduler config: the apps' model context carries the warning (shown with
    st.warning / gr.Warning), and a scheduler switch keeps it."""
    from blockmask.workbench import Workbench
    from blockmask.viz.context import load_context, with_scheduler

    root = tmp_path / "m"
    Workbench.load(TINY).model.save_pretrained(root, safe_serialization=True)
    ctx = load_context(str(root), device="cpu")
    assert len(ctx.warnings) == 1 and "no scheduler/scheduler_config.json" in ctx.warnings[0]
    assert with_scheduler(ctx, "euler").warnings == ctx.warnings
    assert load_context(TINY, device="cpu").warnings == ()
