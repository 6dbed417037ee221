"""`gpuyard twin bench` and its EASY-backfill reference: the reference by hand, the
suite's JSON as a user runs it (small size), its bounds and the comparisons of issue
17 on the frontier case."""

from __future__ import annotations

import json
import subprocess
import sys

from gpuyard.cluster.shapes import default_shapes, expand
from gpuyard.twin.easy import run_easy
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
