"""The upstream gang API (scheduling.k8s.io/v1beta1 PodGroup) on `gpuyard up`, through
kubectl: pods joined by spec.schedulingGroup run all or nothing by
schedulingPolicy.gang.minCount, the PodGroup's PodGroupInitiallyScheduled condition
says why a gang waits and turns True once it is placed, and a changed minCount counts."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from gpuyard.cluster.testing import ClusterProcess


def podgroup(name: str, min_count: int) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1beta1",
        "kind": "PodGroup",
        "metadata": {"name": name},
        "spec": {"schedulingPolicy": {"gang": {"minCount": min_count}}},
    }


def pod(name: str, group: str | None, gpus: int = 8) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "schedulerName": "gpuyard-scheduler",
        "containers": [
            {"name": "w", "image": "trainer", "resources": {"limits": {"nvidia.com/gpu": gpus}}}
        ],
    }
    if group:
        spec["schedulingGroup"] = {"podGroupName": group}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def apply(c: ClusterProcess, *objs: dict[str, Any]) -> None:
    c.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}),
    )


def bound(c: ClusterProcess, prefix: str) -> dict[str, str]:
    pods = json.loads(c.kubectl("get", "pods", "-o", "json").stdout)["items"]
    return {
        p["metadata"]["name"]: p["spec"].get("nodeName") or ""
        for p in pods
        if p["metadata"]["name"].startswith(prefix)
    }


def condition(c: ClusterProcess, group: str) -> dict[str, Any] | None:
    pg = json.loads(c.kubectl("get", "podgroups.scheduling.k8s.io", group, "-o", "json").stdout)
    for cond in (pg.get("status") or {}).get("conditions") or []:
        if cond["type"] == "PodGroupInitiallyScheduled":
            return dict(cond)
    return None


def until(fn: Callable[[], Any], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.3)


def test_upstream_gang_all_or_nothing_conditions_and_min_count(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=4, args=["--components", "scheduler"])
    # One node of four is taken: a gang of four 8-GPU pods cannot run.
    apply(c, pod("blocker", None))
    until(lambda: bound(c, "blocker")["blocker"])
    apply(c, podgroup("train", 4), *(pod(f"train-{i}", "train") for i in range(4)))

    def waiting() -> dict[str, Any] | None:
        cond = condition(c, "train")
        return cond if cond and cond["status"] == "False" else None

    cond = until(waiting)
    assert cond["reason"] == "Unschedulable", cond
    assert "train" in cond["message"] and "4" in cond["message"], cond
    time.sleep(1.0)
    assert not any(bound(c, "train-").values()), "a partial gang was bound"
    # The node frees up: the whole gang runs, on four different nodes.
    c.kubectl("delete", "pod", "blocker", "--grace-period=0", "--force")
    placed = until(lambda: (b := bound(c, "train-")) and all(b.values()) and b)
    assert len(set(placed.values())) == 4
    until(lambda: (cond := condition(c, "train")) and cond["status"] == "True")

    # Lowering minCount is honoured: four pods of a group of minCount 5 wait for a
    # fifth; lowered to 4, they run.
    c.kubectl("delete", "pods", "-l", "x!=y", "--grace-period=0", "--force")
    until(lambda: not bound(c, "train-"))
    apply(c, podgroup("shrink", 5), *(pod(f"shrink-{i}", "shrink") for i in range(4)))
    # (kept current: it said fewer members while they were being created)
    cond = until(
        lambda: (cond := condition(c, "shrink")) and "4 of minMember 5" in cond["message"] and cond
    )
    assert cond["status"] == "False" and cond["reason"] == "Unschedulable", cond
    time.sleep(1.0)
    assert not any(bound(c, "shrink-").values())
    c.kubectl(
        "patch",
        "podgroups.scheduling.k8s.io",
        "shrink",
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"schedulingPolicy": {"gang": {"minCount": 4}}}}),
    )
    until(lambda: (b := bound(c, "shrink-")) and all(b.values()))
    until(lambda: (cond := condition(c, "shrink")) and cond["status"] == "True")

    # Raising minCount is honoured: a group raised from 1 to 3 binds none of two pods.
    c.kubectl("delete", "pods", "-l", "x!=y", "--grace-period=0", "--force")
    until(lambda: not bound(c, "shrink-"))
    apply(c, podgroup("grow", 1))
    c.kubectl(
        "patch",
        "podgroups.scheduling.k8s.io",
        "grow",
        "--type",
        "merge",
        "-p",
        json.dumps({"spec": {"schedulingPolicy": {"gang": {"minCount": 3}}}}),
    )
    apply(c, *(pod(f"grow-{i}", "grow", gpus=1) for i in range(2)))
    time.sleep(3.0)
    assert not any(bound(c, "grow-").values()), "minCount 3 bound a gang of 2"
    apply(c, pod("grow-2", "grow", gpus=1))
    until(lambda: (b := bound(c, "grow-")) and len(b) == 3 and all(b.values()))


def test_disruption_mode_all_takes_the_whole_group(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=3, args=["--components", "scheduler"])
    group = podgroup("ring", 3)
    group["spec"]["disruptionMode"] = {"all": {}}
    apply(c, group, *(pod(f"ring-{i}", "ring") for i in range(3)))
    apply(c, podgroup("solo", 1), pod("solo-0", "solo", gpus=0))
    until(lambda: (b := bound(c, "ring-")) and len(b) == 3 and all(b.values()))
    until(lambda: all(bound(c, "solo-").values()))
    # One member is lost: the others are evicted with it; a group in single mode is not.
    c.kubectl("delete", "pod", "ring-1", "--grace-period=0", "--force")
    until(lambda: not bound(c, "ring-"))
    pg = json.loads(c.kubectl("get", "podgroups.scheduling.k8s.io", "ring", "-o", "json").stdout)
    conds = {x["type"]: x for x in pg["status"]["conditions"]}
    assert conds["DisruptionTarget"]["status"] == "True", conds
    assert "ring-1" in conds["DisruptionTarget"]["message"], conds
    assert conds["DisruptionTarget"]["reason"] == "EvictionByEvictionAPI", conds
    assert all(bound(c, "solo-").values())


COMPOSITE_YAML = """
apiVersion: scheduling.k8s.io/v1alpha3
kind: CompositePodGroup
metadata:
  name: replica
spec:
  workloadRef: {workloadName: lws, templateName: replica}
  schedulingPolicy:
    gang: {minGroupCount: 2}
---
apiVersion: scheduling.k8s.io/v1beta1
kind: PodGroup
metadata:
  name: leader
spec:
  parentCompositePodGroupName: replica
  schedulingPolicy:
    gang: {minCount: 1}
---
apiVersion: scheduling.k8s.io/v1beta1
kind: PodGroup
metadata:
  name: workers
spec:
  parentCompositePodGroupName: replica
  schedulingPolicy:
    gang: {minCount: 3}
"""


def test_a_composite_pod_group_runs_its_pod_groups_together(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    """A LeaderWorkerSet-style replica: a leader PodGroup and a workers PodGroup under
    one gang CompositePodGroup. With a node of four taken, the leader alone would fit
    but nothing runs, and the CompositePodGroup says why; once the node is free the
    four pods run together and every group's condition turns True."""
    c = make_cluster(nodes=4, args=["--components", "scheduler"])
    apply(c, pod("blocker", None))
    until(lambda: bound(c, "blocker")["blocker"])
    c.kubectl("apply", "-f", "-", input=COMPOSITE_YAML)
    apply(c, pod("leader-0", "leader"), *(pod(f"worker-{i}", "workers") for i in range(3)))

    def composite_condition() -> dict[str, Any] | None:
        cpg = json.loads(
            c.kubectl("get", "compositepodgroups.scheduling.k8s.io", "replica", "-o", "json").stdout
        )
        for cond in (cpg.get("status") or {}).get("conditions") or []:
            if cond["type"] == "CompositePodGroupInitiallyScheduled":
                return dict(cond)
        return None

    cond = until(
        lambda: (
            (cond := composite_condition())
            and cond["status"] == "False"
            and "needs 4 pods" in cond["message"]
            and cond
        )
    )
    assert cond["reason"] == "Unschedulable", cond
    time.sleep(1.0)
    assert not any(bound(c, "leader-").values()) and not any(bound(c, "worker-").values())
    c.kubectl("delete", "pod", "blocker", "--grace-period=0", "--force")
    until(lambda: (b := {**bound(c, "leader-"), **bound(c, "worker-")}) and all(b.values()))
    until(lambda: (cond := composite_condition()) and cond["status"] == "True")
    for group in ("leader", "workers"):
        until(lambda g=group: (cond := condition(c, g)) and cond["status"] == "True")
