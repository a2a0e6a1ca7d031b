"""Both apps in a real Chromium (Debian's /usr/bin/chromium through Playwright; nothing downloaded).

Streamlit runs on the real default model (bundled, or the random-init fallback when it cannot load);
Gradio on a tiny random-init U-Net. Each test clicks a mask cell, presses Generate, checks that the
readouts changed and saves a screenshot to artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
ART = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]
TINY = "config:" + str(ROOT / "tests" / "configs" / "tiny-unet.json")

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)
sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def _server(cmd: list[str], env: dict, url: str):
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_http(url, proc)
    except Exception:
        proc.kill()
        raise
    return proc


@pytest.fixture
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _metric(page, label: str) -> str:
    m = page.locator('[data-testid="stMetric"]', has_text=label).first
    return m.locator('[data-testid="stMetricValue"]').inner_text()


def test_streamlit_click_and_generate(browser):
    ART.mkdir(exist_ok=True)
    port = _free_port()
    env = {"BLOCKMASK_APP_MODEL": ""}
    proc = _server([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
                    "--server.port", str(port), "--browser.gatherUsageStats", "false"], env,
                   f"http://127.0.0.1:{port}/_stcore/health")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
        page.get_by_text("MACs % of original").first.wait_for(timeout=180_000)
        before = _metric(page, "Computed cells")
        grid = page.locator(".bm-grid").first  # the canvas grid (app/components/mask_grid.js); locators pierce its shadow root
        grid.wait_for(timeout=60_000)
        geo = json.loads(grid.get_attribute("data-geo"))
        cells0 = grid.get_attribute("data-cells")
        box = page.locator("canvas.bm-canvas").first.bounding_box()

        def centre(k, i):
            return box["x"] + geo["x0"][i] + geo["cw"] / 2, box["y"] + geo["top"] + k * geo["ch"] + geo["ch"] / 2

        k, i, n = 2, 3, geo["N"]
        page.mouse.move(*centre(k, i))
        page.mouse.click(*centre(k, i))
        cells1 = grid.get_attribute("data-cells")  # redrawn in the browser at once, before any server reply
        assert cells1[k * n + i] != cells0[k * n + i] and sum(a != b for a, b in zip(cells0, cells1)) == 1
        page.wait_for_function(
            "b => [...document.querySelectorAll('[data-testid=stMetric]')].some(m => m.innerText.includes("
            "'Computed cells') && !m.innerText.includes(b))", arg=before, timeout=60_000)
        assert _metric(page, "Computed cells") != before
        # drag a box over steps 4..6 × units 0..2: each of the 9 cells toggles (action "Toggle")
        page.mouse.move(*centre(4, 0))
        page.mouse.down()
        page.mouse.move(*centre(5, 1), steps=3)
        page.mouse.move(*centre(6, 2), steps=3)
        page.mouse.up()
        cells2 = grid.get_attribute("data-cells")
        flipped = [j for j in range(len(cells2)) if cells2[j] != cells1[j]]
        assert sorted(flipped) == sorted(kk * n + ii for kk in (4, 5, 6) for ii in (0, 1, 2))
        page.wait_for_timeout(4000)  # the server applied the same edit and sent the mask back: no change
        assert grid.get_attribute("data-cells") == cells2
        page.get_by_role("button", name="Generate").click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('[data-testid=stMetricLabel]')].some(m => m.innerText.trim() === "
            "'Speedup')", timeout=180_000)
        speed = page.locator('[data-testid="stMetric"]').filter(
            has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(r"^Speedup$"))).first.locator(
            '[data-testid="stMetricValue"]').inner_text()
        assert re.match(r"\d+\.\d+×", speed)
        page.set_viewport_size({"width": 1400, "height": 3600})  # Streamlit scrolls inside its own container
        page.wait_for_function(  # the three images (original, masked, difference) are drawn
            "() => { const im = [...document.querySelectorAll('[data-testid=stImage] img')]; "
            "return im.length >= 3 && im.every(i => i.complete && i.naturalWidth > 0); }", timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ART / "streamlit.png"), full_page=True)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_gradio_click_and_generate(browser):
    ART.mkdir(exist_ok=True)
    port = _free_port()
    proc = _server([sys.executable, "app/gradio_demo.py"], {"BLOCKMASK_APP_MODEL": TINY,
                                                             "GRADIO_SERVER_PORT": str(port)},
                   f"http://127.0.0.1:{port}/")
    try:
        sys.path.insert(0, str(ROOT / "app"))
        from blockmask.viz import figures
        from blockmask.viz.context import load_context

        ctx = load_context(TINY, device="cpu")
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
        readout = page.locator("#readout")
        page.wait_for_function("() => document.querySelector('#readout')?.innerText.includes('computed cells')",
                               timeout=120_000)
        img = page.locator("#mask-image img").first
        img.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)  # let the layout settle before measuring the image
        nat_w, nat_h = page.evaluate("e => [e.naturalWidth, e.naturalHeight]", img.element_handle())
        steps = nat_h // figures.image_layout(ctx, 20)["cell"]
        lay = figures.image_layout(ctx, steps)
        box = img.bounding_box()
        sx, sy = box["width"] / nat_w, box["height"] / nat_h
        c = lay["cell"]
        img.click(position={"x": (lay["x0"][3] + c / 2) * sx, "y": (2 * c + c / 2) * sy})
        page.wait_for_function("() => { const m = document.querySelector('#readout').innerText.match("
                               "/computed cells (\\d+)\\/(\\d+)/); return m && +m[1] === +m[2] - 1; }",
                               timeout=60_000)
        m = re.search(r"computed cells (\d+)/(\d+)", readout.inner_text())
        assert m and int(m.group(1)) == int(m.group(2)) - 1
        page.locator("#generate").click()
        page.wait_for_function("() => document.querySelector('#gen-readout').innerText.includes('speedup')",
                               timeout=180_000)
        assert "PSNR" in page.locator("#gen-readout").inner_text()
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ART / "gradio.png"), full_page=True)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
