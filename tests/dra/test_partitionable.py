"""Partitionable devices in the policy (gpuyard.scheduling.dra): the MIG slices a
simulated H200 node publishes draw on their GPU's shared counters, so slices fill a GPU
up to its counters and no further, a whole GPU is never handed out beside its own
slices, GPUs with slices count as taken for the nvidia.com/gpu extended resource, and
what a claim drew comes back when it is released. As a property over random work
(whole GPUs, slices of every profile, extended-resource pods, gangs, preemption, pods
ending): no counter is ever over-consumed and no GPU is handed out twice."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuyard.cluster import simdevices
from gpuyard.cluster.shapes import NodeShape
from gpuyard.scheduling import dra
from gpuyard.scheduling.policy import Memory, PolicyConfig, schedule
from gpuyard.scheduling.state import GPU, ClusterState
from tests.scheduling.test_dra import NS, echo, node, pod

H200 = "NVIDIA-H200-141GB-HBM3"
PROFILE = "gpu.nvidia.com/profile"
PARENT = "gpu.nvidia.com/parentIndex"


def mig_cluster(names: list[str], gpus: int = 8) -> ClusterState:
    s = ClusterState()
    s.set_device_class(simdevices.device_class())
    s.set_device_class(simdevices.mig_device_class())
    for name in names:
        s.add_node(node(name, gpus))
        shape = NodeShape(name, 96_000, 2**40, gpus, H200, mig=True)
        for sl in simdevices.resource_slices(shape, mig=True):
            s.set_resource_slice(sl)
    return s


def claim(name: str, owner: str, profile: str | None = None, count: int = 1) -> dict[str, Any]:
    """A claim for `count` whole GPUs, or MIG slices of a profile."""
    exactly: dict[str, Any] = {"deviceClassName": dra.GPU_CLASS, "count": count}
    if profile:
        exactly["deviceClassName"] = dra.MIG_CLASS
        exactly["selectors"] = [
            {"cel": {"expression": f'device.attributes["gpu.nvidia.com"].profile == "{profile}"'}}
        ]
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "ownerReferences": [{"kind": "Pod", "name": owner, "controller": True}],
        },
        "spec": {"devices": {"requests": [{"name": "r", "exactly": exactly}]}},
    }


def parents(s: ClusterState, key: str) -> list[Any]:
    c = s.dra.claims[key]
    assert c.results is not None
    return [
        d.attributes.get(PARENT, d.attributes.get("gpu.nvidia.com/index")) for _, d in c.results
    ]


def test_slices_fill_a_gpu_and_a_whole_gpu_never_lands_beside_them() -> None:
    s = mig_cluster(["n0"])
    objs: dict[str, dict[str, Any]] = {}
    mem = Memory()

    def add(name: str, profile: str | None = None, count: int = 1, gpus: int = 0) -> None:
        if gpus:
            s.add_pod(pod(name, gpus=gpus))
            return
        objs[f"{NS}/{name}-c"] = c = claim(f"{name}-c", name, profile, count)
        s.set_resource_claim(c)
        s.add_pod(pod(name, [f"{name}-c"]))

    t = [0.0]

    def run() -> Any:
        t[0] += 1
        d = schedule(s, t[0], PolicyConfig(), mem)
        echo(s, objs, d)
        return d

    for i in range(7):
        add(f"small{i}", "1g.18gb")
    d = run()
    assert len(d.bindings) == 7
    # seven 1g slices are all of GPU 0's compute: they share it, and it is one GPU taken
    assert {p for i in range(7) for p in parents(s, f"{NS}/small{i}-c")} == {0}
    n = s.nodes["n0"]
    assert n.dra_gpus == 1 and n.used[GPU] == 1
    add("small7", "1g.18gb")
    add("whole", count=1)
    d = run()
    assert len(d.bindings) == 2
    assert parents(s, f"{NS}/small7-c") == [1]
    assert parents(s, f"{NS}/whole-c") == [2]
    assert n.dra_gpus == 3
    # a 3g slice fits beside the 1g on GPU 1 (4 of 7 compute slices, 5 of 8 memory)
    add("mid", "3g.71gb")
    d = run()
    assert parents(s, f"{NS}/mid-c") == [1] and n.dra_gpus == 3
    # 5 whole GPUs are left: 6 cannot be had, as devices or as the extended resource
    add("six", count=6)
    add("ext6", gpus=6)
    d = run()
    assert not d.bindings
    add("ext5", gpus=5)
    d = run()
    assert [b[0] for b in d.bindings] == [f"{NS}/ext5"]
    assert n.used[GPU] == 8
    # every GPU is taken now; a slice still fits on GPU 1 (2g: 6 of 7, 7 of 8)
    s.remove_pod(f"{NS}/six")
    s.remove_pod(f"{NS}/ext6")
    add("two", "2g.35gb")
    add("one", "1g.18gb")
    d = run()
    assert sorted(b[0] for b in d.bindings) == [f"{NS}/one", f"{NS}/two"]
    assert parents(s, f"{NS}/two-c") == [1]
    # GPU 1 has no compute left (1 + 3 + 2 = 6 of 7, memory 1 + 4 + 2 = 7 of 8): one
    # more 1g fits there, and nothing else anywhere
    assert parents(s, f"{NS}/one-c") == [1]
    add("one-more", "1g.18gb")
    d = run()
    assert not d.bindings and n.used[GPU] == 8

    # the slices of GPU 0 go: their counters come back, and GPU 0 is free again
    for i in range(7):
        s.remove_pod(f"{NS}/small{i}")
        s.remove_resource_claim(f"{NS}/small{i}-c")
    assert n.dra_gpus == 2 and n.used[GPU] == 7
    assert (simdevices.dra.DRIVER, "n0", "gpu-0") not in s.dra.consumed
    d = run()
    assert [b[0] for b in d.bindings] == [f"{NS}/one-more"]
    assert parents(s, f"{NS}/one-more-c") == [0]


def test_a_slice_whose_counter_set_is_not_published_is_never_allocated() -> None:
    """Devices drawing on counters no slice offers cannot be allocated (kube's rule):
    until the pool's counters slice arrives, slices wait; then they are allocated."""
    s = ClusterState()
    s.set_device_class(simdevices.device_class())
    s.set_device_class(simdevices.mig_device_class())
    s.add_node(node("n0", 8))
    shape = NodeShape("n0", 96_000, 2**40, 8, H200, mig=True)
    counters, *device_slices = simdevices.resource_slices(shape, mig=True)
    for sl in device_slices:
        s.set_resource_slice(sl)
    objs = {f"{NS}/a-c": claim("a-c", "a", "1g.18gb")}
    s.set_resource_claim(objs[f"{NS}/a-c"])
    s.add_pod(pod("a", ["a-c"]))
    d = schedule(s, 1.0, PolicyConfig(), Memory())
    assert not d.bindings and "cannot allocate all claims" in d.unschedulable["pod default/a"]
    s.set_resource_slice(counters)
    d = schedule(s, 2.0, PolicyConfig(), Memory())
    assert d.bindings == [(f"{NS}/a", "n0")]


def test_a_claim_seen_before_its_slices_holds_its_counters_once_they_arrive() -> None:
    """A restarted scheduler may read an allocated claim before the slices of its
    devices: once they arrive, the claim's devices draw on their counters, so a whole
    GPU is not handed out beside the slice."""
    s = ClusterState()
    s.set_device_class(simdevices.device_class())
    s.set_device_class(simdevices.mig_device_class())
    s.add_node(node("n0", 2))
    c = claim("a-c", "a", "7g.141gb")
    c["status"] = {
        "allocation": {
            "devices": {
                "results": [
                    {
                        "request": "r",
                        "driver": "gpu.nvidia.com",
                        "pool": "n0",
                        "device": "gpu-0-mig-7g-141gb-0",
                    }
                ]
            },
            "nodeSelector": dra.allocation_status("n0", [])["nodeSelector"],
        },
        "reservedFor": [{"resource": "pods", "name": "a"}],
    }
    s.set_resource_claim(c)
    shape = NodeShape("n0", 96_000, 2**40, 2, H200, mig=True)
    for sl in simdevices.resource_slices(shape, mig=True):
        s.set_resource_slice(sl)
    assert s.nodes["n0"].used[GPU] == 1
    assert s.dra.consumed[("gpu.nvidia.com", "n0", "gpu-0")] == {
        "compute-slices": 7.0,
        "memory-slices": 8.0,
    }
    objs = {f"{NS}/b-c": claim("b-c", "b", count=1)}
    s.set_resource_claim(objs[f"{NS}/b-c"])
    s.add_pod(pod("b", ["b-c"]))
    d = schedule(s, 1.0, PolicyConfig(), Memory())
    assert d.bindings == [(f"{NS}/b", "n0")]
    echo(s, objs, d)
    assert parents(s, f"{NS}/b-c") == [1]


# ------------------------------------------------------------------ the property

PROFILES = ["1g.18gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"]
work = st.lists(
    st.tuples(
        st.sampled_from(["whole", "mig", "mig", "ext", "gang"]),
        st.integers(1, 4),  # whole GPUs, extended GPUs, or slices in one claim
        st.sampled_from(PROFILES),
        st.sampled_from([0, 0, 100]),  # priority: the high ones preempt the others
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 3), st.sampled_from([2, 8]), work, st.lists(st.integers(0, 40), max_size=20))
def test_no_counter_is_over_consumed_and_no_gpu_is_handed_out_twice(
    n_nodes: int, gpus: int, jobs: list[tuple[str, int, str, int]], ends: list[int]
) -> None:
    s = mig_cluster([f"n{i}" for i in range(n_nodes)], gpus)
    objs: dict[str, dict[str, Any]] = {}
    ext: dict[str, int] = {}
    live: list[str] = []
    mem = Memory()
    caps = dict(s.dra.caps)
    assert len(caps) == n_nodes * gpus

    def add(j: int, kind: str, k: int, profile: str, prio: int) -> None:
        if kind == "ext":
            s.add_pod(pod(f"e{j}", gpus=k, priority=prio))
            ext[f"{NS}/e{j}"] = k
            live.append(f"{NS}/e{j}")
            return
        members = 2 if kind == "gang" else 1
        if kind == "gang":
            s.set_pod_group(
                {"metadata": {"name": f"g{j}", "namespace": NS}, "spec": {"minMember": 2}}
            )
        for i in range(members):
            name = f"p{j}-{i}"
            prof = None if kind == "whole" else profile
            objs[f"{NS}/{name}-c"] = c = claim(
                f"{name}-c", name, prof, k if prof is None else min(k, 2)
            )
            s.set_resource_claim(c)
            p = pod(name, [f"{name}-c"], group=f"g{j}" if kind == "gang" else None, priority=prio)
            s.add_pod(p)
            live.append(f"{NS}/{name}")

    def check() -> None:
        drawn: dict[Any, dict[str, float]] = {}
        seen: set[Any] = set()
        occupied: dict[str, set[Any]] = {}
        for key, c in s.dra.claims.items():
            if c.results is None:
                continue
            for _, d in c.results:
                assert d.id not in seen, f"{d.id} allocated twice"
                seen.add(d.id)
                for sk, amounts in d.consumes:
                    m = drawn.setdefault(sk, {})
                    for cn, v in amounts:
                        m[cn] = m.get(cn, 0.0) + v
                    occupied.setdefault(c.node or "", set()).add(sk)
            for pk in s.claim_pods.get(key, ()):
                p = s.pods.get(pk)
                if p is not None and p.node is not None:
                    assert p.node == c.node
        for sk, m in drawn.items():
            for cn, v in m.items():
                assert v <= caps[sk][cn], f"{sk} {cn}: {v} drawn of {caps[sk][cn]}"
        for name, n in s.nodes.items():
            ext_used = sum(ext.get(q.key, 0) for q in n.pods.values())
            # the GPUs with devices allocated and the extended-resource GPUs: at most all
            assert len(occupied.get(name, ())) + ext_used <= gpus
            assert n.dra_gpus == len(occupied.get(name, ()))
            assert n.alloc[GPU] == gpus and 0 <= n.used[GPU] <= gpus

    def end(pk: str) -> None:
        p = s.pods.get(pk)
        if p is None:
            return
        claims = p.claims
        s.remove_pod(pk)
        live.remove(pk)
        for key in claims:
            s.remove_resource_claim(key)

    t = 0.0

    def run() -> None:
        nonlocal t
        t += 1.0
        d = schedule(s, t, PolicyConfig(), mem)
        echo(s, objs, d)
        check()
        for ev in d.evictions:
            end(ev.pod)

    for j, job in enumerate(jobs):
        if not job[3]:
            add(j, *job)
    run()
    for j, job in enumerate(jobs):
        if job[3]:
            add(j, *job)
    run()
    for e in ends:
        if not live:
            break
        end(live[e % len(live)])
        run()
    for pk in list(live):
        end(pk)
    run()
    assert not s.dra.taken and not s.dra.consumed and not s.dra.unit_refs
    assert all(n.used[GPU] == 0 for n in s.nodes.values())


# ------------------------------------------------------------------ compatibility groups


def test_devices_on_one_counter_set_go_together_only_when_their_groups_agree() -> None:
    """compatibilityGroups: devices drawing on one counter set are co-allocated only
    when all have no groups or their groups share one; other sets are not compared."""
    s = ClusterState()
    s.set_device_class(
        {"metadata": {"name": "any"}, "spec": {"selectors": [{"cel": {"expression": "true"}}]}}
    )
    s.add_node(node("n0", 8))
    draws = {"a": ["x"], "b": ["y"], "c": ["x", "y"], "d": None, "e": None, "f": ["z"]}

    def dev(name: str, groups: list[str] | None) -> dict[str, Any]:
        cc: dict[str, Any] = {
            "counterSet": "other" if name == "f" else "set",
            "counters": {"units": {"value": "1"}},
        }
        if groups is not None:
            cc["compatibilityGroups"] = groups
        return {
            "name": name,
            "attributes": {"type": {"string": "fpga"}, "letter": {"string": name}},
            "consumesCounters": [cc],
        }

    pool = {"name": "n0", "generation": 1, "resourceSliceCount": 2}
    s.set_resource_slice(
        {
            "metadata": {"name": "n0-counters"},
            "spec": {
                "driver": "fpga.example.com",
                "nodeName": "n0",
                "pool": pool,
                "sharedCounters": [
                    {"name": "set", "counters": {"units": {"value": "10"}}},
                    {"name": "other", "counters": {"units": {"value": "10"}}},
                ],
            },
        }
    )
    s.set_resource_slice(
        {
            "metadata": {"name": "n0-devices"},
            "spec": {
                "driver": "fpga.example.com",
                "nodeName": "n0",
                "pool": pool,
                "devices": [dev(k, v) for k, v in draws.items()],
            },
        }
    )
    objs: dict[str, dict[str, Any]] = {}
    mem = Memory()
    t = [0.0]

    def want(letter: str) -> list[str]:
        """Schedule a pod claiming the device of that letter; the pods bound."""
        key = f"{NS}/{letter}-c"
        objs[key] = c = {
            "metadata": {
                "name": f"{letter}-c",
                "namespace": NS,
                "uid": f"uid-{letter}",
                "ownerReferences": [{"kind": "Pod", "name": letter, "controller": True}],
            },
            "spec": {
                "devices": {
                    "requests": [
                        {
                            "name": "r",
                            "exactly": {
                                "deviceClassName": "any",
                                "selectors": [
                                    {
                                        "cel": {
                                            "expression": 'device.attributes["fpga.example.com"]'
                                            f'.letter == "{letter}"'
                                        }
                                    }
                                ],
                            },
                        }
                    ]
                }
            },
        }
        s.set_resource_claim(c)
        s.add_pod(pod(letter, [f"{letter}-c"]))
        t[0] += 1
        d = schedule(s, t[0], PolicyConfig(), mem)
        echo(s, objs, d)
        return [b[0] for b in d.bindings]

    assert want("a") == [f"{NS}/a"]
    assert want("b") == []  # x and y share nothing
    s.remove_pod(f"{NS}/b")
    assert want("d") == []  # no groups: never beside a device with groups
    s.remove_pod(f"{NS}/d")
    assert want("c") == [f"{NS}/c"]  # x in common
    assert want("f") == [f"{NS}/f"]  # another counter set: not compared
    # a and c go: the set is free again, and devices without groups go together
    for k in ("a", "c"):
        s.remove_pod(f"{NS}/{k}")
        s.remove_resource_claim(f"{NS}/{k}-c")
    assert want("d") == [f"{NS}/d"]
    assert want("e") == [f"{NS}/e"]
