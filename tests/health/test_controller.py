"""The taint reconciler: conditions -> taints through the brake, restored after a restart."""

from __future__ import annotations

from typing import Any

from gpuyard.health.brake import BrakeConfig
from gpuyard.health.controller import (
    ANN_UNHEALTHY_SINCE,
    TaintReconciler,
    brake_configmap,
    current_taint,
    merge_patch_body,
)


def node(
    name: str,
    conds: list[tuple[str, str, str, str]] = (),
    taints: list | None = None,
    ann: dict | None = None,
) -> dict[str, Any]:  # type: ignore[assignment, type-arg]
    return {
        "metadata": {"name": name, "resourceVersion": "7", "annotations": ann or {}},
        "spec": {"taints": list(taints or [])},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}]
            + [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in conds]
        },
    }


def apply(nodes: dict[str, dict], patches: list) -> None:  # type: ignore[type-arg]
    for p in patches:
        n = nodes[p.node]
        n["spec"]["taints"] = p.taints
        for k, v in p.annotations.items():
            if v is None:
                n["metadata"]["annotations"].pop(k, None)
            else:
                n["metadata"]["annotations"][k] = v


def test_conditions_become_taints_and_go_away() -> None:
    team = {"key": "gpuyard.io/team", "value": "a", "effect": "NoSchedule"}
    nodes = {
        "a": node("a", [("GPUHealthy", "False", "Xid79", "fatal: Xid 79")], [team]),
        "b": node("b", [("DiskHealthy", "False", "DiskFull", "/ full")]),
        "c": node("c", [("GPUHealthy", "True", "Healthy", "")]),
    }
    rec = TaintReconciler(BrakeConfig(max_share=1.0))
    r = rec.reconcile(nodes, 100.0)
    assert [(p.node, p.taint) for p in r.patches] == [
        ("a", ("Xid79", "NoExecute")),
        ("b", ("DiskFull", "NoSchedule")),
    ]
    body = merge_patch_body(r.patches[0])
    assert body["spec"]["taints"] == [
        team,
        {"key": "gpuyard.io/unhealthy", "value": "Xid79", "effect": "NoExecute"},
    ]
    assert body["metadata"]["resourceVersion"] == "7"
    assert body["metadata"]["annotations"][ANN_UNHEALTHY_SINCE] == "1970-01-01T00:01:40Z"
    apply(nodes, r.patches)
    assert rec.reconcile(nodes, 101.0).patches == []  # nothing changed: nothing written
    nodes["b"]["status"]["conditions"][1]["status"] = "True"
    r = rec.reconcile(nodes, 200.0)
    assert [(p.node, p.taint) for p in r.patches] == [("b", None)]
    assert r.patches[0].annotations == {ANN_UNHEALTHY_SINCE: None}
    apply(nodes, r.patches)
    assert current_taint(nodes["b"]) is None and current_taint(nodes["a"]) == ("Xid79", "NoExecute")


def test_brake_trips_at_twenty_percent_and_survives_restart() -> None:
    nodes = {f"n{i:02d}": node(f"n{i:02d}") for i in range(40)}
    rec = TaintReconciler(BrakeConfig(max_share=0.05, window_s=3600))
    for i in range(8):  # 20%
        nodes[f"n{i:02d}"]["status"]["conditions"].append(
            {"type": "DiskHealthy", "status": "False", "reason": "DiskFull", "message": "x"}
        )
    r = rec.reconcile(nodes, 1000.0)
    assert len(r.patches) == 2 and r.tripped_now  # 5% of 40
    apply(nodes, r.patches)
    cm = brake_configmap(r.state, 1000.0)
    assert cm["data"]["state"] == "tripped" and "limit 2" in cm["data"]["message"]
    # A restarted controller remembers both the taints and the tripped brake.
    rec2 = TaintReconciler(BrakeConfig(max_share=0.05, window_s=3600))
    rec2.restore(nodes, cm)
    assert rec2.state.tripped and set(rec2.state.tainted_at) == {"n00", "n01"}
    r2 = rec2.reconcile(nodes, 1010.0)
    assert r2.patches == [] and not r2.tripped_now
    # A person resets it: the window starts afresh.
    rec2.reset()
    r3 = rec2.reconcile(nodes, 1020.0)
    assert len(r3.patches) == 2 and r3.tripped_now


def test_gpu_test_condition_taints_too() -> None:
    nodes = {"a": node("a", [("GPUTestPassed", "False", "GPUTestMatmul", "matmul.gpu3")])}
    r = TaintReconciler().reconcile(nodes, 0.0)
    assert [(p.node, p.taint) for p in r.patches] == [("a", ("GPUTestMatmul", "NoSchedule"))]


def test_taints_set_by_a_person_are_left_alone() -> None:
    manual = [{"key": "gpuyard.io/unhealthy", "value": "bad-fan", "effect": "NoSchedule"}]
    nodes = {
        "a": node("a", [("GPUHealthy", "True", "Healthy", "")], manual),
        "b": node("b", [("GPUHealthy", "False", "Xid79", "fatal: x")], manual),
    }
    assert TaintReconciler().reconcile(nodes, 0.0).patches == []


def test_dropped_conditions_are_not_a_recovery() -> None:
    ours = [{"key": "gpuyard.io/unhealthy", "value": "Xid79", "effect": "NoExecute"}]
    ann = {ANN_UNHEALTHY_SINCE: "2026-01-01T00:00:00Z"}
    nodes = {
        "a": node("a", [], ours, ann),  # only Ready: someone replaced the list
        "b": node("b", [("GPUHealthy", "True", "Healthy", "ok")], ours, ann),
    }
    r = TaintReconciler().reconcile(nodes, 0.0)
    assert [(p.node, p.taint) for p in r.patches] == [("b", None)]
