"""Device claims in the policy (gpuyard.scheduling.dra): the allocator's rules (count,
All, CEL selectors, matchAttribute, distinctAttribute, firstAvailable), gangs whose
claims are allocated all at once or not at all, and, as properties over random
clusters and workloads, that no device is ever allocated twice, that GPUs handed out
as the nvidia.com/gpu extended resource and as devices never add up to more than a
node has, and that claims are given back when their pods end."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuyard.scheduling import dra
from gpuyard.scheduling.policy import Memory, PolicyConfig, schedule
from gpuyard.scheduling.state import GPU, ClusterState

from .nodes import node

NS = "default"
CLIQUE = "gpu.nvidia.com/cliqueId"


def gpu_slice(
    name: str, gpus: int, product: str = "H100", cliques: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"{name}-gpu.nvidia.com"},
        "spec": {
            "driver": "gpu.nvidia.com",
            "nodeName": name,
            "pool": {"name": name, "generation": 1, "resourceSliceCount": 1},
            "devices": [
                {
                    "name": f"gpu-{i}",
                    "attributes": {
                        "type": {"string": "gpu"},
                        "productName": {"string": product},
                        "index": {"int": i},
                        "cliqueId": {"string": cliques[i] if cliques else name},
                    },
                    "capacity": {"memory": {"value": "80Gi"}},
                }
                for i in range(gpus)
            ],
        },
    }


GPU_CLASS = {
    "metadata": {"name": "gpu.nvidia.com"},
    "spec": {"selectors": [{"cel": {"expression": 'device.driver == "gpu.nvidia.com"'}}]},
}


def product_is(p: str) -> list[dict[str, Any]]:
    return [{"cel": {"expression": f'device.attributes["gpu.nvidia.com"].productName == "{p}"'}}]


def claim(
    name: str,
    count: int = 1,
    owner: str | None = None,
    selectors: list[dict[str, Any]] | None = None,
    match: str | None = None,
    mode: str = "ExactCount",
) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": NS, "uid": f"uid-{name}"}
    if owner:
        md["ownerReferences"] = [{"kind": "Pod", "name": owner, "controller": True}]
    exactly: dict[str, Any] = {"deviceClassName": "gpu.nvidia.com", "allocationMode": mode}
    if mode == "ExactCount":
        exactly["count"] = count
    if selectors:
        exactly["selectors"] = selectors
    devices: dict[str, Any] = {"requests": [{"name": "gpus", "exactly": exactly}]}
    if match:
        devices["constraints"] = [{"matchAttribute": match}]
    return {"metadata": md, "spec": {"devices": devices}}


def pod(
    name: str,
    claims: list[str] = (),  # type: ignore[assignment]
    gpus: int = 0,
    group: str | None = None,
    priority: int = 0,
) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": NS, "uid": f"uid-{name}"}
    if group:
        md["labels"] = {"scheduling.x-k8s.io/pod-group": group}
    spec: dict[str, Any] = {
        "schedulerName": "gpuyard-scheduler",
        "priority": priority,
        "containers": [
            {
                "name": "c",
                "resources": {
                    "requests": {"cpu": "1", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
                },
            }
        ],
    }
    if claims:
        spec["resourceClaims"] = [
            {"name": f"c{i}", "resourceClaimName": c} for i, c in enumerate(claims)
        ]
    return {"metadata": md, "spec": spec}


def cluster(nodes: list[tuple[str, int, str, tuple[str, ...]]]) -> ClusterState:
    s = ClusterState()
    s.set_device_class(GPU_CLASS)
    for name, gpus, product, cliques in nodes:
        s.add_node(node(name, gpus))
        s.set_resource_slice(gpu_slice(name, gpus, product, cliques))
    return s


def echo(s: ClusterState, objs: dict[str, dict[str, Any]], d: Any) -> None:
    """What the API and the informer give back after the driver wrote the claims."""
    for key, (n, rows) in d.allocations.items():
        obj = objs[key]
        obj["status"] = {
            "allocation": {
                "devices": {
                    "results": [
                        {"request": r, "driver": drv, "pool": pool, "device": dev}
                        for r, drv, pool, dev in rows
                    ]
                },
                "nodeSelector": dra.allocation_status(n, [])["nodeSelector"],
            },
            "reservedFor": [
                {"resource": "pods", "name": k.split("/")[1]} for k in d.consumers[key]
            ],
        }
        s.set_resource_claim(obj)


# ------------------------------------------------------------------ the allocator


def devices_of(s: ClusterState, name: str) -> list[dra.Device]:
    return s.dra.by_node[name]


def spec_of(obj: dict[str, Any]) -> dra.ClaimSpec:
    return dra.parse_claim(obj["spec"], {"gpu.nvidia.com": ('device.driver == "gpu.nvidia.com"',)})


def test_match_attribute_keeps_a_claim_inside_one_clique() -> None:
    s = cluster([("n0", 8, "H100", ("a", "a", "a", "b", "b", "b", "b", "b"))])
    got = dra.allocate(spec_of(claim("x", 4, match=CLIQUE)), devices_of(s, "n0"), set())
    assert got is not None and {d.attributes[CLIQUE] for _, d in got} == {"b"}
    assert dra.allocate(spec_of(claim("x", 6, match=CLIQUE)), devices_of(s, "n0"), set()) is None
    # without the constraint, any six
    assert dra.allocate(spec_of(claim("x", 6)), devices_of(s, "n0"), set()) is not None


def test_selectors_all_mode_distinct_and_first_available() -> None:
    s = cluster([("n0", 4, "A100", ()), ("n1", 4, "H100", ())])
    assert (
        dra.allocate(
            spec_of(claim("x", 1, selectors=product_is("H100"))), devices_of(s, "n0"), set()
        )
        is None
    )
    got = dra.allocate(spec_of(claim("x", mode="All")), devices_of(s, "n1"), set())
    assert got is not None and len(got) == 4
    # All fails when one matching device is taken
    taken = {devices_of(s, "n1")[0].id}
    assert dra.allocate(spec_of(claim("x", mode="All")), devices_of(s, "n1"), taken) is None
    distinct = claim("x", 3)
    distinct["spec"]["devices"]["constraints"] = [{"distinctAttribute": "gpu.nvidia.com/index"}]
    got = dra.allocate(spec_of(distinct), devices_of(s, "n1"), set())
    assert got is not None and len({d.name for _, d in got}) == 3
    first = {
        "devices": {
            "requests": [
                {
                    "name": "gpus",
                    "firstAvailable": [
                        {"name": "big", "deviceClassName": "gpu.nvidia.com", "count": 8},
                        {"name": "small", "deviceClassName": "gpu.nvidia.com", "count": 2},
                    ],
                }
            ]
        }
    }
    got = dra.allocate(spec_of({"spec": first}), devices_of(s, "n1"), set())
    assert got is not None and [r for r, _ in got] == ["gpus/small", "gpus/small"]
    # at most as many GPUs as the extended resource leaves free
    assert dra.allocate(spec_of(claim("x", 3)), devices_of(s, "n1"), set(), max_gpus=2) is None


def test_a_claim_naming_an_unknown_class_says_so() -> None:
    s = cluster([("n0", 8, "H100", ())])
    bad = claim("x", 1)
    bad["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] = "tpu"
    s.set_resource_claim(bad)
    s.add_pod(pod("p", ["x"]))
    d = schedule(s, 1.0, PolicyConfig(), Memory())
    assert not d.bindings
    assert 'DeviceClass "tpu" not found' in d.unschedulable["pod default/p"]


# ------------------------------------------------------------------ the policy


def test_a_gang_of_claims_is_allocated_all_at_once_or_not_at_all() -> None:
    s = cluster([(f"n{i}", 8, "H100" if i < 3 else "A100", ()) for i in range(4)])
    s.set_pod_group({"metadata": {"name": "g", "namespace": NS}, "spec": {"minMember": 4}})
    objs = {}
    for i in range(4):
        objs[f"{NS}/w{i}-gpus"] = c = claim(
            f"w{i}-gpus", 8, owner=f"w{i}", selectors=product_is("H100"), match=CLIQUE
        )
        s.set_resource_claim(c)
        s.add_pod(pod(f"w{i}", [f"w{i}-gpus"], group="g"))
    mem = Memory()
    d = schedule(s, 1.0, PolicyConfig(), mem)
    # only three H100 nodes: nothing is bound, nothing allocated, nothing held
    assert not d.bindings and not d.allocations
    assert "cannot allocate all claims" in d.unschedulable["gang default/g"]
    assert not s.dra.taken and not s.dra.held and not s.dra.tentative
    assert all(n.alloc[GPU] == 8 and n.used[GPU] == 0 for n in s.nodes.values())
    s.add_node(node("n4", 8))
    s.set_resource_slice(gpu_slice("n4", 8, "H100"))
    d = schedule(s, 2.0, PolicyConfig(), mem)
    assert len(d.bindings) == 4 and len(d.allocations) == 4
    assert {n for _, n in d.bindings} == {"n0", "n1", "n2", "n4"}
    for key, (n, rows) in d.allocations.items():
        assert len(rows) == 8 and all(pool == n for _, _, pool, _ in rows)
        assert d.consumers[key] == [key.replace("-gpus", "")]
    echo(s, objs, d)
    assert all(s.nodes[n].used[GPU] == 8 for n in ("n0", "n1", "n2", "n4"))


def test_a_nodes_devices_follow_its_slices_as_they_come_move_and_go() -> None:
    """Each node offers the devices of its own slices only, through slices added to it,
    moved to another node and deleted; a claim then allocates from what is left."""
    s = cluster([("n0", 4, "H100", ()), ("n1", 4, "H100", ())])
    s.add_node(node("n2", 8))
    extra = gpu_slice("n0", 2, "A100")
    extra["metadata"]["name"] = "n0-more"
    extra["spec"]["pool"]["name"] = "n0-more"
    extra["spec"]["devices"] = [
        dict(d, name=f"more-{i}") for i, d in enumerate(extra["spec"]["devices"])
    ]
    s.set_resource_slice(extra)

    def names(n: str) -> list[str]:
        return [d.name for d in s.dra.by_node.get(n, [])]

    assert names("n0") == ["gpu-0", "gpu-1", "gpu-2", "gpu-3", "more-0", "more-1"]
    assert names("n1") == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    moved = dict(extra, spec=dict(extra["spec"], nodeName="n2"))
    s.set_resource_slice(moved)  # the same slice, now on n2
    assert names("n0") == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"] and names("n2") == [
        "more-0",
        "more-1",
    ]
    assert s.dra.by_id[("gpu.nvidia.com", "n0-more", "more-1")].node == "n2"
    s.remove_resource_slice("n0-gpu.nvidia.com")
    assert names("n0") == [] and ("gpu.nvidia.com", "n0", "gpu-0") not in s.dra.by_id
    s.set_resource_claim(claim("c", 2, owner="p", selectors=product_is("A100")))
    s.add_pod(pod("p", ["c"]))
    d = schedule(s, 1.0, PolicyConfig(), Memory())
    assert d.bindings == [(f"{NS}/p", "n2")]
    assert sorted(dev for _, _, _, dev in d.allocations[f"{NS}/c"][1]) == ["more-0", "more-1"]


def test_no_device_is_read_until_a_claim_is_known(monkeypatch: Any) -> None:
    """A cluster that publishes every node's GPUs but schedules no claim never reads a
    device (7,500 slices cost the scheduler's start seconds); the first claim reads them,
    in the order the slices came, and slices then are read as they come."""
    read: list[str] = []
    real = dra.slice_devices

    def counted(obj: Any) -> Any:
        read.append(obj["metadata"]["name"])
        return real(obj)

    monkeypatch.setattr(dra, "slice_devices", counted)
    s = cluster([(f"n{i}", 8, "H100", ()) for i in range(4)])
    s.remove_resource_slice("n3-gpu.nvidia.com")
    s.add_pod(pod("plain", gpus=1))
    d = schedule(s, 1.0, PolicyConfig(), Memory())
    assert len(d.bindings) == 1 and read == []
    s.set_resource_claim(claim("c", 8, owner="p", selectors=product_is("H100")))
    assert read == ["n0-gpu.nvidia.com", "n1-gpu.nvidia.com", "n2-gpu.nvidia.com"]
    s.add_node(node("n4", 8))
    s.set_resource_slice(gpu_slice("n4", 8, "H100"))
    assert read[-1] == "n4-gpu.nvidia.com"
    s.add_pod(pod("p", ["c"]))
    d = schedule(s, 2.0, PolicyConfig(), Memory())
    assert [k for k, _ in d.bindings] == [f"{NS}/p"] and f"{NS}/c" in d.allocations


def test_only_a_pools_newest_generation_is_offered_and_all_waits_for_a_whole_pool() -> None:
    """A driver updating its pool publishes a new generation: the old generation's
    slices are ignored even while they still exist; a pool with fewer slices of its
    newest generation than its resourceSliceCount is incomplete, so a request for all
    its devices waits (with the reason) while a counted request may use what is there."""
    s = cluster([("n0", 4, "H100", ())])
    s.add_node(node("n1", 8))
    s.set_resource_slice(gpu_slice("n1", 8, "H100"))
    # n0's pool, generation 2: its H100s are now A100s, in two slices, one published
    new = gpu_slice("n0", 2, "A100")
    new["metadata"]["name"] = "n0-gen2-a"
    new["spec"]["pool"] = {"name": "n0", "generation": 2, "resourceSliceCount": 2}
    s.set_resource_slice(new)
    assert [d.name for d in s.dra.by_node["n0"]] == ["gpu-0", "gpu-1"]
    assert {d.attributes["gpu.nvidia.com/productName"] for d in s.dra.by_node["n0"]} == {"A100"}
    objs = {
        f"{NS}/old": claim("old", 4, owner="p-old", selectors=product_is("H100")),
        f"{NS}/every": claim("every", mode="All", owner="p-all", selectors=product_is("A100")),
        f"{NS}/one": claim("one", 1, owner="p-one", selectors=product_is("A100")),
    }
    for c in objs.values():
        s.set_resource_claim(c)
    s.add_pod(pod("p-old", ["old"]))
    s.add_pod(pod("p-all", ["every"]))
    s.add_pod(pod("p-one", ["one"]))
    mem = Memory()
    d = schedule(s, 1.0, PolicyConfig(), mem)
    # the H100 claim goes to n1: n0's generation-1 H100s are not offered
    assert dict(d.bindings) == {f"{NS}/p-old": "n1", f"{NS}/p-one": "n0"}
    assert {pool for _, _, pool, _ in d.allocations[f"{NS}/old"][1]} == {"n1"}
    assert "a resource pool is being updated" in d.unschedulable["pod default/p-all"]
    echo(s, objs, d)
    # the second slice of generation 2 completes the pool: "all" is known now
    rest = gpu_slice("n0", 4, "A100")
    rest["metadata"]["name"] = "n0-gen2-b"
    rest["spec"]["pool"] = {"name": "n0", "generation": 2, "resourceSliceCount": 2}
    rest["spec"]["devices"] = rest["spec"]["devices"][2:]
    s.set_resource_slice(rest)
    assert [d.name for d in s.dra.by_node["n0"]] == ["gpu-0", "gpu-1", "gpu-2", "gpu-3"]
    d = schedule(s, 2.0, PolicyConfig(), mem)
    assert not d.bindings  # one A100 is taken by p-one: All cannot have them all
    s.remove_resource_claim(f"{NS}/one")
    s.remove_pod(f"{NS}/p-one")
    d = schedule(s, 3.0, PolicyConfig(), mem)
    assert d.bindings == [(f"{NS}/p-all", "n0")]
    assert sorted(dev for _, _, _, dev in d.allocations[f"{NS}/every"][1]) == [
        "gpu-0",
        "gpu-1",
        "gpu-2",
        "gpu-3",
    ]
    # the stale generation-1 slice going away changes nothing
    s.remove_resource_slice("n0-gpu.nvidia.com")
    assert len(s.dra.by_node["n0"]) == 4


def test_claims_that_fit_only_with_a_choice_other_than_the_first_are_found(
    monkeypatch: Any,
) -> None:
    """A node of two NVLink cliques, 4 GPUs and 2: a pod's first claim wants 2 GPUs of
    one clique, its second 4 of one. Each taking its first fit, the first takes the
    4-GPU clique and the second finds none; the search puts the first in the 2-GPU
    clique. With the search's work capped below what it needs, the pod waits with the
    reason that it gave up."""

    def setup() -> ClusterState:
        s = cluster([("n0", 6, "H100", ("a", "a", "a", "a", "b", "b"))])
        s.set_resource_claim(claim("small", 2, owner="p", match=CLIQUE))
        s.set_resource_claim(claim("big", 4, owner="p", match=CLIQUE))
        s.add_pod(pod("p", ["small", "big"]))
        return s

    s = setup()
    d = schedule(s, 1.0, PolicyConfig(), Memory())
    assert d.bindings == [(f"{NS}/p", "n0")]
    clique = {d.name: d.attributes[CLIQUE] for d in s.dra.by_node["n0"]}
    assert {clique[dev] for _, _, _, dev in d.allocations[f"{NS}/small"][1]} == {"b"}
    assert {clique[dev] for _, _, _, dev in d.allocations[f"{NS}/big"][1]} == {"a"}
    monkeypatch.setattr(dra, "SEARCH_TRIES", 2)
    s = setup()
    d = schedule(s, 1.0, PolicyConfig(), Memory())
    assert not d.bindings
    assert "the search gave up after 2 tries" in d.unschedulable[f"pod {NS}/p"]


def test_a_claim_shared_by_a_gang_is_allocated_once_and_pins_it() -> None:
    s = cluster([("n0", 8, "H100", ()), ("n1", 8, "H100", ())])
    s.set_pod_group({"metadata": {"name": "g", "namespace": NS}, "spec": {"minMember": 3}})
    s.set_resource_claim(claim("shared", 2))
    for i in range(3):
        s.add_pod(pod(f"w{i}", ["shared"], gpus=2, group="g"))
    d = schedule(s, 1.0, PolicyConfig(), Memory())
    assert len(d.bindings) == 3 and len({n for _, n in d.bindings}) == 1
    assert list(d.allocations) == [f"{NS}/shared"] and len(d.allocations[f"{NS}/shared"][1]) == 2
    assert sorted(d.consumers[f"{NS}/shared"]) == [f"{NS}/w{i}" for i in range(3)]
    n = s.nodes[d.bindings[0][1]]
    # 2 devices for the claim and 3 x 2 extended-resource GPUs: all 8 of the node
    assert n.alloc[GPU] - n.used[GPU] == 0


def test_extended_resources_and_claims_never_book_one_gpu_twice() -> None:
    s = cluster([("n0", 8, "H100", ())])
    s.add_pod(pod("ext", gpus=6))
    d = schedule(s, 1.0, PolicyConfig(), Memory())
    assert d.bindings == [(f"{NS}/ext", "n0")]
    s.set_resource_claim(claim("three", 3, owner="dra"))
    s.add_pod(pod("dra", ["three"]))
    s.set_resource_claim(claim("two"))
    s.add_pod(pod("dra2", ["two"]))
    d = schedule(s, 2.0, PolicyConfig(), Memory())
    # 2 GPUs are left: the 3-device claim waits; a claim not of the pod's own counts too
    assert [b[0] for b in d.bindings] == [f"{NS}/dra2"]
    assert (
        "cannot allocate all claims" in d.unschedulable["pod default/dra"]
        or "lack" in d.unschedulable["pod default/dra"]
    )
    s.add_pod(pod("ext2", gpus=1))
    d = schedule(s, 3.0, PolicyConfig(), Memory())
    assert [b[0] for b in d.bindings] == [f"{NS}/ext2"]
    s.add_pod(pod("ext3", gpus=1))
    d = schedule(s, 4.0, PolicyConfig(), Memory())
    assert not d.bindings


# ------------------------------------------------------------------ properties

node_specs = st.lists(
    st.tuples(st.sampled_from([4, 8]), st.sampled_from(["H100", "A100"]), st.booleans()),
    min_size=1,
    max_size=5,
)
work = st.lists(
    st.tuples(
        st.sampled_from(["ext", "claim", "shared", "gang"]),
        st.integers(1, 8),
        st.sampled_from([None, "H100", "A100"]),
        st.booleans(),  # matchAttribute on the clique
        st.sampled_from([0, 0, 100]),  # priority: the high ones preempt the others
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    node_specs, work, st.lists(st.integers(0, 30), max_size=30), st.randoms(use_true_random=False)
)
def test_no_device_is_allocated_twice_and_claims_are_released(
    nodes: list[tuple[int, str, bool]],
    jobs: list[tuple[str, int, str | None, bool, int]],
    ends: list[int],
    rnd: Any,
) -> None:
    s = cluster(
        [
            (f"n{i}", g, prod, tuple("ab"[j * 2 // g] for j in range(g)) if split else ())
            for i, (g, prod, split) in enumerate(nodes)
        ]
    )
    raw = {f"n{i}": g for i, (g, _, _) in enumerate(nodes)}
    objs: dict[str, dict[str, Any]] = {}
    ext: dict[str, int] = {}
    mem = Memory()
    live: list[str] = []

    def add(j: int, kind: str, k: int, prod: str | None, match: bool, prio: int) -> None:
        sel = product_is(prod) if prod else None
        m = CLIQUE if match else None
        if kind == "ext":
            s.add_pod(pod(f"e{j}", gpus=k, priority=prio))
            ext[f"{NS}/e{j}"] = k
            live.append(f"{NS}/e{j}")
        elif kind == "claim":
            objs[f"{NS}/c{j}"] = c = claim(f"c{j}", k, owner=f"p{j}", selectors=sel, match=m)
            s.set_resource_claim(c)
            s.add_pod(pod(f"p{j}", [f"c{j}"], priority=prio))
            live.append(f"{NS}/p{j}")
        elif kind == "shared":
            objs[f"{NS}/s{j}"] = c = claim(f"s{j}", min(k, 4), selectors=sel, match=m)
            s.set_resource_claim(c)
            for i in range(2):
                s.add_pod(pod(f"s{j}-{i}", [f"s{j}"], priority=prio))
                live.append(f"{NS}/s{j}-{i}")
        else:
            s.set_pod_group(
                {"metadata": {"name": f"g{j}", "namespace": NS}, "spec": {"minMember": 2}}
            )
            for i in range(2):
                objs[f"{NS}/g{j}-{i}"] = c = claim(
                    f"g{j}-{i}", k, owner=f"g{j}-{i}p", selectors=sel, match=m
                )
                s.set_resource_claim(c)
                s.add_pod(pod(f"g{j}-{i}p", [f"g{j}-{i}"], group=f"g{j}", priority=prio))
                live.append(f"{NS}/g{j}-{i}p")

    def check() -> None:
        seen: dict[tuple[str, str, str], str] = {}
        gpus_on: dict[str, int] = {}
        for key, c in s.dra.claims.items():
            if c.results is None:
                continue
            for _, dev in c.results:
                assert dev.id not in seen, f"{dev.id} allocated to {seen[dev.id]} and {key}"
                seen[dev.id] = key
                assert dev.node == c.node
                gpus_on[c.node or ""] = gpus_on.get(c.node or "", 0) + 1
            spec = c.spec
            assert spec is not None
            for r, dev in c.results:
                alt = next(a for req in spec.requests for a in req.alternatives if a.name == r)
                assert all(dra.matches(src, dev) for src in alt.selectors)
            for con in spec.constraints:
                assert len({repr(dev.attributes.get(con.attribute)) for _, dev in c.results}) == 1
            for pk in s.claim_pods.get(key, ()):
                p = s.pods.get(pk)
                if p is not None and p.node is not None:
                    assert p.node == c.node
        for name, n in s.nodes.items():
            ext_used = sum(ext.get(q.key, 0) for q in n.pods.values())
            assert ext_used + gpus_on.get(name, 0) <= raw[name]
            assert n.alloc[GPU] == raw[name]
            assert n.dra_gpus == gpus_on.get(name, 0) <= n.used[GPU] <= n.alloc[GPU]

    def end(pk: str) -> None:
        """A pod ends: it leaves the state, and the claim controller's work follows."""
        p = s.pods.get(pk)
        if p is None:
            return
        claims = p.claims
        s.remove_pod(pk)
        live.remove(pk)
        for key in claims:
            c = s.dra.claims.get(key)
            if c is None:
                continue
            if c.owner_pod == pk:
                s.remove_resource_claim(key)
            elif not any(q in s.pods and s.pods[q].node for q in s.claim_pods.get(key, ())):
                obj = dict(objs[key])
                obj["status"] = {}
                objs[key] = obj
                s.set_resource_claim(obj)

    def evict(d: Any) -> None:
        """The driver evicts the victims of preemption: they end too."""
        for ev in d.evictions:
            end(ev.pod)

    for j, job in enumerate(jobs):
        if not job[4]:
            add(j, *job)
    t = 1.0
    d = schedule(s, t, PolicyConfig(), mem)
    echo(s, objs, d)
    check()
    evict(d)
    # the high-priority work comes while the rest runs: it preempts what it must
    for j, job in enumerate(jobs):
        if job[4]:
            add(j, *job)
    t += 1.0
    d = schedule(s, t, PolicyConfig(), mem)
    echo(s, objs, d)
    check()
    evict(d)
    for e in ends:
        if not live:
            break
        end(live[e % len(live)])
        t += 1.0
        d = schedule(s, t, PolicyConfig(), mem)
        echo(s, objs, d)
        check()
        evict(d)
    for pk in list(live):
        end(pk)
    schedule(s, t + 1, PolicyConfig(), mem)
    assert not any(c.results for c in s.dra.claims.values())
    assert not s.dra.taken and not s.dra.gpus_taken
    assert all(n.alloc[GPU] == raw[name] and n.used[GPU] == 0 for name, n in s.nodes.items())


# ------------------------------------------------------------------ preemption


def test_a_gang_with_claims_preempts_lower_priority_pods_holding_devices() -> None:
    """A high-priority gang whose pods claim 8 devices each evicts a lower-priority
    gang holding the devices in its claims (and a pod holding GPUs as the extended
    resource), the way a gang of extended-resource pods does; once the victims are
    gone and their claims given back, its claims get those devices."""
    s = cluster([(f"n{i}", 8, "H100", ()) for i in range(3)])
    objs: dict[str, dict[str, Any]] = {}
    mem = Memory()

    def gang(name: str, size: int, priority: int) -> None:
        s.set_pod_group({"metadata": {"name": name, "namespace": NS}, "spec": {"minMember": size}})
        for i in range(size):
            key = f"{name}{i}-gpus"
            objs[f"{NS}/{key}"] = c = claim(key, 8, owner=f"{name}{i}", match=CLIQUE)
            s.set_resource_claim(c)
            p = pod(f"{name}{i}", [key], group=name)
            p["spec"]["priority"] = priority
            s.add_pod(p)

    gang("low", 2, 1)
    ext = pod("ext", gpus=8)
    ext["spec"]["priority"] = 1
    s.add_pod(ext)
    d = schedule(s, 1.0, PolicyConfig(), mem)
    assert len(d.bindings) == 3 and len(d.allocations) == 2
    echo(s, objs, d)
    held = dict(s.dra.taken)
    assert len(held) == 16

    gang("high", 3, 100)
    d = schedule(s, 2.0, PolicyConfig(), mem)
    assert sorted(e.pod for e in d.evictions) == [f"{NS}/ext", f"{NS}/low0", f"{NS}/low1"]
    assert sorted(d.nominations.values()) == ["n0", "n1", "n2"]
    nominated = dict(d.nominations)
    assert not d.bindings and not d.allocations
    # the trial gave nothing back for good: the victims' devices are still theirs
    assert s.dra.taken == held and not s.dra.trial_freed and not s.dra.held
    assert all(n.used[GPU] == 8 for n in s.nodes.values())

    for k in ("low0", "low1", "ext"):  # the victims go, their claims with them
        s.remove_pod(f"{NS}/{k}")
    for k in ("low0-gpus", "low1-gpus"):
        s.remove_resource_claim(f"{NS}/{k}")
    d = schedule(s, 3.0, PolicyConfig(), mem)
    # each pod goes where it was nominated, its claim given that node's 8 devices
    assert sorted(d.bindings) == sorted(nominated.items())
    assert {k: n for k, (n, _) in d.allocations.items()} == {
        f"{k}-gpus": n for k, n in nominated.items()
    }
    for n, rows in d.allocations.values():
        assert len(rows) == 8 and {pool for _, _, pool, _ in rows} == {n}
