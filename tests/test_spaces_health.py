"""Both Space entry points started as the Spaces start them, headless, on a free port, until they
answer their health check; then shut down cleanly (SIGTERM, as a Space stops its container).

* Streamlit (Docker Space): the Dockerfile's CMD, with only the port changed (and the same Python);
  ``/_stcore/health`` must answer ``ok``.
* Gradio (Gradio Space): ``python <README app_file>`` with the environment a Space sets
  (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT); ``/`` must answer 200 and gradio_client must read the API.

Both run the real default model (what a visitor sees first), so they take a while: marked slow."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_spaces import _front_matter, dockerfile_cmd

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
START_S = 300  # a busy 2-core machine loads the default model in ~10-60 s


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.read().decode("utf-8", "replace")


def _wait(proc: subprocess.Popen, url: str, log: Path) -> tuple[int, str]:
    t0 = time.time()
    while time.time() - t0 < START_S:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return _get(url)
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {START_S} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen, log: Path) -> None:
    """SIGTERM, then the process must be gone within 30 s without a traceback."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"did not stop within 30 s of SIGTERM:\n{log.read_text()[-3000:]}") from None
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()[-3000:]
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env}
    env.pop("BLOCKMASK_APP_MODEL", None)  # the Space's default model
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def test_streamlit_docker_space_answers_its_health_check(tmp_path):
    cmd = dockerfile_cmd()
    assert cmd[0] == "streamlit"
    port = _free_port()
    cmd = [sys.executable, "-m", *cmd]  # the same command with this interpreter
    cmd[cmd.index("--server.port") + 1] = str(port)
    log = tmp_path / "streamlit.log"
    proc = _start(cmd, {"STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}, log)
    try:
        status, body = _wait(proc, f"http://127.0.0.1:{port}/_stcore/health", log)
        assert (status, body.strip()) == (200, "ok")
        assert _get(f"http://127.0.0.1:{port}/")[0] == 200
    finally:
        if proc.poll() is None:
            _stop(proc, log)
        else:
            pytest.fail(f"streamlit exited early:\n{log.read_text()[-3000:]}")


def test_gradio_space_answers_its_health_check(tmp_path):
    from gradio_client import Client

    port = _free_port()
    env = {"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_EXAMPLES_CACHE": str(tmp_path / "examples")}
    log = tmp_path / "gradio.log"
    proc = _start([sys.executable, _front_matter()["app_file"]], env, log)
    try:
        status, body = _wait(proc, f"http://127.0.0.1:{port}/", log)
        assert status == 200 and "gradio" in body.lower()
        api = Client(f"http://127.0.0.1:{port}/", verbose=False).view_api(print_info=False, return_format="dict")
        names = set(api["named_endpoints"])
        assert {"/generate", "/load_model", "/grid_edit"} <= names, names
    finally:
        if proc.poll() is None:
            _stop(proc, log)
        else:
            pytest.fail(f"the Gradio app exited early:\n{log.read_text()[-3000:]}")
