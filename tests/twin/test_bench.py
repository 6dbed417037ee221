"""`gpuyard twin bench` and its EASY-backfill reference: the reference by hand, the
suite's JSON as a user runs it (small size), its bounds and the comparisons of issue
17 on the frontier case."""

from __future__ import annotations

import json
import subprocess
import sys

from gpuyard.cluster.shapes import default_shapes, expand
from gpuyard.twin.bench import Scenario, policy_metrics, run_scenario
from gpuyard.twin.easy import run_easy
from gpuyard.twin.engine import Engine
from gpuyard.twin.traces import TraceJob


def test_easy_backfills_only_what_does_not_delay_the_head() -> None:
    jobs = [
        TraceJob("a", 0, 100, gpus=8),
        TraceJob("b", 0, 50, gpus=8),
        TraceJob("c", 10, 30, replicas=2, gpus=8),  # the head from 10: shadow time 100
        TraceJob("d", 20, 5, gpus=4),  # ends by 100: backfills when b ends
        TraceJob("e", 20, 500, gpus=8),  # would delay c: waits for it
    ]
    res = {r.job.name: r for r in run_easy(expand(default_shapes(2)), jobs).jobs}
    assert (res["a"].first_start, res["b"].first_start) == (0, 0)
    assert res["d"].first_start == 50 and res["d"].end == 55
    assert res["c"].first_start == 100 and res["c"].end == 130
    assert res["e"].first_start == 130


def test_bench_prints_json_with_bounds_and_the_issue_comparisons() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gpuyard", "twin", "bench", "--size", "small", "--seed", "1"]
        + ["--scenario", "frontier", "--scenario", "teams"],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    doc = json.loads(out.stdout)
    assert set(doc["scenarios"]) == {"frontier", "teams"}
    front = doc["scenarios"]["frontier"]
    assert set(front["policies"]) == {"fifo", "gangs", "gpuyard", "easy"}
    # the reference knows nothing of team capacity: not run with teams
    assert set(doc["scenarios"]["teams"]["policies"]) == {"fifo", "gangs", "gpuyard"}
    for sc in doc["scenarios"].values():
        b = sc["bounds"]
        for pol, m in sc["policies"].items():
            if m["finished"] == sc["jobs"]:
                assert m["makespan_s"] >= b["makespan_s"] - 1e-3, pol
                assert m["jct_s"]["p50"] >= b["jct_s_p50"], pol
            assert m["wait_s"]["p50"] >= b["wait_s"]
            shares = m["team_share"].values()
            assert abs(sum(shares) - 1) < 1e-3 and all(0 <= s <= 1 for s in shares)
    # Issue 17 on its own case: median wait no worse than plain gangs', the largest
    # gang's wait no worse than fifo's.
    ours, gangs, fifo = (front["policies"][p] for p in ("gpuyard", "gangs", "fifo"))
    assert ours["wait_s"]["p50"] <= gangs["wait_s"]["p50"]
    assert ours["largest_gang"]["wait_s"] <= fifo["largest_gang"]["wait_s"]
    assert front["checks"]["median_wait_at_most_gangs"] is True
    assert front["checks"]["largest_gang_wait_at_most_fifo"] is True


def test_bench_refuses_an_unknown_scenario() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gpuyard", "twin", "bench", "--size", "small"]
        + ["--scenario", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "gpuyard: error: twin bench: unknown scenario 'nope'; known: frontier, synth-heavy, "
        "synth-light, teams"
    ]


def test_room_counts_idle_gpus_that_waiting_work_fits_and_bounds_allocation() -> None:
    """g (both nodes) holds them from 1 s, as its start (1,000 s, when a ends) is near;
    s (5,000 s) would not end by then, so it waits beside the idle node it fits on:
    those 8 GPUs are room, and allocation while work waits is bounded by 16 of 16, not
    by the 8 allocated. Once g runs and s after it, nothing waits."""
    jobs = [
        TraceJob("a", 0, 1000, gpus=8),
        TraceJob("g", 1, 500, replicas=2, gpus=8),
        TraceJob("s", 2, 5000, gpus=8),
    ]
    res = Engine(expand(default_shapes(2)), jobs, "gpuyard", room=True).run()
    assert res.room is not None and len(res.room) == len(res.samples)
    starts = {r.job.name: r.first_start for r in res.jobs}
    assert starts == {"a": 0, "g": 1000, "s": 1500}
    waiting = [(t, a, room) for (t, a, _, _), room in zip(res.samples, res.room, strict=True)]
    assert {(a, room) for t, a, room in waiting if 2 < t < 1000} == {(8, 8)}
    assert all(room == 0 for t, _, room in waiting if t >= 1500)
    m = policy_metrics(res)
    assert m["gpu_allocation_while_waiting"] < m["gpu_allocation_bound_while_waiting"] <= 1
    # EASY counts room alike: the same jobs wait there, on the same idle node
    easy = run_easy(expand(default_shapes(2)), jobs)
    assert easy.room is not None and max(easy.room) == 8


def test_a_largest_gang_that_never_started_waited_forever() -> None:
    """fifo binds two whole-cluster gangs that arrive together pod by pod, one node
    each: a deadlock, the run ends with both waiting. fifo's largest gang says it
    never started, and gpuyard's, which ran, waited less whatever the run's end."""
    sc = Scenario(
        "deadlock",
        "two whole-cluster gangs at once",
        lambda: (
            expand(default_shapes(2)),
            [TraceJob("x", 0, 100, replicas=2, gpus=8), TraceJob("y", 0, 100, replicas=2, gpus=8)],
            None,
        ),
    )
    doc = run_scenario(sc, ("fifo", "gangs", "gpuyard"))
    fifo, ours = doc["policies"]["fifo"], doc["policies"]["gpuyard"]
    assert fifo["never_started"] == 2 and fifo["largest_gang"]["started"] is False
    assert ours["largest_gang"] == {"job": "x", "gpus": 16, "wait_s": 0.0, "started": True}
    assert doc["checks"]["largest_gang_wait_at_most_fifo"] is True
    # every bound is at least what the policy had allocated
    for m in doc["policies"].values():
        if m["gpu_allocation_while_waiting"] is not None:
            assert m["gpu_allocation_bound_while_waiting"] >= m["gpu_allocation_while_waiting"]
