"""The twin's fast constructors (`add_node_fast`, `add_pod_fast`: scheduling facts, no
Kubernetes objects) give the records the live path (`add_node`, `add_pod`: objects
from informers) gives for the same node and pod. What they cannot say is named in
state.py: no object kept, no required node affinity, no preemptionPolicy, and the
creation time is given as a number."""

from __future__ import annotations

from typing import Any

import pytest

from gpuyard import names
from gpuyard.scheduling.state import ClusterState

GPU = names.RESOURCE_GPU
LABELS = {names.LABEL_ZONE: "z1", names.LABEL_RACK: "z1-r2", names.LABEL_TEAM: "vision"}
TEAM_TAINT = {"key": names.TAINT_TEAM, "value": "vision", "effect": "NoSchedule"}
ANTI = {"matchLabels": {"app": "balloon"}}


def node_object() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "n1", "labels": LABELS},
        "spec": {
            "taints": [TEAM_TAINT, {"key": "soft", "effect": "PreferNoSchedule"}],
        },
        "status": {
            "allocatable": {"cpu": "96", "memory": "1Ti", GPU: "8", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod_object(state: ClusterState) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "w-0",
            "namespace": "vision",
            "labels": {names.POD_GROUP_LABEL: "job", "app": "train"},
        },
        "spec": {
            "schedulerName": state.scheduler_name,
            "priorityClassName": names.PRIORITY_LOW,
            "nodeName": "n1",
            "nodeSelector": {names.LABEL_GPU_PRODUCT: "H100"},
            "tolerations": [{"key": names.TAINT_TEAM, "operator": "Exists"}],
            "affinity": {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {"labelSelector": ANTI, "topologyKey": names.LABEL_HOSTNAME}
                    ]
                }
            },
            "containers": [
                {
                    "name": "w",
                    "image": "trainer",
                    "resources": {"requests": {"cpu": "8", "memory": "64Gi", GPU: "8"}},
                }
            ],
        },
    }


def test_fast_constructors_give_the_records_objects_give() -> None:
    live, fast = ClusterState(), ClusterState()
    for s in (live, fast):
        s.set_priority_class(names.PRIORITY_LOW, names.PRIORITY_CLASSES[names.PRIORITY_LOW])
    a = live.add_node(node_object())
    b = fast.add_node_fast(
        "n1", {"cpu": 96_000, "memory": 2**40, GPU: 8}, LABELS, [TEAM_TAINT], ready=True
    )
    for f in ("name", "alloc", "labels", "taints", "ready", "unschedulable", "used"):
        assert getattr(a, f) == getattr(b, f), f

    p = live.add_pod(pod_object(live))
    assert p is not None
    q = fast.add_pod_fast(
        "vision/w-0",
        {"cpu": 8000, "memory": 64 * 2**30, GPU: 8},
        priority=live.priority_classes[names.PRIORITY_LOW],
        group="vision/job",
        node="n1",
        labels={names.POD_GROUP_LABEL: "job", "app": "train"},
        tolerations=[{"key": names.TAINT_TEAM, "operator": "Exists"}],
        node_selector={names.LABEL_GPU_PRODUCT: "H100"},
        anti_affinity=[ANTI],
        priority_class=names.PRIORITY_LOW,
    )
    for f in (
        "key",
        "req",
        "priority",
        "group",
        "node",
        "tolerations",
        "node_selector",
        "anti_affinity",
        "labels",
        "priority_class",
        "preemption_never",
        "terminating",
        "scheduler",
    ):
        assert getattr(p, f) == getattr(q, f), f
    assert p.class_key() == q.class_key()
    # both count the pod on its node, for the policy alike
    assert live.nodes["n1"].used == fast.nodes["n1"].used == [8000, 64 * 2**30, 8, 1]
    assert live.bound_by_prio.keys() == fast.bound_by_prio.keys()
    assert set(live.members) == set(fast.members) == {"vision/job"}
    assert live.anti_bound.keys() == fast.anti_bound.keys()


def test_a_policy_memory_follows_one_state() -> None:
    """A memory read against a second state would apply the first one's caches and
    change logs to it: refused, with a clear error."""
    from gpuyard.scheduling.policy import Memory, schedule

    mem = Memory()
    a, b = ClusterState(), ClusterState()
    for s in (a, b):
        s.add_node_fast("n1", {"cpu": 8000, "memory": 2**34, GPU: 8})
        s.add_pod_fast("ns/p", {"cpu": 1000, GPU: 1})
    assert schedule(a, 0.0, None, mem).bindings == [("ns/p", "n1")]
    with pytest.raises(ValueError, match="one Memory per state"):
        schedule(b, 0.0, None, mem)
    assert schedule(b, 0.0).bindings == [("ns/p", "n1")]  # the state's own memory
