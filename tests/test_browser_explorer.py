"""Issue 28's "Done when" for the explorer, in a real Chromium, both apps: clicking a frontier point
(on the plot in both apps; Gradio also through the point selector) loads that schedule
(K and mask) into the grid; the live point moves after a cell toggle; the race shows five columns with
numbers; the export downloads a PNG and the HTML report. Tiny random-init U-Net, synthetic frontier."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from test_browser import ART, ROOT, TINY, _free_port, _grid_geo, _server, browser  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RULE_PLAN = "tiny-unet-006ref-b60p00-plan.json"  # DeepCache b0 N=3 at K=6
PLAN3 = "tiny-unet-006ref-b50p00-plan.json"  # plain DDIM at 3 steps

# the frontier plot (plotly's graph div): page coordinates of trace ``name``'s point with customdata ``cd``
POINT_XY = """([sel, name, cd]) => {
  const gd = [...document.querySelectorAll(sel + ' .js-plotly-plot')].find(g => g.data &&
      g.data.some(t => t.name === name));
  if (!gd) return null;
  const t = gd._fullData.find(t => t.name === name), i = cd === null ? 0 : [...t.customdata].indexOf(cd);
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
  return [r.left + xa._offset + xa.l2p(t.x[i]), r.top + ya._offset + ya.l2p(t.y[i]), t.x[i]];
}"""


@pytest.fixture(scope="module")
def fdir(tmp_path_factory):
    from frontier_fixture import tiny_frontier, write_tiny_frontier
    from blockmask.workbench import Workbench

    d = tmp_path_factory.mktemp("frontier")
    wb = Workbench.load(TINY)
    write_tiny_frontier(d, wb)
    cells = "".join("1" if c else "0" for c in tiny_frontier(wb).masks["DeepCache b0 N=3"].ravel())
    return d, cells


def _wait_attr(page, loc, attr: str, pred, timeout: float = 120) -> str:
    """Poll ``loc``'s attribute until ``pred(value)`` (the grid lives in a shadow root: locators reach it,
    document.querySelector does not)."""
    import time

    t0 = time.time()
    while True:
        v = loc.get_attribute(attr) if loc.count() else None
        if v is not None and pred(v):
            return v
        if time.time() - t0 > timeout:
            raise AssertionError(f"{attr} = {v!r}")
        page.wait_for_timeout(250)


def _live_x(page, sel: str) -> float:
    return page.evaluate(POINT_XY, [sel, "current mask", None])[2]


def test_streamlit_explorer_click_race_export(browser, fdir):  # noqa: F811
    d, cells = fdir
    ART.mkdir(exist_ok=True)
    port = _free_port()
    proc = _server([sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
                    "--server.port", str(port), "--browser.gatherUsageStats", "false"],
                   {"BLOCKMASK_APP_MODEL": TINY, "BLOCKMASK_FRONTIER_DIR": str(d)},
                   f"http://127.0.0.1:{port}/_stcore/health")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 3000}, accept_downloads=True)
        page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
        page.get_by_text("Frontier: what is best at my budget?").first.wait_for(timeout=180_000)
        sel = '[data-testid="stPlotlyChart"]'
        page.wait_for_function("([s, n]) => [...document.querySelectorAll(s + ' .js-plotly-plot')].some(g => "
                               "g.data && g.data.some(t => t.name === n))", arg=[sel, "planner's frontier"],
                               timeout=120_000)
        page.locator(sel).filter(has_text="quality against cost").first.scroll_into_view_if_needed()
        page.wait_for_timeout(500)
        x, y, _ = page.evaluate(POINT_XY, [sel, "planner's frontier", RULE_PLAN])
        page.mouse.move(x, y)
        page.mouse.click(x, y)  # a click on the plot loads the point: K=6 (sidebar K was 20) and its mask
        g = page.locator(".bm-grid").first
        _wait_attr(page, g, "data-geo", lambda v: json.loads(v)["K"] == 6)
        _wait_attr(page, g, "data-cells", lambda v: v == cells)
        grid, geo, centre = _grid_geo(page, "")
        assert page.get_by_text(re.compile("Loaded frontier point planner 60 %")).count() >= 1
        # the live point moves after a cell toggle
        x0 = _live_x(page, sel)
        page.mouse.click(*centre(2, 0))
        page.wait_for_function(f"([s, n]) => {{ const g = [...document.querySelectorAll(s + ' .js-plotly-plot')].find("
                               f"g => g.data && g.data.some(t => t.name === n)); const t = g && g._fullData.find(t => "
                               f"t.name === n); return t && Math.abs(t.x[0] - {x0}) > 1e-9; }}",
                               arg=[sel, "current mask"], timeout=120_000)
        # the race: five columns, each with MACs, time and PSNR
        page.get_by_role("button", name="Run the race").click()
        page.wait_for_function("() => document.querySelectorAll('[class*=st-key-race_lane_] "
                               "[data-testid=stMetric]').length === 15", timeout=180_000)
        lanes = page.locator('[class*="st-key-race_lane_"]')
        assert lanes.count() == 5
        for j in range(5):
            text = lanes.nth(j).inner_text()
            assert re.search(r"\d+\.\d %", text) and re.search(r"\d+\.\d{3} s", text), text
            assert re.search(r"\d+\.\d{2} dB|reference|identical", text), text
        page.screenshot(path=str(ART / "streamlit-explorer.png"), full_page=True)
        # export: the grid as PNG, the HTML report
        with page.expect_download(timeout=60_000) as dl:
            page.get_by_role("button", name="Grid (PNG)").click()
        assert Path(dl.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with page.expect_download(timeout=180_000) as dl:
            page.get_by_role("button", name="HTML report").click()
        html = Path(dl.value.path()).read_text()
        assert dl.value.suggested_filename.endswith("-report.html") and "Race at" in html and "tiny-unet" in html
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_gradio_explorer_select_race_export(browser, fdir):  # noqa: F811
    d, cells = fdir
    port = _free_port()
    proc = _server([sys.executable, "app/gradio_demo.py", "--port", str(port)],
                   {"BLOCKMASK_APP_MODEL": TINY, "BLOCKMASK_FRONTIER_DIR": str(d)}, f"http://127.0.0.1:{port}/")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1800}, accept_downloads=True)
        page.goto(f"http://127.0.0.1:{port}/", timeout=120_000)
        sel = "#frontier-plot"
        page.wait_for_function("([s, n]) => [...document.querySelectorAll(s + ' .js-plotly-plot')].some(g => "
                               "g.data && g.data.some(t => t.name === n))", arg=[sel, "current mask"],
                               timeout=180_000)
        # a click on the plot loads that point (the page's plotly_click: gr.Plot has no click event)
        page.locator(sel).scroll_into_view_if_needed()
        page.wait_for_timeout(800)  # the click handler is attached within 0.3 s of the plot being drawn
        x, y, _ = page.evaluate(POINT_XY, [sel, "planner's frontier", PLAN3])
        page.mouse.move(x, y)
        page.mouse.click(x, y)
        page.wait_for_function("() => document.querySelector('#readout').innerText.includes('K=3 ')",
                               timeout=120_000)
        assert "frontier point planner 50 %" in page.locator("#readout").inner_text()
        dd = page.locator("#fr-point input")
        dd.click()
        page.get_by_role("option", name="planner 60 %: DeepCache b0 N=3").click()
        page.locator("#fr-load").click()
        page.wait_for_function("() => document.querySelector('#readout').innerText.includes('K=6 ')",
                               timeout=120_000)
        _wait_attr(page, page.locator("#mask-grid .bm-grid").first, "data-cells", lambda v: v == cells)
        assert "frontier point planner 60 %" in page.locator("#readout").inner_text()
        # the live point moves after a cell toggle
        page.wait_for_timeout(1500)
        x0 = _live_x(page, sel)
        grid, geo, centre = _grid_geo(page, "#mask-grid")
        page.mouse.click(*centre(2, 0))
        page.wait_for_function(f"([s, n]) => {{ const g = [...document.querySelectorAll(s + ' .js-plotly-plot')].find("
                               f"g => g.data && g.data.some(t => t.name === n)); const t = g && g._fullData.find(t => "
                               f"t.name === n); return t && Math.abs(t.x[0] - {x0}) > 1e-9; }}",
                               arg=[sel, "current mask"], timeout=120_000)
        # the race: five columns with numbers
        page.locator("#race-go").click()
        page.wait_for_function("() => [0,1,2,3,4].every(j => /PSNR/.test(document.querySelector('#race-md-' + j)"
                               "?.innerText || ''))", timeout=180_000)
        for j in range(5):
            text = page.locator(f"#race-md-{j}").inner_text()
            assert re.search(r"MACs \d+\.\d %", text) and re.search(r"time \d+\.\d{3} s", text), text
        page.screenshot(path=str(ART / "gradio-explorer.png"), full_page=True)
        # export: the grid as PNG, then the HTML report
        page.locator("#export-figs").click()
        link = page.locator('#export-files a[download$="-grid.png"]')
        link.first.wait_for(timeout=120_000)
        with page.expect_download(timeout=60_000) as dl:
            link.first.click()
        assert Path(dl.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        page.locator("#export-report").click()
        link = page.locator('#export-files a[download$="-report.html"]')
        link.first.wait_for(timeout=120_000)
        with page.expect_download(timeout=60_000) as dl:
            link.first.click()
        html = Path(dl.value.path()).read_text()
        assert "Race at" in html and json.dumps("tiny-unet")[1:-1] in html
    finally:
        proc.terminate()
        proc.wait(timeout=20)
