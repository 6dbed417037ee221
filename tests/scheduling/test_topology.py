"""Topology-aware gangs in the pure policy: required levels (inside one domain or wait,
with a reason naming the level and the largest free domain), preferred levels (fewest
domains), slices, replacements from the running members' domain, every dialect read
into the one model. Properties (hypothesis): a gang that requires a level never spans
two of its domains, and every slice sits inside one domain."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuyard import names
from gpuyard.cluster.shapes import default_shapes, load_shapes
from gpuyard.scheduling import dialects
from gpuyard.scheduling.policy import PolicyConfig, schedule
from gpuyard.scheduling.reasons import category
from gpuyard.scheduling.state import ClusterState, GroupInfo
from gpuyard.scheduling.topology import Request, domain_of
from gpuyard.twin.capacity import shape_labels

GPU = names.RESOURCE_GPU
RACK, ZONE, BLOCK, CLIQUE = (
    names.LABEL_RACK,
    names.LABEL_ZONE,
    names.LABEL_BLOCK,
    names.LABEL_CLIQUE,
)


def cluster(nodes: int = 96, shapes: str | None = None) -> ClusterState:
    s = ClusterState()
    for sh in load_shapes(shapes) if shapes else default_shapes(nodes):
        s.add_node_fast(
            sh.name,
            {"cpu": sh.cpu_milli, "memory": sh.memory_bytes, GPU: sh.gpus},
            shape_labels(sh),
        )
    return s


def gang(
    s: ClusterState,
    name: str,
    n: int,
    gpus: int = 8,
    topo: Request | None = None,
    priority: int = 0,
) -> list[str]:
    s.set_group(GroupInfo(f"ns/{name}", min_member=n, topology=topo))
    keys = []
    for i in range(n):
        key = f"ns/{name}-{i}"
        s.add_pod_fast(
            key,
            {"cpu": 1000, GPU: gpus},
            priority=priority,
            group=f"ns/{name}",
            labels={"gpuyard.io/replica-index": str(i)},
        )
        keys.append(key)
    return keys


def fill_node(s: ClusterState, node: str, gpus: int = 8, name: str | None = None) -> str:
    key = f"busy/{name or node}"
    s.add_pod_fast(key, {"cpu": 1000, GPU: gpus}, node=node)
    return key


def where(s: ClusterState, keys: list[str], label: str) -> Counter[tuple[str, ...] | None]:
    return Counter(
        domain_of(s.topology_levels, label, s.nodes[s.pods[k].node or ""].labels) for k in keys
    )


def test_a_gang_that_requires_one_rack_runs_inside_one_rack() -> None:
    s = cluster(96)  # three racks of 32 nodes
    # Every rack has some room taken, so a soft packer would spill.
    for r in range(3):
        for i in range(12 + 4 * r):
            fill_node(s, f"gpu-node-{32 * r + i:04d}")
    keys = gang(s, "train", 16, topo=Request(required=(RACK,)))
    d = schedule(s, 0.0)
    assert len(d.bindings) == 16
    racks = where(s, keys, RACK)
    assert len(racks) == 1
    # the tightest rack that holds it: rack-0000 has 20 free nodes, rack-0001 16
    assert next(iter(racks))[-1] == "rack-0001"


def test_a_gang_that_cannot_fit_one_rack_waits_and_says_the_largest_free_rack() -> None:
    s = cluster(96)
    for r in range(3):
        for i in range(20):
            fill_node(s, f"gpu-node-{32 * r + i:04d}")
    # 36 free nodes in the cluster, at most 12 in any rack
    gang(s, "big", 14, topo=Request(required=(RACK,)))
    d = schedule(s, 0.0)
    assert d.bindings == []
    reason = d.unschedulable["gang ns/big"]
    assert "must fit inside one gpuyard.io/rack" in reason
    assert "the largest free gpuyard.io/rack, rack-0000, holds 12 of its 14 pods" in reason
    assert category(reason) == "Topology"
    # without the requirement it runs, over racks
    s2 = cluster(96)
    for r in range(3):
        for i in range(20):
            fill_node(s2, f"gpu-node-{32 * r + i:04d}")
    gang(s2, "big", 14)
    assert len(schedule(s2, 0.0).bindings) == 14


def test_required_nvlink_clique_on_gb200_racks() -> None:
    s = cluster(shapes="examples/gb200-nvl72.yaml")
    # one tray busy in each of the four NVL72 racks
    for r in range(4):
        fill_node(s, f"gb200-{18 * r:04d}", gpus=4)
    keys = gang(s, "nvl", 17, gpus=4, topo=Request(required=(CLIQUE,)))
    d = schedule(s, 0.0)
    assert len(d.bindings) == 17
    assert len(where(s, keys, CLIQUE)) == 1
    # 18 trays of 4 GPUs cannot fit in a clique with one tray busy
    too_big = gang(s, "nvl18", 18, gpus=4, topo=Request(required=(CLIQUE,)))
    d = schedule(s, 1.0)
    assert not any(k in dict(d.bindings) for k in too_big)
    assert "must fit inside one nvidia.com/gpu.clique" in d.unschedulable["gang ns/nvl18"]
    assert "holds 17 of its 18 pods" in d.unschedulable["gang ns/nvl18"]


def test_nodes_without_the_label_are_in_no_domain() -> None:
    s = cluster(shapes="examples/gb200-nvl72.yaml")
    # H100 nodes carry no clique: a 8-GPU gang requiring one never goes there
    gang(s, "h", 2, gpus=8, topo=Request(required=(CLIQUE,)))
    d = schedule(s, 0.0)
    assert d.bindings == []
    # the GB200 trays carry cliques but have 4 GPUs; the H100 nodes carry none
    assert "no nvidia.com/gpu.clique has room for any of its pods" in d.unschedulable["gang ns/h"]
    s = cluster(8)
    gang(s, "h", 2, gpus=8, topo=Request(required=(CLIQUE,)))
    d = schedule(s, 0.0)
    assert d.bindings == []
    assert "no node it may use carries nvidia.com/gpu.clique" in d.unschedulable["gang ns/h"]


def test_preferred_level_spans_the_fewest_domains() -> None:
    s = cluster(96)
    # free nodes: 20 in rack 0, 16 in rack 1, 12 in rack 2
    for r in range(3):
        for i in range(12 + 4 * r):
            fill_node(s, f"gpu-node-{32 * r + i:04d}")
    small = gang(s, "small", 14, topo=Request(preferred=RACK))
    schedule(s, 0.0)
    # the smallest rack that holds it whole: rack-0001 (16 free)
    assert where(s, small, RACK) == Counter({("zone-b", "zone-b-block-00", "rack-0001"): 14})
    s = cluster(96)
    for r in range(3):
        for i in range(12 + 4 * r):
            fill_node(s, f"gpu-node-{32 * r + i:04d}")
    big = gang(s, "big", 30, topo=Request(preferred=RACK))
    schedule(s, 0.0)
    got = where(s, big, RACK)
    # 30 pods: 20 in the largest rack, 10 in the next: two racks, not three
    assert len(got) == 2 and sorted(got.values()) == [10, 20]


def test_slices_each_inside_one_rack() -> None:
    s = cluster(96)
    for r in range(3):
        for i in range(27):  # 5 free nodes in each rack
            fill_node(s, f"gpu-node-{32 * r + i:04d}")
    keys = gang(s, "sl", 12, topo=Request(slice_key=RACK, slice_size=4))
    d = schedule(s, 0.0)
    assert len(d.bindings) == 12
    for i in range(0, 12, 4):
        assert len(where(s, keys[i : i + 4], RACK)) == 1
    # slices of 6 cannot fit in racks with 5 free nodes: it waits
    s2 = cluster(96)
    for r in range(3):
        for i in range(27):
            fill_node(s2, f"gpu-node-{32 * r + i:04d}")
    gang(s2, "sl6", 12, topo=Request(slice_key=RACK, slice_size=6))
    assert schedule(s2, 0.0).bindings == []


def test_replacement_of_a_failed_node_comes_from_the_gangs_rack() -> None:
    s = cluster(96)
    keys = gang(s, "g", 8, topo=Request(required=(BLOCK,)))
    schedule(s, 0.0)
    block = next(iter(where(s, keys, BLOCK)))
    rack = next(iter(where(s, keys, RACK)))
    # a worker's node fails: the pod is gone; its controller makes it again
    lost = s.pods[keys[3]].node
    assert lost is not None
    s.remove_node(lost)
    s.remove_pod(keys[3])
    s.add_pod_fast(keys[3], {"cpu": 1000, GPU: 8}, group="ns/g")
    d = schedule(s, 10.0)
    assert len(d.bindings) == 1
    assert where(s, keys, BLOCK) == Counter({block: 8})
    assert where(s, [keys[3]], RACK) == Counter({rack: 1})


def test_replacement_waits_when_its_domain_is_full() -> None:
    s = cluster(96)
    keys = gang(s, "g", 30, topo=Request(required=(RACK,)))
    schedule(s, 0.0)
    (rack,) = where(s, keys, RACK)
    free = [n for n in s.nodes.values() if n.labels[RACK] == rack[-1] and not n.pods]
    for n in free:
        fill_node(s, n.name)
    lost = s.pods[keys[0]].node
    assert lost is not None
    s.remove_node(lost)
    s.remove_pod(keys[0])
    s.add_pod_fast(keys[0], {"cpu": 1000, GPU: 8}, group="ns/g")
    d = schedule(s, 10.0)
    assert d.bindings == []
    assert f"its running members are in gpuyard.io/rack {rack[-1]}" in d.unschedulable["gang ns/g"]


def test_lanes_do_not_mix_requests() -> None:
    """Two gangs alike but for their requests fail and fit apart."""
    s = cluster(64)
    for i in range(20):
        fill_node(s, f"gpu-node-{i:04d}")
        fill_node(s, f"gpu-node-{32 + i:04d}")
    gang(s, "strict", 16, topo=Request(required=(RACK,)))
    loose = gang(s, "loose", 16)
    d = schedule(s, 0.0)
    assert all(k in dict(d.bindings) for k in loose)
    assert "gang ns/strict" in d.unschedulable


def test_reservation_holds_nodes_inside_one_domain() -> None:
    s = cluster(64)
    # everything busy for an hour; rack 0 frees first
    for i in range(64):
        key = fill_node(s, f"gpu-node-{i:04d}")
        p = s.pods[key]
        p.runtime = 600.0 if i < 32 else 300.0 + i
        p.started = 0.0
    gang(s, "r", 24, topo=Request(required=(RACK,)))
    d = schedule(s, 0.0, PolicyConfig())
    held = d.reservations.get("gang ns/r") or []
    assert len(held) >= 24
    assert len({s.nodes[n].labels[RACK] for n in held}) == 1


# ------------------------------------------------------------------ dialects


def test_dialects_read_into_one_model() -> None:
    assert dialects.pod_request(
        {
            "annotations": {
                "kueue.x-k8s.io/podset-required-topology": BLOCK,
                "kueue.x-k8s.io/podset-slice-required-topology": RACK,
                "kueue.x-k8s.io/podset-slice-size": "4",
            }
        }
    ) == Request(required=(BLOCK,), slice_key=RACK, slice_size=4)
    assert dialects.pod_request(
        {"annotations": {"kai.scheduler/topology-preferred-placement": RACK}}
    ) == Request(preferred=RACK)
    assert dialects.pod_request({"annotations": {"other": "x"}}) is None
    bad = dialects.pod_request({"annotations": {"kueue.x-k8s.io/podset-slice-size": "four"}})
    assert bad is not None and bad.error and "podset-slice-required-topology" in bad.error
    up = {
        "metadata": {"name": "pg", "namespace": "ns"},
        "spec": {
            "schedulingPolicy": {"gang": {"minCount": 4}},
            "schedulingConstraints": {"topology": [{"key": RACK}]},
        },
    }
    assert dialects.upstream_request(up) == Request(required=(RACK,))
    assert dialects.volcano_request(
        {"networkTopology": {"mode": "hard", "highestTierAllowed": 2}}
    ) == Request(required=(BLOCK,))
    assert dialects.volcano_request({"networkTopology": {"mode": "soft"}}) == Request(
        preferred=RACK
    )
    err = dialects.volcano_request({"networkTopology": {"mode": "hard", "highestTierAllowed": 9}})
    assert err is not None and "highestTierAllowed 9: expected 1 to 3" in (err.error or "")


def test_pods_annotations_reach_the_gang_and_bad_ones_are_its_reason() -> None:
    s = cluster(96)
    for r in range(3):
        for i in range(20):
            fill_node(s, f"gpu-node-{32 * r + i:04d}")
    s.set_group(GroupInfo("ns/k", min_member=13))
    s.set_group(GroupInfo("ns/bad", min_member=2))

    def pod(name: str, group: str, ann: dict[str, str]) -> dict[str, Any]:
        return {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "labels": {names.POD_GROUP_LABEL: group},
                "annotations": ann,
            },
            "spec": {
                "schedulerName": names.SCHEDULER_NAME,
                "containers": [{"name": "c", "resources": {"limits": {GPU: "8"}}}],
            },
        }

    for i in range(13):
        s.add_pod(pod(f"k-{i}", "k", {"kueue.x-k8s.io/podset-required-topology": RACK}))
    for i in range(2):
        s.add_pod(pod(f"bad-{i}", "bad", {"kueue.x-k8s.io/podset-slice-size": "0"}))
    d = schedule(s, 0.0)
    assert d.bindings == []
    assert "holds 12 of its 13 pods" in d.unschedulable["gang ns/k"]
    assert (
        "podset-slice-size needs kueue.x-k8s.io/podset-slice-required-topology"
        in (d.unschedulable["gang ns/bad"])
    )


# ------------------------------------------------------------------ properties


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[ClusterState, list[tuple[list[str], Request]]]:
    n_racks = draw(st.integers(2, 5))
    per = draw(st.integers(2, 6))
    s = ClusterState()
    for r in range(n_racks):
        for i in range(per):
            labels = {ZONE: f"z{r % 2}", RACK: f"r{r // 2}", names.LABEL_HOSTNAME: f"n{r}-{i}"}
            if draw(st.booleans()) or i:
                labels[CLIQUE] = f"c{r}.{i % 2}"
            s.add_node_fast(
                f"n{r}-{i}",
                {"cpu": 64_000, "memory": 2**40, GPU: draw(st.sampled_from([4, 8]))},
                labels,
            )
    for r in range(n_racks):
        for i in range(per):
            if draw(st.integers(0, 3)) == 0:
                s.add_pod_fast(f"busy/{r}-{i}", {"cpu": 1000, GPU: 4}, node=f"n{r}-{i}")
    gangs = []
    for g in range(draw(st.integers(1, 4))):
        level = draw(st.sampled_from([RACK, ZONE, CLIQUE]))
        size = draw(st.integers(2, 8))
        sl = draw(st.sampled_from([0, 0, 2, 3]))
        req = Request(required=(level,), slice_key=CLIQUE if sl else None, slice_size=sl)
        keys = gang(
            s,
            f"g{g}",
            size,
            gpus=draw(st.sampled_from([2, 4])),
            topo=req,
            priority=draw(st.integers(0, 1)),
        )
        gangs.append((keys, req))
    return s, gangs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_required_topology_gangs_never_span_two_domains(
    sc: tuple[ClusterState, list[tuple[list[str], Request]]],
) -> None:
    s, gangs = sc
    for t in range(3):
        d = schedule(s, float(t))
        bound = dict(d.bindings)
        for n in s.nodes.values():
            assert all(n.used[i] <= n.alloc[i] for i in range(len(n.used)))
        for keys, req in gangs:
            placed = [k for k in keys if s.pods[k].node]
            assert not placed or len(placed) == len(keys), "part of a gang bound"
            if any(k in bound for k in keys) or placed:
                (level,) = req.required
                assert len(where(s, placed, level)) == 1, (level, where(s, placed, level))
                assert None not in where(s, placed, level)
                if req.slice_key:
                    order = sorted(placed, key=lambda k: int(k.rsplit("-", 1)[1]))
                    for i in range(0, len(order), req.slice_size):
                        chunk = order[i : i + req.slice_size]
                        assert len(where(s, chunk, req.slice_key)) == 1
        # some work ends between passes
        for k in [k for k in s.pods if k.startswith("busy/")][:1]:
            s.remove_pod(k)


def test_levels_are_data_a_rack_is_known_by_its_zone_too() -> None:
    import pytest

    from gpuyard.scheduling.component import LEVELS

    s = ClusterState()
    for z in ("a", "b"):
        for i in range(3):
            s.add_node_fast(
                f"{z}{i}", {"cpu": 64_000, "memory": 2**40, GPU: 8}, {ZONE: z, RACK: "r1"}
            )
    # racks named alike in two zones are two racks: a gang of 4 requiring one waits
    gang(s, "g", 4, topo=Request(required=(RACK,)))
    d = schedule(s, 0.0)
    assert d.bindings == [] and "holds 3 of its 4 pods" in d.unschedulable["gang ns/g"]
    # with levels that leave the zone out, r1 is one rack of six nodes
    s.set_topology_levels(LEVELS.parse(f"{RACK},{names.LABEL_HOSTNAME}"))
    assert len(schedule(s, 1.0).bindings) == 4
    with pytest.raises(ValueError, match="'bad key' is not a node label key"):
        LEVELS.parse("bad key")


def test_topograph_labels_make_levels_too() -> None:
    from gpuyard.scheduling.topology import TOPOGRAPH_LEVELS

    acc = "network.topology.nvidia.com/accelerator"
    blk = "network.topology.nvidia.com/block"
    s = ClusterState()
    s.set_topology_levels(TOPOGRAPH_LEVELS)
    for i in range(12):
        s.add_node_fast(
            f"n{i}",
            {"cpu": 64_000, "memory": 2**40, GPU: 4},
            {
                "network.topology.nvidia.com/spine": "sp1",
                blk: f"sw{i // 6}",
                acc: f"nvl{i // 3}",
                names.LABEL_HOSTNAME: f"n{i}",
            },
        )
    for i in (0, 3, 4):  # nvl0 and nvl1 lose a node each
        fill_node(s, f"n{i}", gpus=4)
    keys = gang(s, "a", 3, gpus=4, topo=Request(required=(acc,)))
    d = schedule(s, 0.0)
    assert len(d.bindings) == 3
    assert where(s, keys, acc) == Counter({("", "sp1", "sw1", "nvl2"): 3})
    # a gang of 5 inside one block: 6 nodes free, 3 in each block
    gang(s, "b", 5, gpus=4, topo=Request(required=(blk,)))
    d = schedule(s, 1.0)
    assert d.bindings == []
    assert (
        "the largest free network.topology.nvidia.com/block, sw0, holds 3 of its 5 pods"
        in d.unschedulable["gang ns/b"]
    )
