"""Periodic tests: idle nodes only, least recently tested first, rate limits, finishing."""

from __future__ import annotations

import json
from typing import Any

from gpuyard.balloons import sizing
from gpuyard.health.periodic import (
    ANN_LAST_TESTED,
    ANN_TESTING_SINCE,
    BALLOON_NAMESPACE,
    PeriodicConfig,
    finish_plan,
    is_idle,
    pick,
    share_tested_recently,
)
from gpuyard.health.testpods import make_test_pod

T0 = 1767225600.0  # 2026-01-01T00:00:00Z
DAY = 86400.0
CFG = PeriodicConfig(max_concurrent=2, max_starts_per_hour=3, timeout_s=100)


def node(name: str, last: str | None = None, taints: list | None = None) -> dict[str, Any]:  # type: ignore[type-arg]
    return {
        "metadata": {"name": name, "annotations": {ANN_LAST_TESTED: last} if last else {}},
        "spec": {"taints": taints or []},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {"nvidia.com/gpu": "8"},
        },
    }


def pod(
    node_name: str, prio: str = "gpuyard-normal", phase: str = "Running", ns: str = ""
) -> dict[str, Any]:
    # balloons where the balloon controller runs them, other pods in a team's namespace
    ns = ns or (BALLOON_NAMESPACE if prio == "gpuyard-balloon" else "t")
    return {
        "metadata": {"name": f"p-{node_name}", "namespace": ns},
        "spec": {"nodeName": node_name, "priorityClassName": prio},
        "status": {"phase": phase},
    }


def test_idle_means_only_balloons() -> None:
    assert is_idle([])
    assert is_idle([pod("a", "gpuyard-balloon"), pod("a", phase="Succeeded")])
    assert not is_idle([pod("a", "gpuyard-balloon"), pod("a")])
    # Low priority elsewhere is someone's work, not a balloon the test may clear (the
    # health controllers may delete pods only in gpuyard's namespace).
    assert not is_idle([pod("a", "gpuyard-balloon", ns="t")])
    assert BALLOON_NAMESPACE == sizing.NAMESPACE
    ds = pod("a")
    ds["metadata"]["ownerReferences"] = [{"kind": "DaemonSet", "name": "agent"}]
    assert is_idle([ds])


def test_pick_least_recently_tested_idle_nodes() -> None:
    nodes = {
        "never": node("never"),
        "old": node("old", "2025-12-01T00:00:00Z"),
        "older": node("older", "2025-11-01T00:00:00Z"),
        "fresh": node("fresh", "2025-12-31T00:00:00Z"),  # tested 1 day ago
        "busy": node("busy"),
        "bad": node("bad", taints=[{"key": "gpuyard.io/unhealthy", "effect": "NoSchedule"}]),
    }
    pods = {"busy": [pod("busy")], "old": [pod("old", "gpuyard-balloon")]}
    assert pick(nodes, pods, 0, 0, T0, CFG) == ["never", "older"]
    assert pick(nodes, pods, 1, 0, T0, CFG) == ["never"]  # one test already running
    assert pick(nodes, pods, 0, 3, T0, CFG) == []  # hourly budget spent
    nodes["never"]["status"]["conditions"][0]["status"] = "False"
    assert pick(nodes, pods, 0, 0, T0, CFG) == ["older", "old"]


def test_share_tested_in_a_week() -> None:
    nodes = {
        "a": node("a", "2025-12-31T00:00:00Z"),
        "b": node("b", "2025-12-01T00:00:00Z"),
        "c": node("c"),
        "d": node("d", "2025-12-28T00:00:00Z"),
    }
    assert share_tested_recently(nodes, T0) == 0.5
    assert share_tested_recently({}, T0) == 0.0


def test_finish_pass_fail_timeout_and_orphan() -> None:
    def tp(name: str, phase: str, code: int = 0, created: str = "2026-01-01T00:00:00Z") -> Any:
        p = make_test_pod(node(name), "periodic", 1, CFG.pods)
        p["metadata"]["creationTimestamp"] = created
        p["status"] = {"phase": phase}
        if phase != "Running":
            rep = {
                "ok": code == 0,
                "exit_code": code,
                "failed": [] if code == 0 else ["memcpy.gpu1"],
                "checks": [] if code == 0 else [{"name": "memcpy", "gpu": 1, "ok": False}],
            }
            p["status"]["containerStatuses"] = [
                {"state": {"terminated": {"exitCode": code, "message": json.dumps(rep)}}}
            ]
        return p

    testing = [{"key": "gpuyard.io/testing", "effect": "NoSchedule"}]
    nodes = {n: node(n, taints=testing) for n in ["a", "b", "c", "d"]}
    nodes["d"]["metadata"]["annotations"][ANN_TESTING_SINCE] = "2025-12-31T23:00:00Z"
    pods = {"a": tp("a", "Succeeded"), "b": tp("b", "Failed", 1), "c": tp("c", "Running")}
    got = {f.node: (f.result, f.condition.reason) for f in finish_plan(nodes, pods, T0 + 101, CFG)}
    assert got == {
        "a": ("pass", "GPUTestPassed"),
        "b": ("fail", "GPUTestMemcpy"),
        "c": ("timeout", "GPUTestTimeout"),
        "d": ("orphan", ""),
    }
    assert {f.node for f in finish_plan(nodes, pods, T0 + 50, CFG)} == {"a", "b", "d"}
