"""A gang with more pods than minMember (scheduler-plugins) or gang.minCount (upstream):
minMember pods go all or nothing, the others as they fit beside them, and pods that
wait for room bind once it comes; never fewer than minMember; a gang that must fit one
domain keeps its extra pods there."""

from __future__ import annotations

from gpuyard import names
from gpuyard.scheduling import upstream
from gpuyard.scheduling.policy import schedule
from gpuyard.scheduling.state import ClusterState, GroupInfo
from gpuyard.scheduling.topology import Request

GPU = names.RESOURCE_GPU


def cluster(n: int, racks: int = 1) -> ClusterState:
    s = ClusterState()
    for i in range(n):
        s.add_node_fast(
            f"n{i}",
            {"cpu": 64_000, "memory": 2**40, GPU: 8},
            {names.LABEL_RACK: f"r{i % racks}", names.LABEL_ZONE: "z"},
        )
    return s


def pods(s: ClusterState, name: str, n: int) -> list[str]:
    keys = [f"ns/{name}-{i}" for i in range(n)]
    for i, k in enumerate(keys):
        s.add_pod_fast(
            k,
            {"cpu": 1000, GPU: 8},
            group=f"ns/{name}",
            labels={"gpuyard.io/replica-index": str(i)},
        )
    return keys


def test_min_member_all_or_nothing_and_the_rest_as_they_fit() -> None:
    s = cluster(5)
    s.set_group(GroupInfo("ns/g", min_member=4))
    keys = pods(s, "g", 7)
    d = schedule(s, 0.0)
    bound = dict(d.bindings)
    # the four it needs together and one more: five nodes
    assert len(bound) == 5 and all(k in bound for k in keys[:4])
    assert "gang ns/g" not in d.unschedulable or "needs" in d.unschedulable["gang ns/g"]
    # room comes: the waiting pods bind one by one, not waiting for each other
    s.add_node_fast("n5", {"cpu": 64_000, "memory": 2**40, GPU: 8}, {names.LABEL_RACK: "r0"})
    d = schedule(s, 1.0)
    assert len(d.bindings) == 1
    assert sum(1 for k in keys if s.pods[k].node) == 6


def test_fewer_than_min_member_binds_nothing_and_says_so() -> None:
    s = cluster(3)
    s.set_group(GroupInfo("ns/g", min_member=4))
    pods(s, "g", 6)
    d = schedule(s, 0.0)
    assert d.bindings == []
    assert d.unschedulable["gang ns/g"].startswith("gang g needs 4 pods of its 6 at once; 3 fit")


def test_upstream_min_count_below_the_pods() -> None:
    s = cluster(5)
    s.set_group(
        upstream.group_info(
            {
                "metadata": {"name": "u", "namespace": "ns"},
                "spec": {"schedulingPolicy": {"gang": {"minCount": 2}}},
            },
            {},
        )
    )
    keys = pods(s, "u", 8)
    d = schedule(s, 0.0)
    assert len(d.bindings) == 5 and all(k in dict(d.bindings) for k in keys[:2])


def test_extra_pods_stay_in_the_required_domain() -> None:
    s = cluster(12, racks=3)  # racks of 4 nodes
    s.set_group(GroupInfo("ns/t", min_member=3, topology=Request(required=(names.LABEL_RACK,))))
    keys = pods(s, "t", 6)
    d = schedule(s, 0.0)
    racks = {s.nodes[n].labels[names.LABEL_RACK] for _, n in d.bindings}
    assert len(d.bindings) == 4 and len(racks) == 1
    assert all(s.pods[k].node for k in keys[:3])
    # the other two wait for room in that rack, though the other racks are empty
    d = schedule(s, 1.0)
    assert d.bindings == []
