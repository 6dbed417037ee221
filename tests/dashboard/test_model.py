"""The state each node is drawn in, from the taints, labels, conditions and pods that
gpuyard's components write; and the rows of jobs, gangs and teams."""

from __future__ import annotations

from typing import Any

import pytest

from gpuyard import names
from gpuyard.dashboard import model


def node(
    name: str = "n1",
    *,
    gpus: int = 8,
    ready: bool = True,
    taints: list[dict[str, Any]] | None = None,
    labels: dict[str, str] | None = None,
    unschedulable: bool = False,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    conds = [{"type": "Ready", "status": "True" if ready else "False"}, *(conditions or [])]
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {"allocatable": {names.RESOURCE_GPU: str(gpus)}, "conditions": conds},
    }


def pod(
    ns: str = "default",
    gpus: int = 8,
    prio: str = names.PRIORITY_NORMAL,
    phase: str = "Running",
    name: str = "p",
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "nodeName": "n1",
            "priorityClassName": prio,
            "containers": [
                {"name": "c", "resources": {"requests": {names.RESOURCE_GPU: str(gpus)}}}
            ],
        },
        "status": {"phase": phase},
    }


TEAM_TAINT = {"key": names.TAINT_TEAM, "value": "vision", "effect": "NoSchedule"}


@pytest.mark.parametrize(
    ("n", "pods", "want"),
    [
        (node(), [], "free"),
        (node(), [pod(gpus=4)], "partly used"),
        (node(), [pod(gpus=4, name="a"), pod(gpus=4, name="b")], "full"),
        (node(), [pod(gpus=8, phase="Succeeded")], "free"),  # finished pods hold nothing
        (node(), [pod(gpus=8, prio=names.PRIORITY_BALLOON)], "balloon"),
        (node(taints=[TEAM_TAINT], labels={names.LABEL_TEAM: "vision"}), [], "team"),
        (node(taints=[TEAM_TAINT]), [pod(ns="vision-ns", gpus=8)], "full"),
        (
            node(taints=[TEAM_TAINT]),
            [pod(ns="nlp-ns", gpus=8, prio=names.PRIORITY_LOW)],
            "borrowed",
        ),
        (node(taints=[{"key": names.TAINT_PREFLIGHT, "effect": "NoSchedule"}]), [], "preflight"),
        (node(unschedulable=True), [pod(gpus=8)], "cordoned"),
        (node(ready=False), [], "unhealthy"),
        (
            node(taints=[{"key": names.TAINT_UNHEALTHY, "value": "Xid79", "effect": "NoExecute"}]),
            [],
            "unhealthy",
        ),
        # the agent's verdict, before (or without, while the brake holds) a taint
        (node(conditions=[{"type": "GPUHealthy", "status": "False"}]), [pod(gpus=8)], "unhealthy"),
        (node(conditions=[{"type": "GPUHealthy", "status": "True"}]), [], "free"),
        # unhealthy wins over cordoned, cordoned over preflight
        (
            node(
                unschedulable=True, taints=[{"key": names.TAINT_UNHEALTHY, "effect": "NoSchedule"}]
            ),
            [],
            "unhealthy",
        ),
        (
            node(
                unschedulable=True, taints=[{"key": names.TAINT_PREFLIGHT, "effect": "NoSchedule"}]
            ),
            [],
            "cordoned",
        ),
    ],
)
def test_node_state(n: dict[str, Any], pods: list[dict[str, Any]], want: str) -> None:
    teams = {"vision-ns": "vision", "nlp-ns": "nlp"}
    assert model.node_state(n, pods, teams) == want
    assert want in model.STATES


def test_node_summary_and_detail() -> None:
    n = node(
        labels={names.LABEL_RACK: "rack-0001", names.LABEL_ZONE: "zone-b", names.LABEL_POOL: "gpu"},
        conditions=[
            {"type": "MemoryPressure", "status": "False"},
            {
                "type": "GPUHealthy",
                "status": "False",
                "reason": "Xid79",
                "message": "fatal: Xid 79",
            },
        ],
    )
    pods = [pod(gpus=2, name="a"), pod(gpus=8, name="done", phase="Failed")]
    s = model.node_summary(n, pods, {})
    assert s == {
        "name": "n1", "state": "unhealthy", "gpus": 8, "used": 2, "team": "",
        "rack": "rack-0001", "zone": "zone-b", "pool": "gpu", "pods": 1,
    }  # fmt: skip
    d = model.node_detail(n, pods, {})
    ok = {c["type"]: c["ok"] for c in d["conditions"]}
    assert ok == {"Ready": True, "MemoryPressure": True, "GPUHealthy": False}
    assert [p["name"] for p in d["podList"]] == ["a", "done"]  # every pod, finished ones too


def test_a_pending_gang_says_why_from_its_pods() -> None:
    waiting = pod(name="w-0")
    del waiting["spec"]["nodeName"]
    waiting["status"] = {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "False", "message": "needs 4 nodes, 2 free"}
        ],
    }
    gang = {
        "metadata": {"name": "g", "namespace": "default"},
        "spec": {"minMember": 4},
        "status": {"phase": "Pending"},
    }
    row = model.gang_row(gang, [waiting], {"default": "vision"})
    assert (row["phase"], row["why"], row["team"], row["replicas"]) == (
        "Pending",
        "needs 4 nodes, 2 free",
        "vision",
        4,
    )
    job = {"metadata": {"name": "j", "namespace": "default"}, "spec": {"replicas": 4}, "status": {}}
    assert model.job_row(job, gang, [waiting], {})["why"] == "needs 4 nodes, 2 free"
    job["status"] = {"phase": "Running", "message": "old news"}
    assert model.job_row(job, gang, [waiting], {})["why"] == ""


def test_brake_row() -> None:
    assert model.brake_row(None)["state"] == "unknown"
    cm = {"data": {"state": "tripped", "message": "6 of 100 nodes", "held": "a,b,c"}}
    assert model.brake_row(cm) | {} == {
        "state": "tripped", "message": "6 of 100 nodes", "trippedAt": "", "held": 3, "updatedAt": "",
    }  # fmt: skip
