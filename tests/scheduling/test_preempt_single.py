"""Preemption for a single pod (not a gang): it evicts the cheapest victims on one node
(balloons first) and only those it needs."""

from __future__ import annotations

from gpuyard import names
from gpuyard.scheduling.policy import PolicyConfig, schedule
from gpuyard.scheduling.state import ClusterState

GPU = names.RESOURCE_GPU


def state(nodes: int) -> ClusterState:
    s = ClusterState()
    for i in range(nodes):
        s.add_node_fast(f"n{i}", {"cpu": 96_000, "memory": 2**40, GPU: 8})
    return s


def test_a_whole_node_pod_evicts_one_balloon_not_more() -> None:
    s = state(4)
    for i in range(4):
        s.add_pod_fast(f"sys/balloon-{i}", {GPU: 8}, priority=-5, node=f"n{i}")
    s.add_pod_fast("team/train", {GPU: 8}, priority=1000)
    d = schedule(s, 0.0, PolicyConfig())
    assert len(d.evictions) == 1 and d.evictions[0].pod.startswith("sys/balloon-")
    victim_node = s.pods[d.evictions[0].pod].node
    assert d.nominations == {"team/train": victim_node}


def test_a_small_pod_prefers_the_cheapest_victims_on_one_node() -> None:
    s = state(2)
    # n0: one balloon-like pod at -5 holding 8 GPUs; n1: two low pods of 4 GPUs at 0.
    s.add_pod_fast("sys/balloon-0", {GPU: 8}, priority=-5, node="n0")
    s.add_pod_fast("a/low-0", {GPU: 4}, priority=0, node="n1")
    s.add_pod_fast("a/low-1", {GPU: 4}, priority=0, node="n1")
    s.add_pod_fast("b/job", {GPU: 4}, priority=1000)
    d = schedule(s, 0.0, PolicyConfig())
    assert [e.pod for e in d.evictions] == ["sys/balloon-0"]
    assert d.nominations == {"b/job": "n0"}


def test_no_preemption_when_no_single_node_can_hold_the_pod() -> None:
    s = state(2)
    s.add_pod_fast("a/x", {GPU: 8}, priority=2000, node="n0")
    s.add_pod_fast("a/y", {GPU: 8}, priority=2000, node="n1")
    s.add_pod_fast("b/job", {GPU: 8}, priority=1000)
    d = schedule(s, 0.0, PolicyConfig())
    assert d.evictions == [] and "b/job" not in d.nominations
