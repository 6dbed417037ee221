"""The health metrics count each verdict once: a node's health condition counts when
it is first seen wrong or changes status or reason, not on every controller pass; the
nodes-by-condition gauge follows; a GPU test's duration is its container's run."""

from __future__ import annotations

import gc
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gpuyard.health.metrics import HealthMetrics, run_seconds


def _metrics() -> tuple[HealthMetrics, CollectorRegistry]:
    r = CollectorRegistry()
    g = [Gauge(f"g{i}", "g", registry=r) for i in range(3)]
    return (
        HealthMetrics(
            *g,
            Counter("w", "w", registry=r),
            Counter("t", "t", registry=r),
            Gauge("c", "c", ["condition", "status"], registry=r),
            Counter("v", "v", ["condition", "status", "reason"], registry=r),
            Counter("r", "r", ["kind", "result"], registry=r),
            Histogram("d", "d", ["kind", "result"], registry=r),
        ),
        r,
    )


def _node(status: str, reason: str) -> dict[str, Any]:
    conds = [
        {"type": "Ready", "status": "True"},
        {"type": "GPUHealthy", "status": status, "reason": reason},
        {"type": "DiskHealthy", "status": "True", "reason": "Healthy"},
    ]
    return {"status": {"conditions": conds}}


def test_a_verdict_counts_once_and_the_gauge_follows() -> None:
    m, r = _metrics()

    def verdicts(status: str, reason: str) -> float:
        labels = {"condition": "GPUHealthy", "status": status, "reason": reason}
        return r.get_sample_value("v_total", labels) or 0

    def nodes(cond: str, status: str) -> float | None:
        return r.get_sample_value("c", {"condition": cond, "status": status})

    m.observe_nodes({"a": _node("True", "Healthy"), "b": _node("False", "Xid79")})
    assert verdicts("False", "Xid79") == 1 and verdicts("True", "Healthy") == 0
    assert nodes("GPUHealthy", "False") == 1 and nodes("GPUHealthy", "True") == 1
    assert nodes("DiskHealthy", "True") == 2 and nodes("NetworkHealthy", "True") == 0
    for _ in range(3):  # the same state seen again: nothing new
        m.observe_nodes({"a": _node("True", "Healthy"), "b": _node("False", "Xid79")})
    assert verdicts("False", "Xid79") == 1
    m.observe_nodes({"a": _node("False", "Xid48"), "b": _node("True", "Healthy")})
    assert verdicts("False", "Xid48") == 1 and verdicts("True", "Healthy") == 1
    assert nodes("GPUHealthy", "False") == 1
    m.observe_nodes({"a": _node("False", "Xid48")})  # b is gone
    assert nodes("GPUHealthy", "True") == 0 and nodes("GPUHealthy", "False") == 1


def test_a_condition_gone_and_back_wrong_counts_again() -> None:
    m, r = _metrics()
    m.observe_nodes({"a": _node("False", "Xid79")})
    m.observe_nodes({"a": {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}})
    m.observe_nodes({"a": _node("False", "Xid79")})
    labels = {"condition": "GPUHealthy", "status": "False", "reason": "Xid79"}
    assert r.get_sample_value("v_total", labels) == 2


def test_a_pass_over_unchanged_nodes_leaves_the_collector_nothing_new() -> None:
    """The controller calls it on every node-cache change: at 7,500 nodes a pass that
    rebuilt its memory left 30,000 objects for each young collection to walk."""
    m, _ = _metrics()
    cluster = {f"n{i}": _node("True", "Healthy") for i in range(1000)}
    m.observe_nodes(cluster)
    was = gc.isenabled()
    gc.disable()
    try:
        before = gc.get_count()[0]
        m.observe_nodes(cluster)
        grown = gc.get_count()[0] - before
    finally:
        if was:
            gc.enable()
    assert grown < 100, f"{grown} objects left by a pass over 1,000 unchanged nodes"


def test_a_tests_duration_is_its_containers_run() -> None:
    pod = {
        "metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
        "status": {
            "containerStatuses": [
                {
                    "state": {
                        "terminated": {
                            "startedAt": "2026-01-01T00:00:10Z",
                            "finishedAt": "2026-01-01T00:01:40Z",
                        }
                    }
                }
            ]
        },
    }
    assert run_seconds(pod, 0.0) == 90.0
    del pod["status"]
    made = 1767225600.0  # 2026-01-01T00:00:00Z
    assert run_seconds(pod, made + 300) == 300.0  # a timeout: since the pod was made
    assert run_seconds(None, made) is None
    m, r = _metrics()
    m.test_done("preflight", "timeout", pod, made + 300)
    assert r.get_sample_value("r_total", {"kind": "preflight", "result": "timeout"}) == 1
    assert r.get_sample_value("d_sum", {"kind": "preflight", "result": "timeout"}) == 300.0
