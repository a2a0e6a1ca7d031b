"""Click latency of the apps in a real browser: click a mask cell, time until the grid shows the new
cell colour and until the MAC readout (computed on the server) shows the new value. Debian's
/usr/bin/chromium via Playwright.

    python benchmarks/app_latency.py --clicks 10             # Streamlit, bundled default model (mnist-ddpm)
    python benchmarks/app_latency.py --model config:tests/configs/tiny-unet.json --steps 20
    python benchmarks/app_latency.py --app gradio --clicks 10   # the Gradio app (same grid in a gr.HTML)

Prints the median and the max of each, in milliseconds, and a JSON line (``--json FILE`` saves it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from blockmask.io import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]

# The readout text and the grid's cells (app/components/mask_grid.js keeps them in data-cells on its
# root, inside the component's shadow root), read in the page.
READ = """() => {
  const m = [...document.querySelectorAll('[data-testid=stMetric]')].find(e => e.innerText.includes('Computed cells'));
  if (!window.__bmg || !window.__bmg.isConnected) {
    window.__bmg = null;
    for (const h of document.querySelectorAll('*')) {
      const r = h.shadowRoot && h.shadowRoot.querySelector('.bm-grid');
      if (r) { window.__bmg = r; break; }
    }
  }
  return [m ? m.innerText : '', window.__bmg ? window.__bmg.dataset.cells : ''];
}"""


IDLE = """() => !document.querySelector('[data-testid=stStatusWidgetRunningIcon], [data-testid=stStatusWidgetRunningManIcon]')"""


def _wait_idle(page, timeout_ms: int = 600_000, quiet_ms: int = 1000) -> None:
    """Until no script run has been seen for ``quiet_ms`` (a fragment rerun is often followed by a full
    page rerun a moment later; Streamlit shows its running icon during each)."""
    page.evaluate("() => { window.__bmQuiet = performance.now(); }")
    page.wait_for_function(
        f"() => {{ const now = performance.now(); if (!({IDLE})()) window.__bmQuiet = now; "
        f"return now - window.__bmQuiet > {quiet_ms}; }}", timeout=timeout_ms, polling=50)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _app_page(cmd: list[str], ready_url: str, env: dict, tries: int):
    """Start the app (``cmd`` in the repo root), wait until ``ready_url`` answers, yield a Chromium page
    on it; the browser and the server are stopped afterwards."""
    from playwright.sync_api import sync_playwright

    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(tries):
            try:
                urllib.request.urlopen(ready_url, timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                yield b.new_page(viewport={"width": 1400, "height": 1800})
            finally:
                b.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # a busy server (a generation under way) may not stop in time
            proc.kill()
            proc.wait()


def _click_cells(page, read_js: str, grid: str, clicks: int, *, top: int, settle) -> tuple[list, list]:
    """Click ``clicks`` different mask cells (never in row 0, which stays computed; on screen, ``top``
    pixels below the page's top bar); per click, the time until the grid shows the new cell and until
    the readout changes. ``settle(page)`` runs after each click, before the next."""
    readout_ms, chart_ms = [], []
    for c in range(clicks):
        before = page.evaluate(read_js)
        geo = json.loads(page.locator(f"{grid} .bm-grid").first.get_attribute("data-geo"))
        box = page.locator(f"{grid} canvas.bm-canvas").first.bounding_box()
        height = page.viewport_size["height"]
        cells = [(box["x"] + geo["x0"][i] + geo["cw"] / 2, box["y"] + geo["top"] + (k + 0.5) * geo["ch"])
                 for k in range(1, geo["K"]) for i in range(geo["N"])]
        cells = [xy for xy in cells if top < xy[1] < height - 20]
        x, y = cells[(7 + 13 * c) % len(cells)]
        page.mouse.move(x, y)
        t0 = time.perf_counter()
        page.mouse.click(x, y)
        page.wait_for_function(f"b => ({read_js})()[1] !== b", arg=before[1], timeout=30_000, polling="raf")
        t1 = time.perf_counter()
        page.wait_for_function(f"b => ({read_js})()[0] !== b", arg=before[0], timeout=30_000, polling="raf")
        t2 = time.perf_counter()
        chart_ms.append((t1 - t0) * 1000)
        readout_ms.append((t2 - t0) * 1000)
        settle(page)
    return readout_ms, chart_ms


def _summary(readout_ms: list, chart_ms: list) -> dict:
    return {"readout_ms": {"median": statistics.median(readout_ms), "max": max(readout_ms), "all": readout_ms},
            "chart_ms": {"median": statistics.median(chart_ms), "max": max(chart_ms), "all": chart_ms}}


def measure(model: str, steps: int | None, clicks: int, port: int | None = None, auto: bool = True) -> dict:
    port = port or _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
           "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    with _app_page(cmd, f"http://127.0.0.1:{port}/_stcore/health", {"BLOCKMASK_APP_MODEL": model}, 240) as page:
        page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
        page.get_by_text("MACs % of original").first.wait_for(timeout=180_000)
        page.locator("canvas.bm-canvas").first.wait_for(timeout=60_000)
        if steps:
            box = page.get_by_role("spinbutton", name="Sampling steps K")
            box.fill(str(steps))
            box.press("Enter")
            _wait_idle(page)
        if auto:  # tick "Auto-update" (off by default since issue 28): clicks after a Generate re-run it
            page.get_by_text("Auto-update").first.click()
            _wait_idle(page)
            page.locator("canvas.bm-canvas").first.scroll_into_view_if_needed()
        page.wait_for_timeout(2000)
        # below Streamlit's header bar; let any follow-up (page rerun, generation) finish before the next click
        times = _click_cells(page, READ, "", clicks, top=80, settle=_wait_idle)
    return {"model": model or "default", "clicks": clicks, "auto_generate": auto, **_summary(*times)}


GRADIO_READ = """() => {
  const g = document.querySelector('#mask-grid .bm-grid');
  const r = document.querySelector('#readout');
  return [r ? r.innerText : '', g ? g.dataset.cells : ''];
}"""


def measure_gradio(model: str, steps: int | None, clicks: int, port: int | None = None) -> dict:
    """The same clicks on the Gradio app (app/gradio_demo.py): the grid redraws in the browser, the
    readout after the server's reply (grid_edit → MaskEditor → view)."""
    port = port or _free_port()
    env = {"BLOCKMASK_APP_MODEL": model} if model else {}
    with _app_page([sys.executable, "app/gradio_demo.py", "--port", str(port)], f"http://127.0.0.1:{port}/",
                   env, 480) as page:
        page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
        page.wait_for_function("() => document.querySelector('#readout')?.innerText.includes('computed cells')",
                               timeout=180_000)
        if steps:
            box = page.get_by_label("Sampling steps K")
            box.fill(str(steps))
            box.press("Enter")
            page.wait_for_function(f"() => document.querySelector('#readout').innerText.includes('K={steps} ')",
                                   timeout=180_000)
        page.locator("#mask-grid canvas.bm-canvas").first.scroll_into_view_if_needed()
        page.wait_for_timeout(2000)
        pause = int(os.environ.get("BM_PAUSE_MS", "500"))  # let the plots of this edit finish drawing
        times = _click_cells(page, GRADIO_READ, "#mask-grid", clicks, top=20,
                             settle=lambda pg: pg.wait_for_timeout(pause))
    return {"app": "gradio", "model": model or "default", "clicks": clicks, **_summary(*times)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app", choices=("streamlit", "gradio"), default="streamlit")
    ap.add_argument("--model", default="", help="model spec (default: the app's default, the bundled mnist-ddpm)")
    ap.add_argument("--steps", type=int, help="set the step count K in the sidebar first")
    ap.add_argument("--clicks", type=int, default=10)
    ap.add_argument("--no-auto", action="store_true", help='Streamlit: leave "Auto-update" off (its default; '
                    "otherwise it is ticked first)")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args()
    if args.app == "gradio":
        r = measure_gradio(args.model, args.steps, args.clicks)
    else:
        r = measure(args.model, args.steps, args.clicks, auto=not args.no_auto)
    for k in ("readout_ms", "chart_ms"):
        print(f"{k[:-3]:8s} median {r[k]['median']:.0f} ms, max {r[k]['max']:.0f} ms over {args.clicks} clicks")
    print(json.dumps(r))
    if args.json:
        atomic_write_text(args.json, json.dumps(r, indent=1))


if __name__ == "__main__":
    main()
