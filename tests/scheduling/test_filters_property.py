"""No binding the policy makes is one the kubelet would refuse.

Random nodes (random allocatable, extended resources and hugepages included, labels,
taints) and random pods (random requests of every kind, node selectors, required node
affinity with every operator and matchFields, tolerations) go through the policy as
Kubernetes objects. Every binding is then checked by a checker written here from the
kubelet's admission rules, independently of gpuyard.scheduling.filters and of
gpuyard.kube.objects: each resource's requests summed over the node's pods within its
allocatable, host ports bound once per node (per protocol, on one address or all), the
node selector and required node affinity, NoSchedule and NoExecute taints tolerated. A pod asking for a resource no node has waits with a reason naming it.
The simulated kubelet's own admission (gpuyard.cluster.admission, what `gpuyard up`'s
nodes run before starting a pod) admits every binding too, in the order they were made.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from gpuyard import names
from gpuyard.cluster.admission import admit, pod_ports
from gpuyard.kube import objects as o
from gpuyard.scheduling.policy import schedule
from gpuyard.scheduling.state import ClusterState

EXTRA = ("nvidia.com/mig-1g.10gb", "rdma/hca", "hugepages-2Mi", "ephemeral-storage")
KEYS = ("pool", "gen", "zone")

# ------------------------------------------------------------------ the independent checker


def _qty(v: Any) -> int:
    """Quantities as this test writes them: cpu as '<n>m' (milli-cpu), the rest plain
    integers."""
    s = str(v)
    return int(s[:-1]) if s.endswith("m") else int(s)


def requests_of(pod: dict[str, Any]) -> dict[str, int]:
    total: dict[str, int] = {}
    for c in pod["spec"]["containers"]:
        for k, v in (c.get("resources") or {}).get("requests", {}).items():
            total[k] = total.get(k, 0) + _qty(v)
    total["pods"] = 1
    return total


def _expr_ok(e: dict[str, Any], value: str | None) -> bool:
    op, vals = e["operator"], e.get("values") or []
    if op == "In":
        return value is not None and value in vals
    if op == "NotIn":
        return value is None or value not in vals
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if value is None or not value.lstrip("-").isdigit():
        return False
    return int(value) > int(vals[0]) if op == "Gt" else int(value) < int(vals[0])


def affinity_ok(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    labels = node["metadata"].get("labels") or {}
    spec = pod["spec"]
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    terms = (
        spec.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution", {})
        .get("nodeSelectorTerms")
    )
    if terms is None:
        return True
    for t in terms:
        exprs, fields = t.get("matchExpressions") or [], t.get("matchFields") or []
        if not exprs and not fields:
            continue
        if all(_expr_ok(e, labels.get(e["key"])) for e in exprs) and all(
            _expr_ok(f, node["metadata"]["name"]) for f in fields
        ):
            return True
    return False


def taints_ok(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    for taint in node["spec"].get("taints") or []:
        if taint["effect"] not in ("NoSchedule", "NoExecute"):
            continue
        ok = False
        for tol in pod["spec"].get("tolerations") or []:
            if tol.get("effect") and tol["effect"] != taint["effect"]:
                continue
            if tol.get("operator") == "Exists":
                ok = not tol.get("key") or tol["key"] == taint["key"]
            else:
                ok = tol.get("key") == taint["key"] and tol.get("value", "") == taint.get(
                    "value", ""
                )
            if ok:
                break
        if not ok:
            return False
    return True


def admit_all(
    nodes: dict[str, dict[str, Any]], pods: dict[str, dict[str, Any]], where: dict[str, str]
) -> None:
    """The kubelet's admission, applied to every pod on every node."""
    used: dict[str, dict[str, int]] = {n: {} for n in nodes}
    for key, node in where.items():
        pod = pods[key]
        assert affinity_ok(pod, nodes[node]), (key, node, "node selector/affinity")
        assert taints_ok(pod, nodes[node]), (key, node, "taints")
        for r, v in requests_of(pod).items():
            used[node][r] = used[node].get(r, 0) + v
    bound_ports: dict[str, list[tuple[str, str, int]]] = {n: [] for n in nodes}
    for key, node in where.items():
        for c in pods[key]["spec"]["containers"]:
            for port in c.get("ports") or []:
                ip = port.get("hostIP", "0.0.0.0")
                proto, hp = port.get("protocol", "TCP"), port["hostPort"]
                for ip2, proto2, hp2 in bound_ports[node]:
                    clash = "0.0.0.0" in (ip, ip2) or ip == ip2
                    assert not (clash and proto == proto2 and hp == hp2), (key, node, hp)
                bound_ports[node].append((ip, proto, hp))
    for name, u in used.items():
        alloc = {k: _qty(v) for k, v in nodes[name]["status"]["allocatable"].items()}
        for r, v in u.items():
            assert v <= alloc.get(r, 0), (name, r, v, alloc.get(r, 0))


# ------------------------------------------------------------------ random clusters

labels_st = st.fixed_dictionaries(
    {},
    optional={
        "pool": st.sampled_from(["a", "b"]),
        "gen": st.sampled_from(["1", "3", "5"]),
        "zone": st.sampled_from(["z1", "z2"]),
    },
)
taint_st = st.fixed_dictionaries(
    {
        "key": st.sampled_from(["dedicated", "gpu"]),
        "value": st.sampled_from(["", "x"]),
        "effect": st.sampled_from(["NoSchedule", "NoExecute", "PreferNoSchedule"]),
    }
)


@st.composite
def node_st(draw: st.DrawFn, i: int) -> dict[str, Any]:
    alloc: dict[str, str] = {
        "cpu": f"{draw(st.sampled_from([2000, 8000, 32000]))}m",
        "memory": str(draw(st.sampled_from([2**30, 2**34]))),
        "pods": str(draw(st.integers(1, 8))),
        "nvidia.com/gpu": str(draw(st.integers(0, 8))),
    }
    for r in EXTRA:
        if draw(st.booleans()):
            alloc[r] = str(draw(st.integers(0, 8)))
    taints = draw(st.lists(taint_st, max_size=2, unique_by=lambda t: (t["key"], t["effect"])))
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": f"n{i}", "labels": draw(labels_st)},
        "spec": {"taints": taints} if taints else {},
        "status": {
            "allocatable": alloc,
            "capacity": alloc,
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


expr_st = st.one_of(
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(KEYS),
            "operator": st.sampled_from(["In", "NotIn"]),
            "values": st.lists(st.sampled_from(["a", "b", "1", "3", "z1"]), min_size=1, max_size=2),
        }
    ),
    st.fixed_dictionaries(
        {"key": st.sampled_from(KEYS), "operator": st.sampled_from(["Exists", "DoesNotExist"])}
    ),
    st.fixed_dictionaries(
        {
            "key": st.just("gen"),
            "operator": st.sampled_from(["Gt", "Lt"]),
            "values": st.sampled_from([["2"], ["4"]]).map(list),
        }
    ),
)
term_st = st.one_of(
    st.fixed_dictionaries({"matchExpressions": st.lists(expr_st, min_size=1, max_size=2)}),
    st.fixed_dictionaries(
        {
            "matchFields": st.lists(
                st.fixed_dictionaries(
                    {
                        "key": st.just("metadata.name"),
                        "operator": st.sampled_from(["In", "NotIn"]),
                        "values": st.lists(
                            st.sampled_from([f"n{i}" for i in range(6)]), min_size=1, max_size=2
                        ),
                    }
                ),
                min_size=1,
                max_size=1,
            )
        }
    ),
)
toleration_st = st.one_of(
    st.fixed_dictionaries(
        {"key": st.sampled_from(["dedicated", "gpu", ""]), "operator": st.just("Exists")},
        optional={"effect": st.sampled_from(["NoSchedule", "NoExecute"])},
    ),
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(["dedicated", "gpu"]),
            "operator": st.just("Equal"),
            "value": st.sampled_from(["", "x"]),
        },
        optional={"effect": st.sampled_from(["NoSchedule", "NoExecute"])},
    ),
)


port_st = st.fixed_dictionaries(
    {"containerPort": st.just(80), "hostPort": st.sampled_from([8080, 9090])},
    optional={
        "protocol": st.sampled_from(["TCP", "UDP"]),
        "hostIP": st.sampled_from(["0.0.0.0", "10.0.0.1", "10.0.0.2"]),
    },
)


@st.composite
def pod_st(draw: st.DrawFn, i: int) -> dict[str, Any]:
    req: dict[str, str] = {"cpu": f"{draw(st.sampled_from([100, 1000, 4000]))}m"}
    if draw(st.booleans()):
        req["nvidia.com/gpu"] = str(draw(st.integers(1, 4)))
    for r in EXTRA:
        if draw(st.integers(0, 3)) == 0:
            req[r] = str(draw(st.integers(1, 7)))
    spec: dict[str, Any] = {
        "schedulerName": names.SCHEDULER_NAME,
        "containers": [
            {"name": "c", "image": "busybox", "resources": {"requests": req, "limits": req}}
        ],
    }
    if draw(st.integers(0, 3)) == 0:
        spec["nodeSelector"] = draw(labels_st)
    if draw(st.integers(0, 2)) == 0:
        terms = draw(st.lists(term_st, min_size=1, max_size=2))
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
            }
        }
    # one pod binds a port and protocol once (API validation refuses the rest)
    ports = draw(
        st.lists(port_st, max_size=2, unique_by=lambda q: (q["hostPort"], q.get("protocol", "TCP")))
    )
    if ports:
        spec["containers"][0]["ports"] = ports
    tols = draw(st.lists(toleration_st, max_size=2))
    if tols:
        spec["tolerations"] = tols
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"p{i}",
            "namespace": "ns",
            "creationTimestamp": f"2026-01-01T00:00:{i:02d}Z",
        },
        "spec": spec,
    }


@st.composite
def cluster_st(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nn = draw(st.integers(1, 6))
    np_ = draw(st.integers(1, 14))
    return [draw(node_st(i)) for i in range(nn)], [draw(pod_st(i)) for i in range(np_)]


@seed(17)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cluster_st())
def test_no_binding_violates_a_filter(c: tuple[list[dict[str, Any]], list[dict[str, Any]]]) -> None:
    node_objs, pod_objs = c
    s = ClusterState()
    for n in node_objs:
        s.add_node(n)
    for p in pod_objs:
        s.add_pod(p)
    nodes = {n["metadata"]["name"]: n for n in node_objs}
    pods = {f"ns/{p['metadata']['name']}": p for p in pod_objs}
    where: dict[str, str] = {}
    reasons: dict[str, str] = {}
    kubelet_used: dict[str, dict[str, int]] = {n: {} for n in nodes}
    kubelet_ports: dict[str, list[tuple[str, str, int]]] = {n: [] for n in nodes}
    for t in range(3):
        d = schedule(s, now=1000.0 + t)
        for key, node in d.bindings:
            assert key not in where, key
            where[key] = node
            bound = {**pods[key], "spec": {**pods[key]["spec"], "nodeName": node}}
            refusal = admit(
                bound,
                nodes[node],
                o.node_allocatable(nodes[node]),
                kubelet_used[node],
                kubelet_ports[node],
            )
            assert refusal is None, (key, node, refusal)
            req = o.pod_requests(bound)
            req["pods"] = 1
            for r, v in req.items():
                kubelet_used[node][r] = kubelet_used[node].get(r, 0) + v
            kubelet_ports[node].extend(pod_ports(bound))
        reasons.update(d.unschedulable)
        admit_all(nodes, pods, where)
    for key, pod in pods.items():
        if key in where:
            continue
        req = requests_of(pod)
        # A resource no node has enough of: the pod waits, and where a node passes
        # every other filter, the reason names the resource as kube-scheduler does.
        for r in EXTRA:
            if r not in req:
                continue
            have = [int(n["status"]["allocatable"].get(r, 0)) for n in node_objs]
            if max(have) >= req[r]:
                continue
            others_pass = any(
                affinity_ok(pod, n)
                and taints_ok(pod, n)
                and all(
                    v <= _qty(n["status"]["allocatable"].get(k, 0))
                    for k, v in req.items()
                    if k != r
                )
                for n in node_objs
            )
            why = reasons.get(f"pod {key}", "")
            assert why, (key, reasons)
            if others_pass:
                assert f"Insufficient {r}" in why, (key, r, why)
