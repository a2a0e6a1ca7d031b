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


# labels (metric, widget) and metric deltas whose text is cut (ellipsis / hidden overflow) at the current width
TRUNCATED_LABELS = """() => [...document.querySelectorAll(
    '[data-testid=stMetricLabel], [data-testid=stWidgetLabel], [data-testid=stMetricDelta]')].filter(el =>
    [el, ...el.querySelectorAll('*')].some(e => e.scrollWidth > e.clientWidth + 1 &&
        getComputedStyle(e).overflow !== 'visible')).map(el => el.innerText.trim())"""


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
            "'Speedup (median)')", timeout=180_000)
        speed = page.locator('[data-testid="stMetric"]').filter(
            has=page.locator('[data-testid="stMetricLabel"]', has_text=re.compile(r"^Speedup \(median\)$"))).first.locator(
            '[data-testid="stMetricValue"]').inner_text()
        assert re.match(r"\d+\.\d+×", speed)
        page.set_viewport_size({"width": 1280, "height": 1800})  # issue 15: labels were cut at 1280 px
        page.wait_for_timeout(1500)
        cut = page.evaluate(TRUNCATED_LABELS)
        assert len(page.locator('[data-testid="stMetricLabel"]').all()) >= 8 and not cut, cut
        page.set_viewport_size({"width": 1400, "height": 3600})  # Streamlit scrolls inside its own container
        page.wait_for_function(  # the three images (original, masked, difference) are drawn
            "() => { const im = [...document.querySelectorAll('[data-testid=stImage] img')]; "
            "return im.length >= 3 && im.every(i => i.complete && i.naturalWidth > 0); }", timeout=60_000)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ART / "streamlit.png"), full_page=True)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _grid_geo(page, sel: str):
    grid = page.locator(f"{sel} .bm-grid").first
    grid.wait_for(timeout=60_000)
    geo = json.loads(grid.get_attribute("data-geo"))
    page.locator(f"{sel} canvas.bm-canvas").first.scroll_into_view_if_needed()
    box = page.locator(f"{sel} canvas.bm-canvas").first.bounding_box()

    def centre(k, i):
        return box["x"] + geo["x0"][i] + geo["cw"] / 2, box["y"] + geo["top"] + k * geo["ch"] + geo["ch"] / 2

    return grid, geo, centre


def _computed(page) -> int:
    return int(re.search(r"computed cells (\d+)/", page.locator("#readout").inner_text()).group(1))


def test_gradio_grid_download_train_and_dit(browser):
    """Hover text, click and drag edits on the shared grid, download = the current mask, training
    progress, and a DiT's class label reaching the model."""
    ART.mkdir(exist_ok=True)
    port = _free_port()
    dit = "config:" + str(ROOT / "tests" / "configs" / "tiny-dit.json")
    proc = _server([sys.executable, "app/gradio_demo.py", "--port", str(port)],
                   {"BLOCKMASK_APP_MODEL": TINY, "BLOCKMASK_APP_ALLOW": dit}, f"http://127.0.0.1:{port}/")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
        page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
        page.wait_for_function("() => document.querySelector('#readout')?.innerText.includes('computed cells')",
                               timeout=120_000)
        grid, geo, centre = _grid_geo(page, "#mask-grid")
        n, cells0, before = geo["N"], grid.get_attribute("data-cells"), _computed(page)
        page.mouse.move(*centre(2, 3))
        tip = page.locator("#mask-grid .bm-tip").inner_text()
        assert "MACs" in tip and "k=2" in tip and "computed" in tip  # unit, MACs, step, timestep, state
        page.mouse.click(*centre(2, 3))
        cells1 = grid.get_attribute("data-cells")  # redrawn in the browser at once
        assert sum(a != b for a, b in zip(cells0, cells1)) == 1 and cells1[2 * n + 3] == "0"
        page.wait_for_function(f"() => document.querySelector('#readout').innerText.includes('cells {before - 1}/')",
                               timeout=60_000)
        page.mouse.move(*centre(4, 0))  # drag a box: steps 4..6 × units 0..2 toggle
        page.mouse.down()
        page.mouse.move(*centre(6, 2), steps=4)
        page.mouse.up()
        cells2 = grid.get_attribute("data-cells")
        assert sorted(j for j in range(len(cells2)) if cells2[j] != cells1[j]) == \
            sorted(k * n + i for k in (4, 5, 6) for i in (0, 1, 2))
        page.wait_for_function(f"() => document.querySelector('#readout').innerText.includes('cells {before - 10}/')",
                               timeout=60_000)
        assert grid.get_attribute("data-cells") == cells2  # the server applied the same edit
        page.wait_for_timeout(500)
        with page.expect_download(timeout=60_000) as dl:  # one click, the current mask (not the previous one)
            page.locator("#download").click()
        saved = json.loads(Path(dl.value.path()).read_text())
        assert "".join("1" if c else "0" for row in saved["mask"] for c in row) == cells2
        page.locator("#generate").click()
        page.wait_for_function("() => document.querySelector('#gen-readout').innerText.includes('Speedup')",
                               timeout=180_000)
        assert "repeats" in page.locator("#gen-readout").inner_text()
        grid, geo, centre = _grid_geo(page, "#mask-grid")  # the page scrolled to the Generate button
        page.mouse.click(*centre(3, 5))  # an edit after Generate marks the results stale
        page.wait_for_function("() => document.querySelector('#stale').innerText.includes('Stale')", timeout=60_000)
        page.wait_for_timeout(1000)
        page.screenshot(path=str(ART / "gradio.png"), full_page=True)
        # training: progress shown while it runs, the trained mask loaded at the end
        page.get_by_text("Train a mask here").click()
        page.get_by_label("Iterations per step").fill("2")
        page.get_by_label("Batch (noise seeds)").fill("1")
        page.locator("#train-start").click()
        page.wait_for_function("() => /step \\d+\\/\\d+/.test(document.body.innerText)", timeout=120_000)
        page.wait_for_function("() => /Loaded the trained mask|all ones/.test("
                               "document.querySelector('#train-status').innerText)", timeout=300_000)
        assert "trained here" in page.locator("#readout").inner_text()
        # large K: rows get short; "+" makes them taller and the grid scrolls (pan)
        steps = page.get_by_label("Sampling steps K")
        steps.fill("200")
        steps.press("Enter")
        page.wait_for_function("() => document.querySelector('#readout').innerText.includes('K=200 ')", timeout=120_000)
        page.wait_for_function("() => JSON.parse(document.querySelector('#mask-grid .bm-grid').dataset.geo).K === 200")
        ch = json.loads(page.locator("#mask-grid .bm-grid").get_attribute("data-geo"))["ch"]
        page.locator("#mask-grid .bm-zoom button[data-z=in]").click()
        assert json.loads(page.locator("#mask-grid .bm-grid").get_attribute("data-geo"))["ch"] == 2 * ch
        scroll = page.locator("#mask-grid .bm-scroll")
        assert scroll.evaluate("e => e.scrollHeight > e.clientHeight")
        # a class-conditional DiT: the class label field appears and reaches the model
        model = page.get_by_label("Model", exact=True)
        model.click()
        page.get_by_role("option", name=re.compile("tiny-dit")).click()
        page.locator("#class-label").wait_for(state="visible", timeout=120_000)
        page.locator("#class-label input").fill("3")
        page.locator("#generate").click()
        page.wait_for_function("() => document.querySelector('#gen-readout').innerText.includes('class 3')",
                               timeout=180_000)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_gradio_presets_table_shows_every_column(browser):
    """Issue 28: the presets table (now with provenance and PSNR) showed only its first column."""
    port = _free_port()
    proc = _server([sys.executable, "app/gradio_demo.py", "--port", str(port)], {"BLOCKMASK_APP_MODEL": TINY},
                   f"http://127.0.0.1:{port}/")
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1400})
        page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
        opener = page.get_by_text("Compare the presets at this K (table)").first
        opener.wait_for(timeout=120_000)
        opener.click()
        heads = page.locator("#presets-table th")
        heads.first.wait_for(timeout=60_000)
        page.locator("#presets-table").scroll_into_view_if_needed()
        box = page.locator("#presets-table").bounding_box()
        cols = [(h.inner_text().strip(), h.bounding_box()) for h in heads.all()]
        assert [c for c, _ in cols][:7] == ["mask", "provenance", "MACs % of original", "ideal speedup (MACs)",
                                            "computed cells", "PSNR vs plain (dB)", "PSNR measured on"], cols
        for name, b in cols:  # every column drawn, inside the table, wide enough to read
            assert b is not None and b["width"] >= 60 and b["x"] + b["width"] <= box["x"] + box["width"] + 2, name
    finally:
        proc.terminate()
        proc.wait(timeout=20)
