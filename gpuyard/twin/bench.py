"""`gpuyard twin bench`: a workload suite. Loaded scenarios, each replayed through
fifo, plain gangs, gpuyard and a textbook EASY-backfill reference (gpuyard.twin.easy),
with bounds no scheduler can beat, as JSON.

Scenarios (`--size small` shrinks each so the suite runs in a test):

- `synth-light`, `synth-heavy`, `synth-large`: the synthetic mix (gpuyard.twin.synth:
  huge high-priority gangs, sweeps, research jobs) at two loads and a larger cluster;
- `frontier`: the case of issue 17 (`twin synth --nodes 32 --days 1 --jobs 200
  --seed 1` on nodes:32), a whole-cluster gang behind a high-priority one;
- `teams`: the synthetic mix with five teams owning two thirds of the nodes (the
  two largest may borrow, weights 3, 2, 1, 1, 1), as `gpuyard twin --teams` runs it;
- `openb`: the Alibaba openb default pod list on the first nodes of its node list,
  small enough to queue, when `--openb DIR` names the trace folder.

Metrics per policy: GPU allocation while demand waits (the mean share of GPUs
allocated at the sampled instants where some job had arrived and not started),
wait p50/p99 overall and by job size, the largest gang's wait (until the end if it
never started), job completion time (end - submit) p50 and mean, makespan,
fragmentation, goodput lost to preemption and failures (and of it to preemption, whose
victims are those that lose the least work since their last checkpoint), and each
team's share of the GPU-seconds run. (Allocation counts partly bound gangs, which hold GPUs without
running: fifo's deadlocks look busy; `gpus_running_while_waiting` does not count
them. A gang that needs more than is free waits while the cluster cannot be full, so
the synthetic mix's days-long huge gangs keep every policy well below the bound.)
`checks` compares gpuyard with the others as issue 17 asks; they are measured, not
promised. Bounds per scenario: makespan at least the later of the longest
job's end (submit + duration) and the first submit plus demand over capacity; waits
at least 0; completion times at least the jobs' durations. Allocation while work
waits is bounded per policy and instant (`gpu_allocation_bound_while_waiting`): what
was allocated plus what the waiting work could have taken then without preempting
(Engine's `room`: each waiting job whose pending pods fit the free capacity, at most
the free GPUs). A whole-cluster gang waiting behind a high-priority job cannot use
the idle nodes, so the bound is not 1 there; a hold that idles nodes that waiting
work fits on shows as allocation below it. The largest gang of a policy that never
started it (a fifo deadlock) waited forever, whatever `wait_s` (until the run's end)
says.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpuyard.cluster.shapes import NodeShape, default_shapes, expand, load_shapes
from gpuyard.teams.assign import TeamSpec
from gpuyard.twin.capacity import load_teams
from gpuyard.twin.easy import run_easy
from gpuyard.twin.engine import Engine, Result, never_fitting
from gpuyard.twin.report import _dist, _pct, metrics, wait_or_end
from gpuyard.twin.synth import synth
from gpuyard.twin.traces import TraceJob, load_trace

POLICIES = ("fifo", "gangs", "gpuyard", "easy")


@dataclass
class Scenario:
    name: str
    what: str
    make: Callable[[], tuple[list[NodeShape], list[TraceJob], list[TeamSpec] | None]]


def teams_yaml(n: int) -> str:
    """Five teams owning two thirds of n nodes; the two largest may borrow; weights 3,
    2, 1, 1, 1 divide the shared third."""
    teams = (
        ("language", 4 * n // 15, True, 3),
        ("vision", 2 * n // 15, True, 2),
        ("multimodal", 2 * n // 15, False, 1),
        ("rl", n // 15, False, 1),
        ("safety", n // 15, False, 1),
    )
    return "---\n".join(
        "apiVersion: gpuyard.io/v1alpha1\nkind: Team\n"
        f"metadata: {{name: {name}}}\n"
        f"spec: {{capacity: {{gpu: {max(1, count)}}}, borrow: {str(borrow).lower()}, "
        f"weight: {weight}}}\n"
        for name, count, borrow, weight in teams
    )


def _teams(n: int) -> list[TeamSpec]:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "teams.yaml"
        p.write_text(teams_yaml(n))
        return load_teams(p)


def scenarios(size: str, seed: int, openb: Path | None = None) -> list[Scenario]:
    small = size == "small"

    def synthetic(nodes: int, days: float, jobs: int) -> Callable[..., Any]:
        return lambda: (expand(default_shapes(nodes)), synth(nodes, days, jobs, seed), None)

    out = [
        Scenario(
            "synth-light",
            "synthetic mix, about the cluster's capacity",
            synthetic(16, 1, 120) if small else synthetic(64, 2, 1200),
        ),
        Scenario(
            "synth-heavy",
            "synthetic mix, several times the cluster's capacity",
            synthetic(16, 1, 300) if small else synthetic(64, 2, 4000),
        ),
        Scenario(
            "frontier",
            "issue 17's case: a whole-cluster gang behind a high-priority one",
            lambda: (expand(default_shapes(32)), synth(32, 1, 200, 1), None),
        ),
        Scenario(
            "teams",
            "synthetic mix, five teams owning two thirds of the nodes",
            (lambda: (expand(default_shapes(30)), synth(30, 1, 200, seed), _teams(30)))
            if small
            else (lambda: (expand(default_shapes(60)), synth(60, 2, 1500, seed), _teams(60))),
        ),
    ]
    if not small:
        out.insert(
            2,
            Scenario(
                "synth-large",
                "synthetic mix on a larger cluster",
                synthetic(200, 3, 5000),
            ),
        )
    if openb is not None:
        nodes_csv = openb / "openb_node_list_gpu_node.csv"
        pods_csv = openb / "openb_pod_list_default.csv"
        count = 8 if small else 30
        tasks = 400 if small else 3000

        def make_openb() -> tuple[list[NodeShape], list[TraceJob], None]:
            every = expand(load_shapes(f"openb:{nodes_csv}"))
            shapes = every[:: max(1, len(every) // count)][:count]  # spread over models
            jobs = sorted(load_trace(f"openb:{pods_csv}").jobs, key=lambda j: j.submit)
            return shapes, jobs[:tasks], None

        out.append(
            Scenario(
                "openb",
                f"openb default pod list ({tasks} tasks) on {count} of its GPU nodes",
                make_openb,
            )
        )
    return out


def _alloc_while_waiting(res: Result) -> tuple[float | None, float | None, float | None]:
    """The mean share of GPUs allocated, and running (partly bound gangs do not run),
    at the sampled instants where some job had arrived and not started; and the mean
    of its bound at those instants: what was allocated plus what the waiting work
    could have taken then (`Result.room`), as a share of the GPUs."""
    spans = sorted(
        (r.job.submit, r.first_start if r.first_start is not None else float("inf"))
        for r in res.jobs
    )
    room = res.room
    got = []
    for i, (t, allocated, running, _) in enumerate(res.samples):
        if any(s <= t < f for s, f in spans):
            extra = room[i] if room is not None else res.total_gpus
            bound = min(1.0, (allocated + extra) / res.total_gpus)
            got.append((allocated / res.total_gpus, running / res.total_gpus, bound))
    if not got:
        return None, None, None
    return (
        round(sum(a for a, _, _ in got) / len(got), 4),
        round(sum(r for _, r, _ in got) / len(got), 4),
        round(sum(b for _, _, b in got) / len(got), 4),
    )


def policy_metrics(res: Result) -> dict[str, Any]:
    m = metrics(res)
    runs = res.jobs
    allocated, running, bound = _alloc_while_waiting(res)
    gangs = [r for r in runs if r.job.replicas > 1]
    largest = max(gangs, key=lambda r: (r.gpus, -r.job.submit), default=None)
    jct = [r.end - r.job.submit for r in runs if r.end is not None]
    return {
        "finished": m["finished"],
        "never_started": m["never_started"],
        "gpu_allocation_while_waiting": allocated,
        "gpus_running_while_waiting": running,
        "gpu_allocation_bound_while_waiting": bound,
        "mean_gpu_allocation": m["mean_gpu_allocation"],
        "wait_s": m["wait_s"],
        "wait_s_by_size": m["wait_s_by_size"],
        "largest_gang": None
        if largest is None
        else {
            "job": largest.job.name,
            "gpus": largest.gpus,
            "wait_s": round(wait_or_end(largest, res.end_time), 3),
            # False: it never started (fifo's partly bound gangs deadlock), and wait_s
            # is only until the run ended: it would have waited forever
            "started": largest.first_start is not None,
        },
        "jct_s": {
            "p50": _pct(jct, 0.5),
            "mean": round(sum(jct) / len(jct), 3) if jct else None,
        },
        "makespan_s": round(max((r.end for r in runs if r.end is not None), default=0.0), 3),
        "mean_fragmentation": m["mean_fragmentation"],
        "goodput_lost_gpu_hours": m["goodput_lost_gpu_hours"],
        "preemption_lost_gpu_hours": m["preemption_lost_gpu_hours"],
        "preemptions": m["preemptions"],
        "team_share": m["team_share"],
        **({"team_fair_share": m["team_fair_share"]} if "team_fair_share" in m else {}),
    }


def bounds(shapes: list[NodeShape], jobs: list[TraceJob]) -> dict[str, Any]:
    total = sum(s.gpus for s in shapes) or 1
    demand = sum(j.gpus * j.replicas * j.duration for j in jobs)
    first = min((j.submit for j in jobs), default=0.0)
    return {
        "demand_over_capacity_s": round(demand / total, 3),
        "makespan_s": round(
            max(max((j.submit + j.duration for j in jobs), default=0.0), first + demand / total),
            3,
        ),
        "wait_s": 0.0,
        "jct_s_p50": _dist([j.duration for j in jobs])["p50"],
        "gpu_allocation": 1.0,
    }


def run_scenario(
    sc: Scenario,
    policies: tuple[str, ...] = POLICIES,
    done: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """One scenario through every policy; `done(policy)` after each (progress)."""
    shapes, jobs, teams = sc.make()
    unfit = {id(j) for j, _ in never_fitting(shapes, jobs)}
    jobs = [j for j in jobs if id(j) not in unfit]
    doc: dict[str, Any] = {
        "what": sc.what,
        "nodes": len(shapes),
        "gpus": sum(s.gpus for s in shapes),
        "jobs": len(jobs),
        "never_fitting_skipped": len(unfit),
        "bounds": bounds(shapes, jobs),
        "policies": {},
    }
    for pol in policies:
        t0 = time.perf_counter()
        if pol == "easy":
            if teams is not None:
                if done is not None:
                    done(pol)
                continue  # the reference knows nothing of team capacity
            res = run_easy(shapes, jobs)
        else:
            res = Engine(shapes, jobs, pol, teams=teams, room=True).run()
        pm = policy_metrics(res)
        pm["wall_s"] = round(time.perf_counter() - t0, 3)
        doc["policies"][pol] = pm
        if done is not None:
            done(pol)
    ps = doc["policies"]
    if "gpuyard" in ps and "gangs" in ps:
        ours, gangs = ps["gpuyard"], ps["gangs"]
        aw, gw = ours["gpu_allocation_while_waiting"], gangs["gpu_allocation_while_waiting"]
        checks: dict[str, bool | None] = {
            # None: no job ever waited under that policy
            "allocation_while_waiting_at_least_gangs": None
            if aw is None or gw is None
            else aw >= gw,
            "allocation_while_waiting_within_10pct_of_bound": None
            if aw is None
            else aw >= 0.9 * ours["gpu_allocation_bound_while_waiting"],
            "median_wait_at_most_gangs": (ours["wait_s"]["p50"] or 0)
            <= (gangs["wait_s"]["p50"] or 0),
        }
        if "fifo" in ps and ours["largest_gang"] and ps["fifo"]["largest_gang"]:

            def waited(lg: dict[str, Any]) -> float:
                return lg["wait_s"] if lg["started"] else math.inf  # forever

            checks["largest_gang_wait_at_most_fifo"] = waited(ours["largest_gang"]) <= waited(
                ps["fifo"]["largest_gang"]
            )
        doc["checks"] = checks
    return doc


def bench(
    size: str = "default",
    seed: int = 1,
    only: list[str] | None = None,
    openb: Path | None = None,
    progress: Callable[[int, str], None] | None = None,
) -> dict[str, Any]:
    """Every scenario (or those in `only`) through every policy. `progress(steps,
    note)`: called with (all steps, "") before the first, then (1, "scenario policy")
    after each."""
    scs = scenarios(size, seed, openb)
    if only:
        known = {s.name for s in scs}
        bad = [n for n in only if n not in known]
        if bad:
            raise ValueError(f"unknown scenario {bad[0]!r}; known: {', '.join(sorted(known))}")
        scs = [s for s in scs if s.name in only]
    if progress is not None:
        progress(len(scs) * len(POLICIES), "")

    def done(scenario: str) -> Callable[[str], None] | None:
        if progress is None:
            return None
        report = progress
        return lambda policy: report(1, f"{scenario} {policy}")

    return {
        "size": size,
        "seed": seed,
        "policies": list(POLICIES),
        "scenarios": {s.name: run_scenario(s, done=done(s.name)) for s in scs},
    }
