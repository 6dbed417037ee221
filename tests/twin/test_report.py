"""The twin report as a capacity planner reads it: inputs, the answer in words, waits in
hours (or the unit that reads best), readable names, and no empty chart."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

from gpuyard.cli import main
from gpuyard.twin.report import cdf_points
from gpuyard.twin.report_html import duration

HEAD = "submit_time,team,priority,replicas,gpus_per_replica,duration,checkpoint_interval,name\n"


def _run(tmp_path: Path, rows: str, *extra: str) -> tuple[str, dict, str]:
    trace = tmp_path / "jobs.csv"
    trace.write_text(HEAD + rows)
    out = tmp_path / "out"
    rc = main(["twin", "--cluster", "nodes:10", "--trace", str(trace), "--out", str(out),
               "--quiet", *extra])  # fmt: skip
    assert rc == 0
    return (
        (out / "report.html").read_text(),
        json.loads((out / "metrics.json").read_text()),
        str(trace),
    )


def charts(page: str) -> list[tuple[str, list[dict[str, Any]]]]:
    """(figure title, its charts' data) as the page holds them, in order."""
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for title, body in re.findall(
        r"<h2>([^<]*)</h2><div class='figure'>(.*?)</div>(?=<h2>|<script>)", page
    ):
        specs = re.findall(r"<script type='application/json' id='chart-[^']+'>(.*?)</script>", body)
        out.append((title, [json.loads(x) for x in specs]))
    return out


def static_charts(page: str) -> list[tuple[str, str]]:
    """(legend, svg) of each chart's static drawing, in order."""
    return re.findall(
        r"<div class='chart' data-chart='chart-[^']+'><h3>[^<]*</h3>"
        r"<div class='legend static'>(.*?)</div>(<svg class=\"static\".*?</svg>)</div>",
        page,
    )


def _by_figure(page: str, drawn: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    counts = [
        len(re.findall(r"data-chart='chart-", body))
        for body in re.findall(r"<div class='figure'>(.*?)</div>(?=<h2>|<script>)", page)
    ]
    out, i = [], 0
    for n in counts:
        out.append(drawn[i : i + n])
        i += n
    return out


def assert_drawn_statically(page: str, figs: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Each chart is drawn in the page itself too, as static SVG (read without
    JavaScript, or printed): a line per series, a bar per value, a legend naming each
    series, every point on the drawing."""
    drawn = static_charts(page)
    assert len(drawn) == sum(len(specs) for _, specs in figs)
    for (_, specs), svgs in zip(figs, _by_figure(page, drawn), strict=True):
        for spec, (legend, svg) in zip(specs, svgs, strict=True):
            names = [s["name"] for s in spec["series"]]
            assert re.findall(r"</i>([^<]*)</span>", legend) == [html.escape(n) for n in names]
            assert f'aria-label="{html.escape(spec["title"])}"' in svg
            if spec["kind"] == "bar":
                bars = re.findall(r"<rect x[^>]*height=\"([\d.]+)\"[^>]*>", svg)
                assert len(bars) == sum(len(s["values"]) for s in spec["series"])
                assert any(float(h) > 0 for h in bars), spec["title"]
            else:
                paths = re.findall(r'<path d="([^"]+)"', svg)
                assert len(paths) == len(names), spec["title"]
                # every point inside the plot: no NaN, nothing off the drawing
                for d in paths:
                    nums = [float(v) for v in re.findall(r"-?[\d.]+", d)]
                    assert nums and all(0 <= v <= 640 for v in nums), (spec["title"], d[:80])
            assert not re.search(r'="[^"]*(?:nan|inf)', svg, re.I), spec["title"]


def test_report_summary_answer_units_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 10 nodes x 8 GPUs. A 4 h job on 4 nodes, then a 64-GPU gang (8 x 8) that must wait
    # for it: 4 h; single-GPU jobs meanwhile start at once (zero wait).
    rows = "0,a,100,4,8,14400,0,big-a\n60,b,100,8,8,3600,0,gang64\n"
    rows += "".join(f"120,c,100,1,1,600,0,s{i}\n" for i in range(6))
    page, m, trace = _run(tmp_path, rows, "--compare")
    doc = m["compare"]
    gw = doc["gpuyard"]["large_gang_max_wait_s"]
    assert 4 * 3600 - 120 <= gw <= 4 * 3600
    # inputs: cluster, trace, policy, flags, when
    inputs = page.split("<h2>Inputs</h2>")[1].split("<h2>Answer</h2>")[0]
    assert "nodes:10: 10 nodes, 80 GPUs" in inputs and f"{trace}: 8 jobs" in inputs
    assert "fifo, gangs, gpuyard (--compare)" in inputs and "--seed 0" in inputs
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", inputs)
    # the answer in words, in hours
    answer = page.split("<h2>Answer</h2>")[1].split("<h2>Results</h2>")[0]
    assert (
        f"With reservations (gpuyard), large gangs (64+ GPUs) wait at most {gw / 3600:.1f} h"
        in answer
    )
    assert "median wait 0 s" in answer and "allocated while work waits" in answer
    assert "wait at most 4.0 h" in capsys.readouterr().out  # the CLI prints the answer too
    # readable names, policies side by side, no metric identifiers
    results = page.split("<h2>Results</h2>")[1]
    assert "Longest wait of a large gang" in results and "Deadlocked gangs" in results
    for ident in ("large_gang_max_wait_s", "deadlocked_gangs", "mean_gpu_allocation", "wait_s"):
        assert ident not in page
    assert (
        results.index("fifo (pod by pod)")
        < results.index("gangs (all-or-nothing")
        < results.index("gpuyard (gangs + reservations")
    )
    assert f"<td>{gw / 3600:.1f} h</td>" in results
    # zero waits are said, not only drawn: 7 of the 8 started at once (all but gang64)
    waits = results.split("<th>Queueing delay</th>")[1].split("</table>")[0]
    row = waits.split("<td>started at once (no wait)</td>")[1].split("</tr>")[0]
    assert row.endswith("<td>88% (7 of 8)</td>"), row  # the gpuyard column, last
    assert "n=6, 6 at once" in results  # the single-GPU jobs, by size
    figs = charts(page)
    assert any(spec["kind"] == "bar" for _, specs in figs for spec in specs)
    assert_drawn_statically(page, figs)
    # no raw JSON blocks shown (the charts' data sits in scripts, which are not shown)
    shown = re.sub(r"<script.*?</script>", "", results.split("<h2>Model</h2>")[0], flags=re.S)
    assert "{" not in shown


def test_no_empty_panel_and_omissions_are_said(tmp_path: Path) -> None:
    # no failures and no preemption: nothing lost -> the goodput chart is left out, said why
    page, _, _ = _run(
        tmp_path, "0,a,100,2,8,3600,0,g1\n0,a,100,2,8,3600,0,g2\n0,b,100,1,8,60,0,j\n"
    )
    figs = charts(page)
    titles = [t for t, _ in figs]
    assert "Queueing-delay CDF by team" in titles and "Queueing-delay CDF by job size" in titles
    left = page.split("<h2>Charts left out</h2>")[1]
    assert "Goodput lost: no gang was restarted or preempted." in left
    assert "Longest gang wait: no gang waited." in left
    # every chart shown has data: each of its series has points (or a bar above 0)
    assert all(specs for _, specs in figs)
    for title, specs in figs:
        for spec in specs:
            assert spec["series"], title
            for s in spec["series"]:
                assert len(s.get("points") or []) >= 2 or any(s.get("values") or []), (title, s)
    assert_drawn_statically(page, figs)
    # the script that draws them interactive is in the page itself: nothing is fetched
    assert "window.gpuyardCharts" in page
    own = page.replace("http://www.w3.org/2000/svg", "")  # SVG's namespace: a name, not a fetch
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|https?://|fetch\(|import\(", own)


def test_cdf_shows_zero_waits_at_zero() -> None:
    pts = cdf_points([0.0, 0.0, 7200.0])
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    assert xs[:3] == [0.0, 0.0, 0.0] and ys[2] == pytest.approx(2 / 3, abs=1e-3)  # 2 of 3 at 0 h
    assert xs[-1] == 2.0 and ys[-1] == 1.0  # hours


def test_a_long_cdf_keeps_its_shape_in_few_points() -> None:
    waits = [0.0] * 3000 + [float(i) for i in range(1, 7001)]
    pts = cdf_points(waits)
    assert len(pts) <= 700
    # the step at 0 is exact (30% did not wait), and the line ends at the longest wait
    assert [0.0, 0.3] in pts and pts[-1] == [round(7000 / 3600, 4), 1.0]
    assert pts == sorted(pts)


@pytest.mark.parametrize(
    ("s", "text"), [(0, "0 s"), (45, "45 s"), (150, "2.5 min"), (5400, "1.5 h"), (None, "–")]
)
def test_duration_reads_in_the_best_unit(s: float | None, text: str) -> None:
    assert duration(s) == text
