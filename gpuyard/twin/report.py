"""Outputs of a twin run: metrics.json, jobs.csv per job, and a self-contained
report.html (its charts drawn in the page from the data beside them: hover,
show or hide a series, zoom into a range; no network needed).

Metrics a reader checks first: jobs finished / never started, queueing delay
percentiles (overall, by team, by job size), each team's share of the GPU-hours run
(and, with --teams, what its weight entitles it to), the wait of large gangs (max, and how many
never started), "deadlocked gangs" (gangs that ended the run partly bound: they hold
GPUs and will never run), GPU-hours held by partly bound gangs, goodput lost to
restarts, mean fragmentation of free GPUs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from gpuyard.twin.engine import JobRun, Result

LARGE_GANG_GPUS = 64


SIZE_ORDER = ("1 GPU", "2-8 GPUs", "9-63 GPUs", "64+ GPUs")


def size_class(gpus: int) -> str:
    if gpus <= 1:
        return "1 GPU"
    if gpus <= 8:
        return "2-8 GPUs"
    if gpus < LARGE_GANG_GPUS:
        return "9-63 GPUs"
    return "64+ GPUs"


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    i = min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))
    return round(s[i], 3)


def _dist(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50": _pct(values, 0.5),
        "p90": _pct(values, 0.9),
        "p99": _pct(values, 0.99),
        "max": round(max(values), 3) if values else None,
        "no_wait": sum(1 for v in values if v <= 0),  # of waits: the jobs that started at once
    }


def wait_of(r: JobRun) -> float | None:
    return None if r.first_start is None else r.first_start - r.job.submit


def wait_or_end(r: JobRun, end: float) -> float:
    """How long it waited to start, or waited until the end of the run if it never did."""
    return (r.first_start if r.first_start is not None else end) - r.job.submit


def metrics(res: Result, counts: dict[str, int] | None = None) -> dict[str, Any]:
    runs = res.jobs
    waits = [w for r in runs if (w := wait_of(r)) is not None]
    by_team: dict[str, list[float]] = {}
    by_size: dict[str, list[float]] = {}
    for r in runs:
        w = wait_of(r)
        if w is None:
            continue
        by_team.setdefault(r.job.team, []).append(w)
        by_size.setdefault(size_class(r.gpus), []).append(w)
    large = [r for r in runs if r.gpus >= LARGE_GANG_GPUS and r.job.replicas > 1]
    large_wait = [wait_or_end(r, res.end_time) for r in large]
    deadlocked = [
        r for r in runs if r.job.replicas > 1 and not r.running and r.end is None and r.bound > 0
    ]
    never = [r for r in runs if r.first_start is None]
    trace_cmp = [
        (w, r.job.trace_wait)
        for r in runs
        if r.job.trace_wait is not None and (w := wait_of(r)) is not None
    ]
    held = [r.partial_gpu_s for r in runs]
    gpu_s = sum(r.gpus * r.job.duration for r in runs)
    m: dict[str, Any] = {
        "policy": res.policy,
        "jobs": len(runs),
        "finished": sum(1 for r in runs if r.end is not None),
        "never_started": len(never),
        "running_at_end": sum(1 for r in runs if r.running),
        "virtual_days": round(res.end_time / 86400, 3),
        "scheduling_passes": res.passes,
        "events": res.events,
        "wait_s": _dist(waits),
        "wait_s_by_team": {k: _dist(v) for k, v in sorted(by_team.items())},
        "wait_s_by_size": {k: _dist(v) for k, v in sorted(by_size.items())},
        "large_gangs": len(large),
        "large_gangs_never_started": sum(1 for r in large if r.first_start is None),
        "large_gang_max_wait_s": round(max(large_wait), 3) if large_wait else None,
        "deadlocked_gangs": len(deadlocked),
        "partial_gang_gpu_hours": round(sum(held) / 3600, 3),
        "restarts": sum(r.restarts for r in runs),
        "preemptions": sum(r.preemptions for r in runs),
        "goodput_lost_gpu_hours": round(sum(r.lost_gpu_s for r in runs) / 3600, 3),
        # ...of which the work since their last checkpoints of the jobs preempted
        "preemption_lost_gpu_hours": round(sum(r.preempted_lost_gpu_s for r in runs) / 3600, 3),
        "demand_gpu_hours": round(gpu_s / 3600, 3),
        "node_failures": res.node_failures,
        "xid_faults": res.xid_faults,
        "mean_fragmentation": round(sum(s[3] for s in res.samples) / len(res.samples), 4)
        if res.samples
        else 0.0,
        "mean_gpu_allocation": round(
            sum(s[1] for s in res.samples) / len(res.samples) / res.total_gpus, 4
        )
        if res.samples and res.total_gpus
        else 0.0,
    }
    if trace_cmp:
        m["trace_wait_s"] = _dist([t for _, t in trace_cmp])
        m["twin_wait_s_same_tasks"] = _dist([w for w, _ in trace_cmp])
    m["team_share"] = team_shares(res)
    if res.team_weights:
        total = sum(res.team_weights.values())
        m["team_fair_share"] = {t: round(w / total, 4) for t, w in sorted(res.team_weights.items())}
    if counts:
        m["trace_counts"] = dict(counts)
    if res.counts:
        m["capacity"] = dict(res.counts)
    return m


def team_shares(res: Result, until: float | None = None) -> dict[str, float]:
    """Each team's share of the GPU-seconds run (up to `until`, default the end)."""
    end = res.end_time if until is None else until
    by_team: dict[str, float] = {}
    for r in res.jobs:
        if r.first_start is not None and r.first_start < end:
            stop = min(r.end if r.end is not None else res.end_time, end)
            by_team[r.job.team] = by_team.get(r.job.team, 0.0) + (stop - r.first_start) * r.gpus
    total = sum(by_team.values()) or 1.0
    return {k: round(v / total, 4) for k, v in sorted(by_team.items())}


def write_jobs_csv(res: Result, path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            ["name", "team", "priority", "replicas", "gpus", "submit", "first_start", "end",
             "wait_s", "trace_wait_s", "restarts", "preemptions", "lost_gpu_s", "flags"]
        )  # fmt: skip
        for r in res.jobs:
            j = r.job
            wt = wait_of(r)
            w.writerow(
                [j.name, j.team, j.priority, j.replicas, r.gpus, round(j.submit, 3),
                 "" if r.first_start is None else round(r.first_start, 3),
                 "" if r.end is None else round(r.end, 3),
                 "" if wt is None else round(wt, 3),
                 "" if j.trace_wait is None else round(j.trace_wait, 3),
                 r.restarts, r.preemptions, round(r.lost_gpu_s, 1), "|".join(sorted(j.flags))]
            )  # fmt: skip


MAX_POINTS = 600  # of a CDF line: more than a chart's width in pixels shows nothing more


def cdf_points(values: list[float]) -> list[list[float]]:
    """Empirical CDF of waits (seconds) as [hours, share started] steps from (0, 0):
    zero waits sit at 0 h (the step at 0 is the share that did not wait), not moved to
    a made-up floor. Long lists keep every MAX_POINTS-th rank, the first and the last."""
    s = sorted(max(v, 0.0) / 3600 for v in values)
    n = len(s)
    pts = [[0.0, 0.0]] + [[round(v, 4), round((i + 1) / n, 4)] for i, v in enumerate(s)]
    if len(pts) > MAX_POINTS:
        step = len(pts) / MAX_POINTS
        keep = sorted({0, len(pts) - 1, *(int(i * step) for i in range(MAX_POINTS))})
        # the last point at each x: a run of equal waits is one vertical step
        keep += [i for i in range(len(pts) - 1) if pts[i][0] == 0 and pts[i + 1][0] > 0]
        pts = [pts[i] for i in sorted(set(keep))]
    return pts


def _line(
    title: str, x: dict[str, Any], y: dict[str, Any], series: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"kind": "line", "title": title, "x": x, "y": y, "series": series}


def figures(results: list[Result]) -> tuple[list[tuple[str, list[dict[str, Any]]]], list[str]]:
    """The charts, as data the report draws (title, one chart spec per panel; see
    gpuyard/twin/static/charts.js), and a line for each one left out for want of data."""
    out: list[tuple[str, list[dict[str, Any]]]] = []
    omitted: list[str] = []
    days = {"label": "virtual days", "format": "days"}
    if any(res.samples for res in results):
        series: list[dict[str, Any]] = []
        for res in results:
            tot = max(1, res.total_gpus)
            at = [round(s[0] / 86400, 5) for s in res.samples]
            series.append({"name": f"{res.policy} allocated", "step": True,
                           "points": [[t, round(100 * s[1] / tot, 2)] for t, s in zip(at, res.samples, strict=True)]})  # fmt: skip
            series.append({"name": f"{res.policy} running", "step": True, "dash": True,
                           "points": [[t, round(100 * s[2] / tot, 2)] for t, s in zip(at, res.samples, strict=True)]})  # fmt: skip
        out.append((
            "GPUs allocated and running over time (allocated includes partly bound gangs)",
            [_line("GPUs allocated and running", days,
                   {"label": "% of GPUs", "format": "pct", "min": 0, "max": 105}, series)],
        ))  # fmt: skip
    else:
        omitted.append("GPU allocation over time: the run took no samples (empty trace).")
    for key, title in ((lambda r: r.job.team, "team"), (lambda r: size_class(r.gpus), "job size")):
        if not any(wait_of(r) is not None for res in results for r in res.jobs):
            omitted.append(f"Queueing-delay CDF by {title}: no job started.")
            continue
        panels = []
        for res in results:
            groups: dict[str, list[float]] = {}
            for r in res.jobs:
                w = wait_of(r)
                if w is not None:
                    groups.setdefault(key(r), []).append(w)
            order = SIZE_ORDER if title == "job size" else sorted(groups)
            series = []
            for g in order:
                if g in groups:
                    v = groups[g]
                    zero = sum(1 for w in v if w <= 0)
                    series.append({"name": f"{g} (n={len(v):,}, {100 * zero / len(v):.0f}% no wait)",
                                   "step": True, "points": cdf_points(v)})  # fmt: skip
            if not series:
                omitted.append(f"Queueing-delay CDF by {title}, {res.policy}: no job started.")
                continue
            longest = max(max(v) for v in groups.values()) / 3600
            panels.append(_line(
                res.policy,
                # a little left of 0 so that a step at 0 (jobs that did not wait) is
                # not hidden under the axis
                {"label": "queueing delay (h)", "format": "hours", "scale": "symlog",
                 "linthresh": 0.1, "min": -0.02, "max": round(max(1.0, 1.5 * longest), 4)},
                {"label": "share of jobs started", "format": "share", "min": 0, "max": 1.02},
                series,
            ))  # fmt: skip
        out.append((f"Queueing-delay CDF by {title}", panels))
    names_ = [r.policy for r in results]
    bars: list[dict[str, Any]] = []
    gang_waits = []
    has_gangs = False
    for res in results:
        gw = [wait_or_end(r, res.end_time) for r in res.jobs if r.job.replicas > 1]
        has_gangs = has_gangs or bool(gw)
        gang_waits.append(round(max(gw) / 3600, 4) if gw else 0.0)
    if has_gangs and any(gang_waits):
        bars.append({"kind": "bar", "title": "Longest gang wait (unstarted gangs: until the end)",
                     "categories": names_, "x": {"label": "policy"},
                     "y": {"label": "longest gang wait (h)", "format": "hours"},
                     "series": [{"name": "longest gang wait", "values": gang_waits}]})  # fmt: skip
    else:
        omitted.append("Longest gang wait: " + ("no gang waited." if has_gangs
                                                  else "the trace has no gangs."))  # fmt: skip
    lost = [round(sum(r.lost_gpu_s for r in res.jobs) / 3600, 3) for res in results]
    if any(lost):
        bars.append({"kind": "bar", "title": "Goodput lost: work redone after restarts and preemptions",
                     "categories": names_, "x": {"label": "policy"},
                     "y": {"label": "goodput lost (GPU-h)", "format": "gpuh"},
                     "series": [{"name": "goodput lost", "values": lost}]})  # fmt: skip
    else:
        omitted.append("Goodput lost: no gang was restarted or preempted.")
    if any(s[3] for res in results for s in res.samples):
        bars.append(_line(
            "Fragmentation: free GPUs on partly used nodes", days,
            {"label": "fragmentation (%)", "format": "pct", "min": 0},
            [{"name": res.policy, "step": True,
              "points": [[round(s[0] / 86400, 5), round(100 * s[3], 2)] for s in res.samples]}
             for res in results],
        ))  # fmt: skip
    else:
        omitted.append("Fragmentation: free GPUs were never spread over partly used nodes.")
    if bars:
        out.append(("Gang wait, goodput lost, fragmentation", bars))
    return out, omitted


MODEL_NOTES = [
    "Time is virtual; the scheduling policy (gpuyard.scheduling.policy.schedule) runs "
    "unchanged, once per virtual instant at which something changed.",
    "A gang runs only when all its pods are bound; a partly bound gang holds its GPUs "
    "without doing work. A gang that loses a pod restarts from its last checkpoint.",
    "openb GPU sharing (num_gpu 1, gpu_milli < 1000) is modelled as one whole GPU "
    "(the scheduler allocates whole nvidia.com/gpu); such tasks are counted as gpu-shared.",
    "openb tasks with no scheduled_time start counting from creation_time; tasks with no "
    "deletion_time run until the end of the trace; both are counted, none dropped.",
    "gpu_spec constrains the node's GPU product label (first listed model).",
    "Goodput lost is the work since the last checkpoint of every gang stopped by a node "
    "failure, an Xid fault or a preemption, times its GPUs; the share lost to preemptions "
    "is shown apart. Each job's first pod says when it last checkpointed, as a trainer "
    "writing gpuyard.io/last-checkpoint does, so preemption takes the victims that lose "
    "the least work first (--victims plain: no pod says).",
    "Node failures: exponential with the given MTBF per node; a failed node returns after "
    "repair (not for Xid faults) plus preflight; preflight always passes.",
    "Priorities come from the trace. With --teams, nodes are carved by the team "
    "manager's own assignment and pods pass the team webhook's own mutation (team "
    "taints, affinity, borrowing by gpuyard-low work, reclaim by preemption); without "
    "it, teams are labels for the charts. With --balloons, a balloon holds every idle "
    "node and is evicted first.",
]


def write(
    outdir: Path,
    results: list[Result],
    counts: dict[str, int] | None = None,
    inputs: dict[str, str] | None = None,
) -> dict[str, Any]:
    from gpuyard.twin.report_html import busy_while_waiting, render

    outdir.mkdir(parents=True, exist_ok=True)
    ms = [metrics(r, counts) for r in results]
    for m, r in zip(ms, results, strict=True):
        m["busy_while_waiting"] = busy_while_waiting(r)
    doc: dict[str, Any] = ms[0] if len(ms) == 1 else {"compare": {m["policy"]: m for m in ms}}
    (outdir / "metrics.json").write_text(json.dumps(doc, indent=2))
    if len(results) == 1:
        write_jobs_csv(results[0], outdir / "jobs.csv")
    else:
        for r in results:
            write_jobs_csv(r, outdir / f"jobs-{r.policy}.csv")
        write_jobs_csv(results[-1], outdir / "jobs.csv")
    figs, omitted = figures(results)
    page = render(ms, figs, omitted, inputs or {}, counts, MODEL_NOTES)
    (outdir / "report.html").write_text(page)
    return doc
