"""CompositePodGroup in the scheduler's group model (gpuyard.scheduling.composite): the
PodGroups under a gang CompositePodGroup are placed together or not at all, a basic one
leaves them on their own, and a PodGroup waits for a parent that is not there (or a
layout that cannot be followed) with the reason."""

from __future__ import annotations

from typing import Any

from gpuyard.scheduling import upstream
from gpuyard.scheduling.policy import Memory, PolicyConfig, schedule
from gpuyard.scheduling.state import ClusterState

from .nodes import node

NS = "ns"


def podgroup(name: str, min_count: int, parent: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"schedulingPolicy": {"gang": {"minCount": min_count}}}
    if parent:
        spec["parentCompositePodGroupName"] = parent
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


def composite(name: str, policy: dict[str, Any], parent: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "workloadRef": {"workloadName": "w", "templateName": name},
        "schedulingPolicy": policy,
    }
    if parent:
        spec["parentCompositePodGroupName"] = parent
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


def pod(name: str, group: str, gpus: int = 8) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}"},
        "spec": {
            "schedulerName": "gpuyard-scheduler",
            "schedulingGroup": {"podGroupName": group},
            "containers": [
                {"name": "c", "resources": {"requests": {"cpu": "1", "nvidia.com/gpu": str(gpus)}}}
            ],
        },
    }


def leader_workers(s: ClusterState, policy: dict[str, Any], workers: int = 3) -> None:
    """A LeaderWorkerSet-like replica: a leader PodGroup of 1 and a workers PodGroup."""
    s.set_composite(composite("replica", policy))
    s.set_group(upstream.group_info(podgroup("leader", 1, "replica"), s.priority_classes))
    s.set_group(upstream.group_info(podgroup("workers", workers, "replica"), s.priority_classes))
    s.add_pod(pod("leader-0", "leader"))
    for i in range(workers):
        s.add_pod(pod(f"worker-{i}", "workers"))


def test_a_gang_composite_places_its_groups_together_or_not_at_all() -> None:
    s = ClusterState()
    for i in range(3):
        s.add_node(node(f"n{i}"))
    leader_workers(s, {"gang": {"minGroupCount": 2}})
    mem = Memory()
    d = schedule(s, 1.0, PolicyConfig(), mem)
    # 4 whole-node pods, 3 nodes: the leader's group alone would fit, but nothing goes
    assert not d.bindings
    why = d.unschedulable["gang ns/CompositePodGroup:replica"]
    assert "needs 4 pods at once" in why
    s.add_node(node("n3"))
    d = schedule(s, 2.0, PolicyConfig(), mem)
    assert sorted(k for k, _ in d.bindings) == [
        f"{NS}/leader-0",
        *(f"{NS}/worker-{i}" for i in range(3)),
    ]
    # each pod still names its own PodGroup
    assert s.pods[f"{NS}/leader-0"].sub == f"{NS}/leader"


def test_a_basic_composite_leaves_its_groups_on_their_own() -> None:
    s = ClusterState()
    for i in range(3):
        s.add_node(node(f"n{i}"))
    leader_workers(s, {"basic": {}})
    d = schedule(s, 1.0, PolicyConfig(), Memory())
    # the workers' gang of 3 fits the 3 nodes, or the leader does: one group goes
    assert {k for k, _ in d.bindings} in (
        {f"{NS}/worker-{i}" for i in range(3)},
        {f"{NS}/leader-0"},
    )


def test_a_composite_waits_for_min_group_count_and_for_a_missing_parent() -> None:
    s = ClusterState()
    for i in range(8):
        s.add_node(node(f"n{i}"))
    s.set_composite(composite("replica", {"gang": {"minGroupCount": 2}}))
    s.set_group(upstream.group_info(podgroup("leader", 1, "replica"), s.priority_classes))
    s.add_pod(pod("leader-0", "leader"))
    mem = Memory()
    d = schedule(s, 1.0, PolicyConfig(), mem)
    assert not d.bindings
    assert (
        "waits for groups: 1 of minGroupCount 2 exist"
        in (d.unschedulable["gang ns/CompositePodGroup:replica"])
    )
    # a PodGroup naming a parent nobody made waits for it instead of going alone
    s.set_group(upstream.group_info(podgroup("orphan", 1, "nobody"), s.priority_classes))
    s.add_pod(pod("orphan-0", "orphan"))
    d = schedule(s, 2.0, PolicyConfig(), mem)
    assert (
        "CompositePodGroup nobody not found" in d.unschedulable["gang ns/CompositePodGroup:nobody"]
    )
    # a cycle is reported as an invalid layout
    s.set_composite(composite("a", {"gang": {"minGroupCount": 1}}, parent="b"))
    s.set_composite(composite("b", {"gang": {"minGroupCount": 1}}, parent="a"))
    s.set_group(upstream.group_info(podgroup("loop", 1, "a"), s.priority_classes))
    s.add_pod(pod("loop-0", "loop"))
    d = schedule(s, 3.0, PolicyConfig(), mem)
    assert not d.bindings
    assert any("Invalid" in r and "own ancestor" in r for r in d.unschedulable.values())
    # the second group arrives: the replica goes, all at once
    s.set_group(upstream.group_info(podgroup("workers", 2, "replica"), s.priority_classes))
    for i in range(2):
        s.add_pod(pod(f"worker-{i}", "workers"))
    d = schedule(s, 4.0, PolicyConfig(), mem)
    assert sorted(k for k, _ in d.bindings) == [
        f"{NS}/leader-0",
        f"{NS}/worker-0",
        f"{NS}/worker-1",
    ]
    # the parent removed, the leader's PodGroup waits for it; named no more, the
    # PodGroup is its own gang again
    s.remove_composite(f"{NS}/replica")
    assert s.groups[f"{NS}/CompositePodGroup:replica"].wait == "CompositePodGroup replica not found"
    s.set_group(upstream.group_info(podgroup("leader", 1, None), s.priority_classes))
    assert s.pods[f"{NS}/leader-0"].group == f"{NS}/leader"
    assert s.pods[f"{NS}/leader-0"].sub is None
