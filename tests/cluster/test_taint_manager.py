"""The taint manager's plan (gpuyard.cluster.taints.plan): who leaves a NoExecute-tainted
node, and when."""

from __future__ import annotations

from typing import Any

from gpuyard.cluster.taints import plan


def node(name: str, *taints: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"taints": list(taints)}}


def pod(name: str, *tolerations: dict[str, Any], **md: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", **md},
        "spec": {"nodeName": "n1", "tolerations": list(tolerations)},
        "status": {"phase": "Running"},
    }


MAINT = {"key": "maint", "value": "x", "effect": "NoExecute"}
GPU = {"key": "gpu", "effect": "NoExecute"}


def tol(key: str, secs: int | None = None) -> dict[str, Any]:
    t: dict[str, Any] = {"key": key, "operator": "Exists", "effect": "NoExecute"}
    if secs is not None:
        t["tolerationSeconds"] = secs
    return t


def names(p: Any) -> list[str]:
    return sorted(x["metadata"]["name"] for x, _ in p.due)


def test_untolerating_now_tolerating_after_its_seconds_forever_never() -> None:
    seen: dict[tuple[str, str, str], float] = {}
    pods = [pod("plain"), pod("brief", tol("maint", 30)), pod("forever", tol("maint"))]
    nodes = {"n1": node("n1", MAINT)}
    first = plan(nodes, {"n1": pods}, seen, 1000.0)
    assert names(first) == ["plain"] and first.next_at == 1030.0
    assert names(plan(nodes, {"n1": pods}, seen, 1029.0)) == ["plain"]
    assert names(plan(nodes, {"n1": pods}, seen, 1030.0)) == ["brief", "plain"]


def test_least_seconds_over_every_taint_and_every_matching_toleration() -> None:
    seen: dict[tuple[str, str, str], float] = {}
    p = pod("p", tol("maint", 100), {"operator": "Exists", "tolerationSeconds": 20}, tol("gpu"))
    nodes = {"n1": node("n1", MAINT, GPU)}
    assert plan(nodes, {"n1": [p]}, seen, 0.0).next_at == 20.0
    # a taint the pod does not tolerate at all: now
    q = pod("q", tol("maint", 100))
    assert names(plan(nodes, {"n1": [q]}, seen, 0.0)) == ["q"]


def test_time_added_counts_and_a_taint_gone_starts_over() -> None:
    seen: dict[tuple[str, str, str], float] = {}
    added = {**MAINT, "timeAdded": "1970-01-01T00:16:40Z"}  # 1000 s
    p = pod("p", tol("maint", 60))
    assert names(plan({"n1": node("n1", added)}, {"n1": [p]}, seen, 1061.0)) == ["p"]
    seen.clear()
    assert not plan({"n1": node("n1", MAINT)}, {"n1": [p]}, seen, 2000.0).due
    plan({"n1": node("n1")}, {"n1": [p]}, seen, 2030.0)  # the taint is removed
    assert not seen
    back = plan({"n1": node("n1", MAINT)}, {"n1": [p]}, seen, 2050.0)
    assert not back.due and back.next_at == 2110.0


def test_terminal_and_deleting_pods_are_left_alone() -> None:
    done = pod("done")
    done["status"]["phase"] = "Succeeded"
    going = pod("going", deletionTimestamp="2026-01-01T00:00:00Z")
    assert not plan({"n1": node("n1", MAINT)}, {"n1": [done, going]}, {}, 0.0).due
