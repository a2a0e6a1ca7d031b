"""A built wheel carries everything the library and the apps need at run time: installed into a fresh
virtualenv and run from outside the repository, it samples the bundled mnist-ddpm and starts both
apps headless."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_repo(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONPATH": ""}
    env.pop("BLOCKMASK_ASSETS", None)
    env.pop("BLOCKMASK_APP_MODEL", None)
    dist, venv = tmp_path / "dist", tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(ROOT)], check=True, env=env, cwd=tmp_path, timeout=300)
    wheel = next(dist.glob("blockmask-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    py, bm = venv / "bin" / "python", venv / "bin" / "blockmask"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, env=env, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(*cmd, timeout=300):
        r = subprocess.run([str(c) for c in cmd], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    where = run(py, "-c", "import blockmask, blockmask.io.resources as r; print(blockmask.__file__); "
                          "print(r.assets_dir()); print(r.app_dir())").split()
    assert all(str(venv) in w for w in where), where  # the wheel's files, not the checkout's
    run(bm, "sample", "mnist-ddpm", "--steps", "3", "--num-images", "2", "-o", "out")
    macs = run(bm, "macs", "mnist-ddpm", "--steps", "50", "--mask", "mnist-ddpm-050steps-b45")  # a shipped mask
    assert "MACs of" in macs and "(100.0%" not in macs
    assert (work / "out" / "samples.npy").is_file() and (work / "out" / "grid.png").is_file()
    run(bm, "info", "mnist-dit")
    # Streamlit: the installed app script runs headless on the bundled model without an exception
    run(py, "-c", "from streamlit.testing.v1 import AppTest; from blockmask.io.resources import app_dir; "
                  "at = AppTest.from_file(str(app_dir() / 'main.py'), default_timeout=240).run(); "
                  "assert not at.exception, [e.message for e in at.exception]; print(len(at.main.children))")
    # Gradio: `blockmask app gradio` serves the page
    port = _free_port()
    proc = subprocess.Popen([str(bm), "app", "gradio", "--port", str(port)], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, ok = time.time() + 180, False
        while time.time() < deadline and proc.poll() is None and not ok:
            try:
                ok = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200
            except OSError:
                time.sleep(1)
        assert ok, proc.stderr.read()[-2000:] if proc.poll() is not None else "gradio did not answer"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
