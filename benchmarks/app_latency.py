"""Issue 28's latency targets, in a real browser, for both apps (Debian's /usr/bin/chromium via
Playwright), on the bundled default model (mnist-ddpm, its shipped mask at K=50) with its shipped
frontier (assets/frontier/MODEL-050ref.json) loaded:

- **click → redraw**: a click on a mask cell until the grid shows it changed (target < 300 ms);
  also until the MAC readout, computed on the server, shows the new figures;
- **rectify → redrawn**: a click on Rectify until the grid shows the dead cell just made as removed
  (target < 300 ms);
- **frontier plot after an edit**: the same cell click until the frontier plot's live point (the
  current mask) has moved to its new MACs (target < 500 ms).

Each round clicks a different cell whose toggle leaves dead work for Rectify (a reused cell, where the
mask has one; found with the shared ``MaskEditor`` on the page's own mask), waits until the page is
quiet, presses Rectify, waits again;
the first ``--warmup`` rounds are not counted. Times are taken in the page: from the ``mousedown`` of
the click to the first animation frame whose DOM shows the change (grid cells, readout text, the
plotly trace's x).

    python benchmarks/app_latency.py                         # both apps, 10 rounds after 2 warm-up rounds
    python benchmarks/app_latency.py --app gradio --repeats 5
    python benchmarks/app_latency.py --model config:tests/configs/tiny-unet.json --frontier-dir DIR --repeats 2

Prints median, quartiles and range per app and measure, and a JSON line (``--json FILE`` saves it).
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from blockmask.io.files import atomic_write_text  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]
TARGETS_MS = {"click_grid": 300, "rectify_grid": 300, "click_frontier": 500}
LIVE = "current mask"  # the frontier plot's live trace (blockmask.viz.frontier.figure)

# window.__bmProbe() → {grid: cells, readout: text, live: x of the live point, frontier: traces drawn}
_PLOT = """
  const CELLS = t => (t.match(/computed cells\\s*(\\d+\\s*\\/\\s*\\d+)/i) || ['', ''])[1];
  let live = '', frontier = 0;
  for (const g of document.querySelectorAll(PLOTS)) {
    const t = g._fullData && g._fullData.find(t => t.name === '%s');
    if (t) { live = String(t.x[0]); frontier = g._fullData.length; break; }
  }""" % LIVE
PROBE = {
    # Streamlit: the grid is a components-v2 module inside a shadow root (found once, kept while connected)
    "streamlit": """() => { window.__bmProbe = () => {
  const m = [...document.querySelectorAll('[data-testid=stMetric]')].find(e => e.innerText.includes('Computed cells'));
  if (!window.__bmg || !window.__bmg.isConnected) {
    window.__bmg = null;
    for (const h of document.querySelectorAll('*')) {
      const r = h.shadowRoot && h.shadowRoot.querySelector('.bm-grid');
      if (r) { window.__bmg = r; break; }
    }
  }
  const PLOTS = '[data-testid=stPlotlyChart] .js-plotly-plot';""" + _PLOT + """
  return {grid: window.__bmg ? window.__bmg.dataset.cells : '', geo: window.__bmg ? window.__bmg.dataset.geo : '',
          readout: m ? CELLS(m.innerText) : '', live, frontier};
}; }""",
    "gradio": """() => { window.__bmProbe = () => {
  const g = document.querySelector('#mask-grid .bm-grid'), r = document.querySelector('#readout');
  const PLOTS = '#frontier-plot .js-plotly-plot';""" + _PLOT + """
  return {grid: g ? g.dataset.cells : '', geo: g ? g.dataset.geo : '', readout: r ? CELLS(r.innerText) : '', live,
          frontier};
}; }""",
}

# Arm a watch: t0 at the next mousedown (capture phase, so the grid's own handlers come after), then
# every animation frame records when each watched key first differs from its value now.
ARM = """(keys) => {
  const base = window.__bmProbe(), w = {t0: null, hits: {}, keys, stop: false};
  window.__bmW = w;
  window.addEventListener('mousedown', () => { if (w.t0 === null) w.t0 = performance.now(); },
                          {capture: true, once: true});
  const loop = () => {
    if (w.t0 !== null) {
      const now = performance.now(), p = window.__bmProbe();
      for (const k of keys) if (!(k in w.hits) && p[k] !== base[k]) w.hits[k] = now - w.t0;
    }
    if (!w.stop && Object.keys(w.hits).length < keys.length) requestAnimationFrame(loop);
  };
  requestAnimationFrame(loop);
}"""
DONE = "() => window.__bmW && Object.keys(window.__bmW.hits).length === window.__bmW.keys.length"
ST_BUSY = "!!document.querySelector('[data-testid=stStatusWidgetRunningIcon], [data-testid=stStatusWidgetRunningManIcon]')"
GR_BUSY = "!!document.querySelector('.pending, .generating')"


def _wait_quiet(page, busy_js: str, quiet_ms: int, timeout_ms: int = 600_000) -> None:
    """Until the app has shown no activity (``busy_js``) for ``quiet_ms``."""
    page.evaluate("() => { window.__bmQuiet = performance.now(); }")
    page.wait_for_function(
        f"() => {{ const now = performance.now(); if ({busy_js}) window.__bmQuiet = now; "
        f"return now - window.__bmQuiet > {quiet_ms}; }}", timeout=timeout_ms, polling=50)


def _watch(page, keys: list[str], act, timeout_ms: int = 60_000) -> dict:
    """Arm the watch, run ``act()`` (the click), return {key: ms or None if it never changed}."""
    page.evaluate(ARM, keys)
    act()
    try:
        page.wait_for_function(DONE, timeout=timeout_ms, polling=100)
    except Exception:  # noqa: BLE001 — a key that never changed is reported as None
        pass
    hits = page.evaluate("() => { window.__bmW.stop = true; return window.__bmW.hits; }")
    return {k: hits.get(k) for k in keys}


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
        except subprocess.TimeoutExpired:  # a busy server may not stop in time
            proc.kill()
            proc.wait()


def _context(spec: str):
    from blockmask.viz.context import default_model_spec, load_context

    return load_context(spec or default_model_spec(), "ddim", device="cpu")


def dead_cell(ctx, cells: str, K: int, N: int, candidates: list[tuple[int, int]], start: int):
    """The first cell of ``candidates`` (from ``start``, wrapping; rows 1..K-1) whose toggle on the page's
    mask ``cells`` leaves dead work for Rectify (a reused cell turned on, or a computed one turned off
    that a producer fed alone): the shared MaskEditor decides, as in the apps. None when there is none."""
    import numpy as np

    from blockmask.viz import MaskEditor

    mask = np.array([c == "1" for c in cells], bool).reshape(K, N)
    for j in range(len(candidates)):
        k, i = candidates[(start + j) % len(candidates)]
        m = mask.copy()
        m[k, i] = not m[k, i]
        ed = MaskEditor.create(ctx, K, m)
        ed.rectify(ctx)
        if ed.removed is not None and ed.removed.any():
            return k, i
    return None


def _rounds(page, app: str, spec: str, grid_sel: str, rectify, *, rounds: int, top: int, quiet) -> list[dict]:
    """``rounds`` rounds of (click a cell whose toggle leaves dead work; quiet; Rectify; quiet)."""
    ctx = _context(spec)
    keys = ["grid", "readout"] + (["live"] if page.evaluate("() => window.__bmProbe()")["frontier"] else [])
    out = []
    for c in range(rounds):
        p = page.evaluate("() => window.__bmProbe()")
        geo = json.loads(p["geo"])
        box = page.locator(f"{grid_sel} canvas.bm-canvas").first.bounding_box()
        height = page.viewport_size["height"]

        def xy(k, i):
            return box["x"] + geo["x0"][i] + geo["cw"] / 2, box["y"] + geo["top"] + (k + 0.5) * geo["ch"]

        seen = [(k, i) for k in range(1, geo["K"]) for i in range(geo["N"]) if top < xy(k, i)[1] < height - 20]
        # prefer reused cells (a click turns one on: the readout and the live point move right)
        order = sorted(seen, key=lambda ki: p["grid"][ki[0] * geo["N"] + ki[1]] == "1")
        cell = dead_cell(ctx, p["grid"], geo["K"], geo["N"], order, (7 + 13 * c) % max(1, len(order)))
        if cell is None:
            raise SystemExit(f"{app}: no cell on screen leaves dead work when toggled; cannot time Rectify")
        x, y = xy(*cell)
        page.mouse.move(x, y)
        click = _watch(page, keys, lambda: page.mouse.click(x, y))
        quiet(page)
        rect = _watch(page, keys, rectify)
        quiet(page)
        out.append({"click_grid": click["grid"], "click_readout": click["readout"], "click_frontier": click.get("live"),
                    "rectify_grid": rect["grid"], "rectify_readout": rect["readout"],
                    "rectify_frontier": rect.get("live")})
    return out


def _env(model: str, frontier_dir: str | None) -> dict:
    env = {"BLOCKMASK_APP_MODEL": model} if model else {}
    if frontier_dir:
        env["BLOCKMASK_FRONTIER_DIR"] = str(Path(frontier_dir).resolve())
    return env


def _frontier_ready(page) -> int:
    """Wait for the frontier plot with its live point; the number of its traces (0: no frontier)."""
    try:
        page.wait_for_function("() => window.__bmProbe().frontier > 0", timeout=120_000, polling=250)
    except Exception:  # noqa: BLE001 — a model without a frontier: the plot measure is left out
        return 0
    return page.evaluate("() => window.__bmProbe().frontier")


def measure_streamlit(model: str, rounds: int, frontier_dir: str | None, auto: bool = False) -> tuple[list, int]:
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
           "--server.port", str(port), "--browser.gatherUsageStats", "false"]
    with _app_page(cmd, f"http://127.0.0.1:{port}/_stcore/health", _env(model, frontier_dir), 240) as page:
        page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
        page.get_by_text("MACs % of original").first.wait_for(timeout=180_000)
        page.locator("canvas.bm-canvas").first.wait_for(timeout=60_000)
        page.evaluate(PROBE["streamlit"])
        traces = _frontier_ready(page)
        quiet = lambda pg: _wait_quiet(pg, ST_BUSY, 1000)  # noqa: E731 — a fragment rerun, then the page's
        if auto:  # tick "Auto-update": every edit after a Generate regenerates the images too
            page.get_by_text("Auto-update").first.click()
            quiet(page)
        page.locator("canvas.bm-canvas").first.scroll_into_view_if_needed()
        quiet(page)
        btn = page.get_by_role("button", name="Rectify", exact=True)
        return _rounds(page, "streamlit", model, "", lambda: btn.click(), rounds=rounds, top=80, quiet=quiet), traces


def measure_gradio(model: str, rounds: int, frontier_dir: str | None) -> tuple[list, int]:
    port = _free_port()
    with _app_page([sys.executable, "app/gradio_demo.py", "--port", str(port)], f"http://127.0.0.1:{port}/",
                   _env(model, frontier_dir), 480) as page:
        page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
        page.wait_for_function("() => document.querySelector('#readout')?.innerText.includes('computed cells')",
                               timeout=180_000)
        page.evaluate(PROBE["gradio"])
        traces = _frontier_ready(page)
        quiet = lambda pg: _wait_quiet(pg, GR_BUSY, 700)  # noqa: E731 — readout, then plots and frontier
        page.locator("#mask-grid canvas.bm-canvas").first.scroll_into_view_if_needed()
        quiet(page)
        btn = page.get_by_role("button", name="Rectify", exact=True)
        return _rounds(page, "gradio", model, "#mask-grid", lambda: btn.click(), rounds=rounds, top=20,
                       quiet=quiet), traces


def summary(rows: list[dict]) -> dict:
    """Per measure: median, quartiles, min, max, every value (ms), and misses (never changed)."""
    out = {}
    for k in rows[0] if rows else []:
        v = sorted(r[k] for r in rows if r[k] is not None)
        if not v:
            continue
        q = statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3
        out[k] = {"median": statistics.median(v), "q1": q[0], "q3": q[2], "min": v[0], "max": v[-1],
                  "n": len(v), "missed": sum(r[k] is None for r in rows), "all": [r[k] for r in rows]}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--app", choices=("both", "streamlit", "gradio"), default="both")
    ap.add_argument("--model", default="", help="model spec (default: the apps' default, the bundled mnist-ddpm)")
    ap.add_argument("--repeats", type=int, default=10, help="rounds counted (after the warm-up)")
    ap.add_argument("--warmup", type=int, default=2, help="rounds run first and not counted")
    ap.add_argument("--frontier-dir", help="frontier files for a model without a shipped one ($BLOCKMASK_FRONTIER_DIR)")
    ap.add_argument("--auto", action="store_true", help='Streamlit: tick "Auto-update" first (off by default)')
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    apps = ["streamlit", "gradio"] if args.app == "both" else [args.app]
    result = {"model": args.model or "default", "repeats": args.repeats, "warmup": args.warmup,
              "targets_ms": TARGETS_MS, "load_before": os.getloadavg(), "apps": {}}
    for app in apps:
        n = args.repeats + args.warmup
        rows, traces = (measure_streamlit(args.model, n, args.frontier_dir, args.auto) if app == "streamlit"
                        else measure_gradio(args.model, n, args.frontier_dir))
        result["apps"][app] = {"frontier_traces": traces, **summary(rows[args.warmup:])}
    result["load_after"] = os.getloadavg()
    for app, r in result["apps"].items():
        print(f"{app} (frontier plot: {r['frontier_traces'] or 'none'} traces)")
        for k, s in r.items():
            if not isinstance(s, dict):
                continue
            t = TARGETS_MS.get(k)
            met = "" if t is None else (" ✓" if s["median"] < t else " ✗") + f" target < {t} ms"
            miss = f" ({s['missed']} never changed)" if s["missed"] else ""
            print(f"  {k:17s} median {s['median']:6.0f} ms · quartiles {s['q1']:.0f}–{s['q3']:.0f} · range "
                  f"{s['min']:.0f}–{s['max']:.0f} ms · n={s['n']}{miss}{met}")
    print(f"load average before {result['load_before'][0]:.2f}, after {result['load_after'][0]:.2f}")
    print(json.dumps(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
