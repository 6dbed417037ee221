"""The pure scheduling policy: properties (hypothesis) and scenarios."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuyard.kube import objects as o
from gpuyard.scheduling.policy import Decisions, PolicyConfig, schedule
from gpuyard.scheduling.state import NRES, ClusterState, GroupInfo

GPU = "nvidia.com/gpu"


def cluster(n: int, gpus: int = 8, racks: int = 4, taint_every: int = 0) -> ClusterState:
    s = ClusterState()
    for i in range(n):
        taints = []
        if taint_every and i % taint_every == 0:
            taints = [{"key": "gpuyard.io/team", "value": "vision", "effect": "NoSchedule"}]
        s.add_node_fast(
            f"n{i:03d}",
            {"cpu": 64_000, "memory": 512 * 2**30, GPU: gpus},
            {
                "gpuyard.io/rack": f"r{i % racks}",
                "topology.kubernetes.io/zone": f"z{i % 2}",
                "pool": "gpu" if i % 5 else "cpu",
            },
            taints,
        )
    return s


def add_gang(
    s: ClusterState, name: str, n: int, gpus: int = 8, priority: int = 0, **kw: Any
) -> None:
    s.set_group(GroupInfo(f"ns/{name}", min_member=n))
    for i in range(n):
        s.add_pod_fast(
            f"ns/{name}-{i}", {"cpu": 1000, GPU: gpus}, priority=priority, group=f"ns/{name}", **kw
        )


def check_invariants(s: ClusterState, d: Decisions) -> None:
    # Never overcommits.
    for n in s.nodes.values():
        for i in range(NRES):
            assert n.used[i] <= n.alloc[i], (n.name, i)
    # Never violates taints, selectors, anti-affinity.
    for key, node in d.bindings:
        p, n = s.pods[key], s.nodes[node]
        assert not [t for t in n.taints if not o.tolerates(p.tolerations, t)]
        assert all(n.labels.get(k) == v for k, v in p.node_selector)
        for sel in p.anti_affinity:
            others = [q for q in n.pods.values() if q.key != p.key]
            assert not any(o.selector_matches(sel, q.labels) for q in others)
    # Never binds part of a gang.
    by_group = Counter(s.pods[k].group for k, _ in d.bindings if s.pods[k].group)
    for g, count in by_group.items():
        assert g is not None
        members = s.members[g]
        assert all(m.node for m in members.values()), f"gang {g} partly bound ({count})"


workloads = st.lists(
    st.tuples(
        st.sampled_from(["gang", "single", "anti", "tolerating", "selector"]),
        st.integers(1, 6),  # size
        st.sampled_from([1, 2, 4, 8]),  # gpus
        st.sampled_from([-1000, 0, 1000]),  # priority
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workloads, st.integers(1, 12), st.booleans())
def test_invariants_hold_for_any_workload(
    work: list[tuple[str, int, int, int]], nodes: int, gangs: bool
) -> None:
    s = cluster(nodes, taint_every=3)
    for j, (kind, size, gpus, prio) in enumerate(work):
        if kind == "gang":
            add_gang(s, f"g{j}", size, gpus, prio)
        else:
            for i in range(size):
                kw: dict[str, object] = {}
                if kind == "anti":
                    kw = {
                        "labels": {"app": f"a{j}"},
                        "anti_affinity": [{"matchLabels": {"app": f"a{j}"}}],
                    }
                elif kind == "tolerating":
                    kw = {"tolerations": [{"key": "gpuyard.io/team", "operator": "Exists"}]}
                elif kind == "selector":
                    kw = {"node_selector": {"pool": "cpu"}}
                s.add_pod_fast(f"ns/s{j}-{i}", {"cpu": 500, GPU: gpus}, priority=prio, **kw)  # type: ignore[arg-type]
    cfg = PolicyConfig(gangs=gangs)
    for _ in range(2):
        d = schedule(s, 0.0, cfg)
        if gangs:
            check_invariants(s, d)
        else:
            for n in s.nodes.values():
                assert all(n.used[i] <= n.alloc[i] for i in range(NRES))
        # Apply evictions as a driver would, then go again.
        for e in d.evictions:
            s.remove_pod(e.pod)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 16), st.integers(0, 3))
def test_two_gangs_wanting_the_whole_cluster_one_runs_in_full(
    nodes: int, extra_singles: int
) -> None:
    s = cluster(nodes)
    add_gang(s, "a", nodes)
    add_gang(s, "b", nodes)
    d = schedule(s, 0.0)
    groups = Counter(s.pods[k].group for k, _ in d.bindings)
    assert list(groups.values()) == [nodes], groups
    assert len(groups) == 1
    loser = "gang ns/b" if "ns/a" in groups else "gang ns/a"
    assert loser in d.unschedulable


def test_plain_fifo_without_gangs_deadlocks_half_and_half() -> None:
    s = cluster(8)
    # Interleaved arrivals: a0 b0 a1 b1 ...
    s.set_group(GroupInfo("ns/a", min_member=8))
    s.set_group(GroupInfo("ns/b", min_member=8))
    for i in range(8):
        s.add_pod_fast(f"ns/a-{i}", {GPU: 8}, group="ns/a")
        s.add_pod_fast(f"ns/b-{i}", {GPU: 8}, group="ns/b")
    d = schedule(s, 0.0, PolicyConfig(gangs=False))
    groups = Counter(s.pods[k].group for k, _ in d.bindings)
    assert groups == {"ns/a": 4, "ns/b": 4}, "each gang holds half: neither can ever run"
    s2 = cluster(8)
    s2.set_group(GroupInfo("ns/a", min_member=8))
    s2.set_group(GroupInfo("ns/b", min_member=8))
    for i in range(8):
        s2.add_pod_fast(f"ns/a-{i}", {GPU: 8}, group="ns/a")
        s2.add_pod_fast(f"ns/b-{i}", {GPU: 8}, group="ns/b")
    d2 = schedule(s2, 0.0)
    assert Counter(s2.pods[k].group for k, _ in d2.bindings) == {"ns/a": 8}


def test_large_gang_is_not_starved_by_a_stream_of_small_jobs() -> None:
    s = cluster(8)
    # The cluster is busy with small jobs; a big gang arrives, then more small jobs keep
    # arriving as old ones finish.
    for i in range(8):
        s.add_pod_fast(f"ns/old-{i}", {GPU: 4}, node=f"n{i:03d}")
    add_gang(s, "big", 8)
    for step in range(8):
        s.remove_pod(f"ns/old-{step}")  # one small job finishes
        s.add_pod_fast(f"ns/new-{step}", {GPU: 4})  # and another arrives
        # No runtime is known: with starve_after=0 the gang holds from its first pass
        # (tests/scheduling/test_reservations.py covers later holds and backfill).
        d = schedule(s, float(step), PolicyConfig(starve_after=0.0))
        placed_new = [k for k, _ in d.bindings if k.startswith("ns/new")]
        for k, node in d.bindings:
            if k.startswith("ns/new"):
                # Backfill only onto nodes the gang does not hold.
                assert node not in d.reservations.get("gang ns/big", [])
        if step < 7:
            assert not [k for k, _ in d.bindings if k.startswith("ns/big")]
        del placed_new
    # Every old job is gone: the gang holds every node and runs.
    bound_big = [k for k, p in s.pods.items() if k.startswith("ns/big") and p.node]
    assert len(bound_big) == 8


def test_without_reservations_the_stream_starves_the_gang() -> None:
    s = cluster(8)
    for i in range(8):
        s.add_pod_fast(f"ns/old-{i}", {GPU: 4}, node=f"n{i:03d}")
    add_gang(s, "big", 8)
    for step in range(8):
        s.remove_pod(f"ns/old-{step}")
        s.add_pod_fast(f"ns/new-{step}", {GPU: 4})
        schedule(s, float(step), PolicyConfig(reservations=False))
    assert not [k for k, p in s.pods.items() if k.startswith("ns/big") and p.node]


def test_preemption_takes_balloons_before_real_work_and_never_half_a_gang() -> None:
    s = cluster(8)
    balloon = {"labels": {"gpuyard.io/balloon": "true"}, "priority_class": "gpuyard-balloon"}
    for i in range(4):
        s.add_pod_fast(f"ns/balloon-{i}", {GPU: 8}, priority=-1000, node=f"n{i:03d}", **balloon)  # type: ignore[arg-type]
    # A low-priority gang of 4 holds the other 4 nodes.
    s.set_group(GroupInfo("ns/low", min_member=4))
    for i in range(4):
        s.add_pod_fast(f"ns/low-{i}", {GPU: 8}, priority=0, group="ns/low", node=f"n{i + 4:03d}")
    add_gang(s, "urgent", 4, priority=1000)
    d = schedule(s, 0.0)
    victims = {e.pod for e in d.evictions}
    assert victims == {f"ns/balloon-{i}" for i in range(4)}, "balloons go first, real work stays"
    assert set(d.nominations.values()) == {f"n{i:03d}" for i in range(4)}
    # A bigger urgent gang needs the low gang's nodes too: the low gang goes whole.
    for e in d.evictions:
        s.remove_pod(e.pod)
    add_gang(s, "urgent2", 6, priority=2000)
    d2 = schedule(s, 1.0)
    v2 = {e.pod for e in d2.evictions}
    low = {f"ns/low-{i}" for i in range(4)}
    assert low <= v2 or not (low & v2), "a victim gang is evicted whole or not at all"
    assert low <= v2
    assert all("evicting whole gang low" in e.reason for e in d2.evictions if e.pod in low)


def test_preemption_only_when_the_whole_preemptor_fits_afterwards() -> None:
    s = cluster(4)
    for i in range(4):
        s.add_pod_fast(f"ns/b-{i}", {GPU: 8}, priority=-1000, node=f"n{i:03d}")
    add_gang(s, "toobig", 5, priority=1000)
    d = schedule(s, 0.0)
    assert not d.evictions
    assert "gang toobig needs 5 pods at once" in d.unschedulable["gang ns/toobig"]


def test_reason_names_what_blocks_the_nodes() -> None:
    s = cluster(10, taint_every=2)  # 5 tainted nodes
    s.add_pod_fast("ns/busy", {GPU: 8}, node="n001")
    add_gang(s, "train-a", 8)
    d = schedule(s, 0.0)
    msg = d.unschedulable["gang ns/train-a"]
    assert msg.startswith("gang train-a needs 8 pods at once; 4 fit on 4 nodes"), msg
    assert "5 carry an untolerated taint gpuyard.io/team=vision" in msg
    assert "1 lacks nvidia.com/gpu" in msg


def test_gang_waits_for_min_member_and_honours_timeout() -> None:
    s = cluster(2)
    s.set_group(GroupInfo("ns/g", min_member=3, timeout=10.0, created=0.0))
    s.add_pod_fast("ns/g-0", {GPU: 8}, group="ns/g")
    d = schedule(s, 1.0)
    assert "waits for members: 1 of minMember 3" in d.unschedulable["gang ns/g"]
    s.add_pod_fast("ns/g-1", {GPU: 8}, group="ns/g")
    s.add_pod_fast("ns/g-2", {GPU: 8}, group="ns/g")
    d = schedule(s, 5.0)
    assert "needs 3 pods" in d.unschedulable["gang ns/g"]
    d = schedule(s, 20.0)
    assert d.timed_out == ["ns/g"] and "scheduleTimeoutSeconds=10" in d.unschedulable["gang ns/g"]
    d = schedule(s, 25.0)
    assert "backs off" in d.unschedulable["gang ns/g"]


def test_gang_is_packed_into_few_racks() -> None:
    s = cluster(64, racks=8)
    add_gang(s, "g", 8)
    d = schedule(s, 0.0)
    racks = {s.nodes[n].labels["gpuyard.io/rack"] for _, n in d.bindings}
    assert len(racks) == 1


def test_single_pods_are_bin_packed() -> None:
    s = cluster(4)
    for i in range(16):
        s.add_pod_fast(f"ns/p{i}", {GPU: 1})
    d = schedule(s, 0.0)
    assert len({n for _, n in d.bindings}) == 2


def test_a_gang_larger_than_the_cluster_holds_nothing() -> None:
    s = cluster(4)
    add_gang(s, "huge", 6)
    add_gang(s, "small", 3)
    d = schedule(s, 0.0)
    assert "gang ns/huge" not in d.reservations
    assert sum(1 for k, _ in d.bindings if k.startswith("ns/small")) == 3


def test_reason_says_nodes_are_freeing_while_victims_terminate() -> None:
    s = cluster(2)
    for i in range(2):
        s.add_pod_fast(f"ns/low-{i}", {GPU: 8}, priority=0, node=f"n{i:03d}")
    add_gang(s, "urgent", 2, priority=1000)
    d = schedule(s, 0.0)
    assert {e.pod for e in d.evictions} == {"ns/low-0", "ns/low-1"}
    for e in d.evictions:  # the driver sees the victims terminating
        s.pods[e.pod].terminating = True
    d = schedule(s, 1.0)
    assert not d.evictions and not d.bindings
    assert "2 are freeing (pods terminating)" in d.unschedulable["gang ns/urgent"]
    for i in range(2):
        s.remove_pod(f"ns/low-{i}")
    d = schedule(s, 2.0)
    assert sorted(n for _, n in d.bindings) == ["n000", "n001"]


def test_victims_made_again_never_take_the_nodes_their_preemptor_is_nominated_to() -> None:
    # A preempted job's controller makes its workers again at once (they wait, low
    # priority) while its preemptor is nominated and the victims still leave: a node one
    # victim freed is held for the preemptor, not handed back to the victims' work.
    s = cluster(2)
    for i in range(2):
        s.add_pod_fast(f"ns/low-{i}", {GPU: 8}, priority=0, node=f"n{i:03d}")
    add_gang(s, "urgent", 2, priority=1000)
    d = schedule(s, 0.0)
    assert {e.pod for e in d.evictions} == {"ns/low-0", "ns/low-1"}
    assert set(d.nominations.values()) == {"n000", "n001"}
    for e in d.evictions:
        s.pods[e.pod].terminating = True
    s.remove_pod("ns/low-0")  # one victim is gone, the other still terminating
    for i in range(2):
        s.add_pod_fast(f"ns/low-again-{i}", {GPU: 8}, priority=0)
    d = schedule(s, 1.0)
    assert not d.bindings and not d.evictions, d.bindings  # n000 is free but held
    s.remove_pod("ns/low-1")
    d = schedule(s, 2.0)
    assert sorted(n for k, n in d.bindings if k.startswith("ns/urgent-")) == ["n000", "n001"]
    assert len(d.bindings) == 2  # the victims' new pods wait


def test_a_member_whose_binding_failed_is_placed_again_beside_its_gang() -> None:
    s = cluster(32, racks=4)
    add_gang(s, "g", 4)
    d = schedule(s, 0.0)
    assert len(d.bindings) == 4
    rack = {s.nodes[n].labels["gpuyard.io/rack"] for _, n in d.bindings}
    assert len(rack) == 1
    key, node = d.bindings[2]
    s.unbind(key)  # the API refused this one binding
    d2 = schedule(s, 1.0)
    assert d2.bindings and d2.bindings[0][0] == key
    assert s.nodes[d2.bindings[0][1]].labels["gpuyard.io/rack"] in rack
    assert all(p.node for p in s.members["ns/g"].values())


def test_state_accounting_follows_pod_updates() -> None:
    s = ClusterState()
    for name in ("a", "b"):
        s.add_node_fast(name, {"cpu": 8000, "memory": 2**30, GPU: 8})

    def pod(node: str | None, gpus: int, phase: str = "Pending") -> dict[str, Any]:
        return {
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {
                "nodeName": node,
                "schedulerName": "gpuyard-scheduler",
                "containers": [{"name": "c", "resources": {"requests": {GPU: str(gpus)}}}],
            },
            "status": {"phase": phase},
        }

    s.add_pod(pod("a", 2))
    freed = s.freed_gen
    s.update_pod(pod("a", 2, "Running"))  # a status update frees nothing
    assert s.nodes["a"].used[2] == 2 and s.freed_gen == freed
    assert s.nodes["a"].pods["ns/p"] is s.pods["ns/p"]
    s.update_pod(pod("b", 2, "Running"))  # moved (re-created elsewhere)
    assert (s.nodes["a"].used[2], s.nodes["b"].used[2]) == (0, 2) and s.freed_gen > freed
    s.update_pod(pod("b", 2, "Succeeded"))  # finished: gone from the node
    assert s.nodes["b"].used == [0, 0, 0, 0] and "ns/p" not in s.pods
