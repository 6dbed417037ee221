"""The twin report's charts in a real browser (Debian's chromium, as the dashboard's
tests drive it), opened from disk with the network cut off: hovering a point shows its
values, a legend button hides and shows its series, dragging across zooms in."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from gpuyard.cli import main
from tests.dashboard import browser

REASON = browser.missing()
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")

HEAD = "submit_time,team,priority,replicas,gpus_per_replica,duration,checkpoint_interval,name\n"
CHART = "[data-chart='chart-0-0']"  # GPUs allocated and running over time

# where a point of a series is drawn, in the page's pixels: (x, y) or null
POINT_JS = """([name, i]) => {
  const c = window.gpuyardCharts[0], m = c.marks.filter((m) => m[2].name === name)[i];
  if (!m) return null;
  const r = c.svg.getBoundingClientRect(), k = r.width / 640;
  return [r.left + m[0] * k, r.top + m[1] * k];
}"""


def _report(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    trace = tmp_path / "jobs.csv"
    # 10 nodes x 8 GPUs: a 4 h job on 4 nodes, a 64-GPU gang that waits for it
    trace.write_text(HEAD + "0,a,100,4,8,14400,0,big-a\n60,b,100,8,8,3600,0,gang64\n")
    out = tmp_path / "out"
    rc = main(["twin", "--cluster", "nodes:10", "--trace", str(trace), "--out", str(out),
               "--compare", "--quiet"])  # fmt: skip
    assert rc == 0
    page = (out / "report.html").read_text()
    spec = re.search(r"<script type='application/json' id='chart-0-0'>(.*?)</script>", page)
    assert spec is not None
    return out / "report.html", json.loads(spec.group(1))


def test_chart_hover_toggle_and_zoom(tmp_path: Path) -> None:
    path, spec = _report(tmp_path)
    names = [s["name"] for s in spec["series"]]
    assert "gpuyard allocated" in names and "fifo running" in names
    with browser.browser_page(1000, 900) as page:
        fetched: list[str] = []
        page.route("**/*", lambda r: (fetched.append(r.request.url), r.continue_()))
        page.context.set_offline(True)  # a report read on a plane
        page.goto(path.as_uri())
        page.wait_for_function("window.gpuyardCharts && window.gpuyardCharts.length > 0")
        page.locator(CHART).scroll_into_view_if_needed()
        # hover a point of "gpuyard allocated": the tip names it (and any series drawn
        # through the same spot) with its value, in %
        pts = next(s for s in spec["series"] if s["name"] == "gpuyard allocated")["points"]
        i = max(range(len(pts)), key=lambda k: pts[k][1])  # its highest point
        x, y = page.evaluate(POINT_JS, ["gpuyard allocated", i])
        page.mouse.move(x, y)
        tip = page.locator(f"{CHART} .tip")
        assert tip.is_visible()
        day, pct = pts[i]
        said, _, value = tip.inner_text().partition(": ")
        assert "gpuyard allocated" in said.split(", ")
        assert value == f"{pct:.1f}% at {day:.2f} days"
        # hide "gpuyard allocated": its line goes, its button says so, the others stay
        button = page.locator(f"{CHART} button.series", has_text="gpuyard allocated")
        button.click()
        assert button.get_attribute("aria-pressed") == "false"
        lines = f"{CHART} path[data-series]"
        drawn = [e.get_attribute("data-series") for e in page.query_selector_all(lines)]
        assert "gpuyard allocated" not in drawn and "gpuyard running" in drawn
        page.mouse.move(x, y)  # the hidden series is not hovered any more
        said = tip.inner_text().partition(": ")[0] if tip.is_visible() else ""
        assert "gpuyard allocated" not in said.split(", ")
        button.click()  # and back
        drawn = [e.get_attribute("data-series") for e in page.query_selector_all(lines)]
        assert len(drawn) == len(names)
        # drag across the first half of the plot: the x range narrows to it
        box = page.locator(f"{CHART} svg").bounding_box()
        assert box is not None
        y0 = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + box["width"] * 0.2, y0)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.5, y0, steps=4)
        page.mouse.up()
        zoomed = page.locator(CHART).get_attribute("data-zoomed") or ""
        lo, hi = (float(v) for v in zoomed.split(","))
        end = max(p[0] for s in spec["series"] for p in s["points"])
        assert 0 < lo < hi < end
        page.locator(f"{CHART} button.reset").click()
        assert page.locator(CHART).get_attribute("data-zoomed") == ""
        assert page.errors == []
        assert fetched == [path.as_uri()]  # the page alone: nothing else was asked for


def test_charts_show_without_javascript(tmp_path: Path) -> None:
    """Opened with JavaScript off (or in a mail client): every chart is still drawn,
    from the SVG written into the page, with its lines and legend on screen."""
    path, spec = _report(tmp_path)
    page_text = path.read_text()
    n_charts = len(re.findall(r"data-chart='chart-", page_text))
    with browser.browser_page(1000, 900, javascript=False) as page:
        page.context.set_offline(True)
        page.goto(path.as_uri())
        assert page.evaluate("typeof window.gpuyardCharts") == "undefined"  # no script ran
        svgs = page.locator("[data-chart] svg")
        assert svgs.count() == n_charts > 0
        for i in range(n_charts):
            box = svgs.nth(i).bounding_box()
            assert box is not None and box["width"] > 300 and box["height"] > 100
        lines = page.locator(f"{CHART} svg path")
        assert lines.count() == len(spec["series"])
        legend = page.locator(f"{CHART} .legend").inner_text()
        assert all(s["name"] in legend for s in spec["series"])
    # and with it on, the script's drawing takes their place (one drawing per chart)
    with browser.browser_page(1000, 900) as page:
        page.goto(path.as_uri())
        page.wait_for_function("window.gpuyardCharts && window.gpuyardCharts.length > 0")
        assert page.locator("[data-chart] svg").count() == n_charts
        assert page.locator("[data-chart] .static").count() == 0
        assert page.errors == []
