"""report.html of a twin run, written for a capacity planner: what went in (cluster,
trace, flags, policy, when), the answer in one paragraph, tables in hours with readable
names (policies side by side), and the charts (a panel with no data is left out, with
the reason said), interactive: hover for values, show or hide a series, drag to zoom."""

from __future__ import annotations

import bisect
import html
import json
from importlib import resources
from typing import Any

from gpuyard.twin.engine import Result
from gpuyard.twin.svg import chart_svg

# metric key -> (readable name, kind); kind picks the unit it is shown in
ROWS: list[tuple[str, str, str]] = [
    ("jobs", "Jobs in the trace", "count"),
    ("finished", "Jobs finished", "count"),
    ("never_started", "Jobs that never started", "count"),
    ("running_at_end", "Jobs still running at the end", "count"),
    ("large_gangs", "Large gangs (64+ GPUs)", "count"),
    ("large_gangs_never_started", "Large gangs that never started", "count"),
    ("large_gang_max_wait_s", "Longest wait of a large gang", "duration"),
    ("deadlocked_gangs", "Deadlocked gangs (partly bound at the end)", "count"),
    ("partial_gang_gpu_hours", "GPU-hours held by partly bound gangs", "gpuh"),
    ("goodput_lost_gpu_hours", "Goodput lost to restarts and preemptions", "gpuh"),
    ("preemption_lost_gpu_hours", "...of it lost to preemptions", "gpuh"),
    ("demand_gpu_hours", "GPU-hours asked for", "gpuh"),
    ("mean_gpu_allocation", "GPUs allocated (mean)", "share"),
    ("busy_while_waiting", "GPUs allocated while work waits", "share"),
    ("mean_fragmentation", "Free GPUs on partly used nodes (mean)", "share"),
    ("restarts", "Gang restarts", "count"),
    ("preemptions", "Preemptions", "count"),
    ("node_failures", "Node failures", "count"),
    ("xid_faults", "Xid faults", "count"),
    ("virtual_days", "Virtual time simulated", "days"),
]

POLICY_NAMES = {
    "gpuyard": "gpuyard (gangs + reservations + preemption)",
    "gangs": "gangs (all-or-nothing, no reservations)",
    "fifo": "fifo (pod by pod)",
}


def duration(seconds: float | None) -> str:
    """A wait in the unit that reads best: s under a minute, min under an hour, else h."""
    if seconds is None:
        return "–"
    if seconds == 0:
        return "0 s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def value(kind: str, v: Any) -> str:
    if v is None:
        return "–"
    if kind == "duration":
        return duration(float(v))
    if kind == "share":
        return f"{100 * float(v):.1f}%"
    if kind == "gpuh":
        return f"{float(v):,.1f} GPU-h"
    if kind == "days":
        return f"{float(v):.2f} days"
    return f"{v:,}" if isinstance(v, int) else html.escape(str(v))


def busy_while_waiting(res: Result) -> float | None:
    """Mean share of GPUs allocated over the virtual time during which some job waited
    to start (time-weighted between samples); None when nothing ever waited."""
    submits = sorted(r.job.submit for r in res.jobs)
    starts = sorted(r.first_start for r in res.jobs if r.first_start is not None)
    s = res.samples
    if not s or not res.total_gpus:
        return None
    num = den = 0.0
    for i, (t, alloc, _run, _frag) in enumerate(s):
        dt = (s[i + 1][0] if i + 1 < len(s) else res.end_time) - t
        waiting = bisect.bisect_right(submits, t) - bisect.bisect_right(starts, t)
        if waiting > 0 and dt > 0:
            num += dt * alloc / res.total_gpus
            den += dt
    return round(num / den, 4) if den else None


def headline(m: dict[str, Any]) -> str:
    pol = m["policy"]
    how = {"gpuyard": "With reservations", "gangs": "With all-or-nothing gangs"}.get(
        pol, "Pod by pod"
    )
    if m["large_gangs"]:
        never = m["large_gangs_never_started"]
        large = f"large gangs (64+ GPUs) wait at most {duration(m['large_gang_max_wait_s'])}"
        if never:
            large += f" ({never} of {m['large_gangs']} never started)"
    else:
        large = "there are no large gangs (64+ GPUs) in the trace"
    busy = m.get("busy_while_waiting")
    busy_s = (
        f"GPUs are {100 * busy:.0f}% allocated while work waits"
        if busy is not None
        else "no job ever waited to start"
    )
    text = (
        f"{how} ({pol}), {large}; median wait {duration(m['wait_s']['p50'])}, "
        f"p99 {duration(m['wait_s']['p99'])}; {busy_s}. "
        f"{m['finished']:,} of {m['jobs']:,} jobs finished"
    )
    if m["deadlocked_gangs"]:
        text += f"; {m['deadlocked_gangs']} gangs ended deadlocked, partly bound"
    return text + "."


def no_wait(d: dict[str, Any]) -> str:
    """The share of jobs that started as soon as they were submitted: '75% (3 of 4)'."""
    n, zero = d.get("n") or 0, d.get("no_wait")
    if not n or zero is None:
        return "–"
    return f"{100 * zero / n:.0f}% ({zero:,} of {n:,})"


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{c}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{b}</table>"


def _dist_rows(ms: list[dict[str, Any]], key: str, groups: list[str]) -> list[list[str]]:
    rows = []
    for g in groups:
        row = [html.escape(g)]
        for m in ms:
            d = m[key].get(g)
            row.append(
                "–"
                if not d
                else f"{duration(d['p50'])} / {duration(d['p90'])} / {duration(d['max'])}"
                f" <small>(n={d['n']:,}, {d.get('no_wait', 0):,} at once)</small>"
            )
        rows.append(row)
    return rows


CHARTS_JS = resources.files("gpuyard.twin") / "static" / "charts.js"
CHART_CSS = (
    ".chart{position:relative;max-width:680px;display:inline-block;vertical-align:top;"
    "margin:0 1em 1em 0}.chart h3{font-size:1em;margin:.2em 0}.chart svg{width:100%;"
    "user-select:none;cursor:crosshair}.legend button{font:inherit;font-size:.8em;margin:0 "
    ".3em .3em 0;border:1px solid #ccc;background:#fff;border-radius:3px;cursor:pointer}"
    ".legend button[aria-pressed=false]{opacity:.4;text-decoration:line-through}"
    ".legend i{display:inline-block;width:.8em;height:.8em;margin-right:.3em}"
    ".legend.static span{font-size:.8em;margin-right:.6em}"
    ".axes line{stroke:#444}.axes line.grid{stroke:#eee}.axes text{font-size:11px;fill:#333}"
    ".brush{fill:#37c;opacity:.15}.tip{position:absolute;background:#222;color:#fff;"
    "font-size:.8em;padding:2px 6px;border-radius:3px;pointer-events:none;white-space:nowrap}"
)


def _chart(i: str, spec: dict[str, Any]) -> str:
    # the data beside its chart; "<" escaped so that no text in it can end the script.
    # The chart is drawn here too, as static SVG (without JavaScript, printed, in a
    # mail client), which the script replaces with its interactive drawing.
    data = json.dumps(spec, separators=(",", ":")).replace("<", "\\u003c")
    return (
        f"<div class='chart' data-chart='chart-{i}'><h3>{html.escape(spec['title'])}</h3>"
        f"{chart_svg(spec, i)}</div>"
        f"<script type='application/json' id='chart-{i}'>{data}</script>"
    )


def charts_html(figs: list[tuple[str, list[dict[str, Any]]]]) -> str:
    """Each figure's title and its charts (static SVG), then the script that draws
    them interactive (inlined: the report needs no network)."""
    if not figs:
        return ""
    parts = []
    for n, (title, specs) in enumerate(figs):
        parts.append(f"<h2>{html.escape(title)}</h2><div class='figure'>")
        parts += [_chart(f"{n}-{k}", spec) for k, spec in enumerate(specs)]
        parts.append("</div>")
    return "".join(parts) + f"<script>{CHARTS_JS.read_text()}</script>"


def render(
    ms: list[dict[str, Any]],
    figs: list[tuple[str, list[dict[str, Any]]]],
    omitted: list[str],
    inputs: dict[str, str],
    counts: dict[str, int] | None,
    notes: list[str],
) -> str:
    pols = [html.escape(POLICY_NAMES.get(m["policy"], m["policy"])) for m in ms]
    summary = _table(["Input", ""], [[html.escape(k), html.escape(v)] for k, v in inputs.items()])
    answer = "".join(f"<p class='headline'>{html.escape(headline(m))}</p>" for m in ms)
    main = _table(
        [""] + pols,
        [[name] + [value(kind, m.get(key)) for m in ms] for key, name, kind in ROWS],
    )
    waits = _table(
        ["Queueing delay"] + pols,
        [["started at once (no wait)"] + [no_wait(m["wait_s"]) for m in ms]]
        + [
            [label] + [duration(m["wait_s"][q]) for m in ms]
            for q, label in (("p50", "median"), ("p90", "90th percentile"),
                             ("p99", "99th percentile"), ("max", "longest"))
        ],
    )  # fmt: skip
    from gpuyard.twin.report import SIZE_ORDER

    sizes = [s for s in SIZE_ORDER if any(s in m["wait_s_by_size"] for m in ms)]
    teams = sorted({t for m in ms for t in m["wait_s_by_team"]})
    by_size = _table(
        ["Job size (median / p90 / longest wait)"] + pols, _dist_rows(ms, "wait_s_by_size", sizes)
    )
    by_team = _table(
        ["Team (median / p90 / longest wait)"] + pols, _dist_rows(ms, "wait_s_by_team", teams)
    )
    share_rows = []
    for t in sorted({t for m in ms for t in m["team_share"]}):
        row = [html.escape(t)]
        for m in ms:
            cell = f"{100 * m['team_share'].get(t, 0.0):.1f}%"
            fair = m.get("team_fair_share", {}).get(t)
            if fair is not None:
                cell += f" <small>(entitled {100 * fair:.1f}%)</small>"
            row.append(cell)
        share_rows.append(row)
    shares = _table(["Team share of GPU-hours run"] + pols, share_rows) if share_rows else ""
    trace = ""
    if "trace_wait_s" in ms[-1]:
        trace = "<h2>Twin vs trace queueing delay (same tasks)</h2>" + _table(
            ["", "trace"] + pols,
            [
                [label, duration(ms[-1]["trace_wait_s"][q])]
                + [duration(m["twin_wait_s_same_tasks"][q]) for m in ms]
                for q, label in (("p50", "median"), ("p90", "90th percentile"),
                                 ("p99", "99th percentile"), ("max", "longest"))
            ],
        )  # fmt: skip
    cnt = (
        "<h2>Trace counts</h2>"
        + _table(["", "tasks"], [[html.escape(k), f"{v:,}"] for k, v in counts.items()])
        if counts
        else ""
    )
    imgs = charts_html(figs)
    left = (
        "<h2>Charts left out</h2><ul>"
        + "".join(f"<li class='omitted'>{html.escape(o)}</li>" for o in omitted)
        + "</ul>"
        if omitted
        else ""
    )
    li = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>gpuyard twin report</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:80em}"
        "td,th{padding:2px 10px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "table{border-collapse:collapse;margin:1em 0}tr:nth-child(even){background:#f4f4f4}"
        ".headline{font-size:1.2em;background:#eef5ff;padding:.6em;border-left:4px solid #37c}"
        f"{CHART_CSS}</style></head><body><h1>gpuyard twin report</h1>"
        f"<h2>Inputs</h2>{summary}<h2>Answer</h2>{answer}"
        f"<h2>Results</h2>{main}{waits}{by_size}{by_team}{shares}{trace}{cnt}{imgs}{left}"
        f"<h2>Model</h2><ul>{li}</ul></body></html>"
    )
