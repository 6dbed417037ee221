"""No binding the policy makes breaks pod affinity, pod anti-affinity or topology spread.

Random nodes (zones, racks, hostnames; some without a rack label, some tainted) and
random pods in two namespaces (labels, required pod affinity and anti-affinity on the
hostname, rack or zone key, with namespaces or a namespaceSelector, topology spread
constraints with maxSkew, minDomains, whenUnsatisfiable and both node inclusion
policies, preferred terms) arrive over several passes, some as gangs. Each binding is
checked, in the order the policy made them, by a checker written here from
kube-scheduler's definitions (not from gpuyard.scheduling.affinity): against the pods
bound before it, required affinity has a matching pod in the node's domain (or no pod
matches and the pod matches itself), no matching pod is in the domain of an
anti-affinity term (either pod's), and spread skew stays within maxSkew over the
eligible domains. Every pod the policy leaves pending for these filters carries one of
kube's reasons.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpuyard import names
from gpuyard.scheduling.policy import schedule
from gpuyard.scheduling.state import ClusterState

KEYS = (names.LABEL_HOSTNAME, "rack", names.LABEL_ZONE)
NS_LABELS = {"ns1": {"tier": "x"}, "ns2": {"tier": "y"}}

# ------------------------------------------------------------------ the independent checker


def _sel_ok(sel: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    if sel is None:
        return False
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        have = labels.get(e["key"])
        op = e["operator"]
        if op == "In" and have not in e["values"]:
            return False
        if op == "NotIn" and have in e["values"]:
            return False
        if op == "Exists" and have is None:
            return False
        if op == "DoesNotExist" and have is not None:
            return False
    return True


def _term_names(term: dict[str, Any], owner: dict[str, Any], other: dict[str, Any]) -> bool:
    """Whether a pod affinity term of `owner` selects pod `other`."""
    ns = other["metadata"]["namespace"]
    nss = term.get("namespaces") or []
    nsel = term.get("namespaceSelector")
    if not nss and nsel is None:
        if ns != owner["metadata"]["namespace"]:
            return False
    elif ns not in nss and not (nsel is not None and _sel_ok(nsel, NS_LABELS[ns])):
        return False
    return _sel_ok(term.get("labelSelector"), other["metadata"].get("labels") or {})


def _dom(node: dict[str, Any], key: str) -> str | None:
    return (node["metadata"].get("labels") or {}).get(key)


def _aff(pod: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return ((pod["spec"].get("affinity") or {}).get(kind) or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or []


def _tolerated(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    tols = pod["spec"].get("tolerations") or []
    for t in node["spec"].get("taints") or []:
        if not any(x.get("operator") == "Exists" and x.get("key") == t["key"] for x in tols):
            return False
    return True


def check_binding(
    pod: dict[str, Any],
    node: dict[str, Any],
    bound: list[tuple[dict[str, Any], dict[str, Any]]],
) -> None:
    """kube-scheduler's InterPodAffinity and PodTopologySpread filters, for `pod` on
    `node` with `bound` (pod, node) already placed."""
    key = pod["metadata"]["name"]
    # anti-affinity, the pod's own terms and those of bound pods
    for t in _aff(pod, "podAntiAffinity"):
        d = _dom(node, t["topologyKey"])
        for q, qn in bound:
            if d is not None and _dom(qn, t["topologyKey"]) == d and _term_names(t, pod, q):
                raise AssertionError((key, "anti-affinity", q["metadata"]["name"]))
    for q, qn in bound:
        for t in _aff(q, "podAntiAffinity"):
            d = _dom(qn, t["topologyKey"])
            if d is not None and _dom(node, t["topologyKey"]) == d and _term_names(t, q, pod):
                raise AssertionError((key, "existing anti-affinity", q["metadata"]["name"]))
    # affinity: pods matching all terms, counted per (key, value)
    terms = _aff(pod, "podAffinity")
    if terms:
        counts: dict[tuple[str, str], int] = {}
        for q, qn in bound:
            if all(_term_names(t, pod, q) for t in terms):
                for t in terms:
                    d = _dom(qn, t["topologyKey"])
                    if d is not None:
                        counts[(t["topologyKey"], d)] = counts.get((t["topologyKey"], d), 0) + 1
        assert all(_dom(node, t["topologyKey"]) is not None for t in terms), (key, "affinity key")
        exist = all(counts.get((t["topologyKey"], _dom(node, t["topologyKey"]))) for t in terms)
        if not exist:
            assert not counts and all(_term_names(t, pod, pod) for t in terms), (key, "affinity")
    # topology spread, DoNotSchedule
    cons = pod["spec"].get("topologySpreadConstraints") or []
    all_keys = {c["topologyKey"] for c in cons}
    for c in cons:
        if c["whenUnsatisfiable"] != "DoNotSchedule":
            continue
        tk = c["topologyKey"]
        assert _dom(node, tk) is not None, (key, "spread label")
        eligible = {}
        for n in NODES:
            if any(_dom(n, k) is None for k in all_keys):
                continue
            if c.get("nodeAffinityPolicy", "Honor") == "Honor" and any(
                _dom(n, k) != v for k, v in (pod["spec"].get("nodeSelector") or {}).items()
            ):
                continue
            if c.get("nodeTaintsPolicy", "Ignore") == "Honor" and not _tolerated(pod, n):
                continue
            eligible[n["metadata"]["name"]] = _dom(n, tk)
        per: dict[str, int] = dict.fromkeys(eligible.values(), 0)
        for q, qn in bound:
            name = qn["metadata"]["name"]
            if (
                name in eligible
                and q["metadata"]["namespace"] == pod["metadata"]["namespace"]
                and _sel_ok(c.get("labelSelector"), q["metadata"].get("labels") or {})
            ):
                per[eligible[name]] += 1
        least = min(per.values()) if per and len(per) >= c.get("minDomains", 1) else 0
        me = 1 if _sel_ok(c.get("labelSelector"), pod["metadata"].get("labels") or {}) else 0
        skew = per.get(_dom(node, tk) or "", 0) + me - least
        assert skew <= c["maxSkew"], (key, "spread", skew, per)


# ------------------------------------------------------------------ random clusters

NODES: list[dict[str, Any]] = []  # the current example's nodes (for the spread checker)


def node_obj(i: int, zone: int, rack: int | None, tainted: bool) -> dict[str, Any]:
    labels = {names.LABEL_HOSTNAME: f"n{i}", names.LABEL_ZONE: f"z{zone}"}
    if rack is not None:
        labels["rack"] = f"r{zone}{rack}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": f"n{i}", "labels": labels},
        "spec": {"taints": [{"key": "dedicated", "effect": "NoSchedule"}]} if tainted else {},
        "status": {
            "allocatable": {"cpu": "8000m", "memory": str(2**34), "pods": "6"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


app_st = st.sampled_from(["a", "b", "c"])
selector_st = st.one_of(
    app_st.map(lambda a: {"matchLabels": {"app": a}}),
    st.lists(app_st, min_size=1, max_size=2).map(
        lambda v: {"matchExpressions": [{"key": "app", "operator": "In", "values": v}]}
    ),
    st.just({"matchExpressions": [{"key": "app", "operator": "Exists"}]}),
)


@st.composite
def term_st(draw: st.DrawFn) -> dict[str, Any]:
    t: dict[str, Any] = {
        "labelSelector": draw(selector_st),
        "topologyKey": draw(st.sampled_from(KEYS)),
    }
    which = draw(st.integers(0, 5))
    if which == 0:
        t["namespaces"] = draw(st.lists(st.sampled_from(["ns1", "ns2"]), min_size=1, max_size=2))
    elif which == 1:
        t["namespaceSelector"] = draw(
            st.sampled_from([{}, {"matchLabels": {"tier": "x"}}, {"matchLabels": {"tier": "y"}}])
        )
    return t


@st.composite
def pod_st(draw: st.DrawFn, i: int) -> dict[str, Any]:
    ns = draw(st.sampled_from(["ns1", "ns2"]))
    labels = {"app": draw(app_st)}
    spec: dict[str, Any] = {
        "schedulerName": names.SCHEDULER_NAME,
        "containers": [
            {
                "name": "c",
                "image": "busybox",
                "resources": {"requests": {"cpu": f"{draw(st.sampled_from([500, 2000]))}m"}},
            }
        ],
    }
    aff: dict[str, Any] = {}
    if draw(st.integers(0, 2)) == 0:
        aff["podAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": draw(
                st.lists(term_st(), min_size=1, max_size=2)
            )
        }
    if draw(st.integers(0, 1)) == 0:
        aff["podAntiAffinity"] = {
            "requiredDuringSchedulingIgnoredDuringExecution": draw(
                st.lists(term_st(), min_size=1, max_size=2)
            )
        }
    if draw(st.integers(0, 3)) == 0:
        aff.setdefault("podAffinity", {})["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {"weight": draw(st.integers(1, 100)), "podAffinityTerm": draw(term_st())}
        ]
    if draw(st.integers(0, 3)) == 0:
        aff["nodeAffinity"] = {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": draw(st.integers(1, 100)),
                    "preference": {
                        "matchExpressions": [
                            {"key": names.LABEL_ZONE, "operator": "In", "values": ["z1"]}
                        ]
                    },
                }
            ]
        }
    if aff:
        spec["affinity"] = aff
    if draw(st.integers(0, 1)) == 0:
        spec["topologySpreadConstraints"] = [
            {
                "maxSkew": draw(st.integers(1, 2)),
                "topologyKey": draw(st.sampled_from(KEYS)),
                "whenUnsatisfiable": draw(st.sampled_from(["DoNotSchedule", "ScheduleAnyway"])),
                "labelSelector": draw(selector_st),
                **draw(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "minDomains": st.integers(1, 4),
                            "nodeAffinityPolicy": st.sampled_from(["Honor", "Ignore"]),
                            "nodeTaintsPolicy": st.sampled_from(["Honor", "Ignore"]),
                        },
                    )
                ),
            }
            for _ in range(draw(st.integers(1, 2)))
        ]
        for c in spec["topologySpreadConstraints"]:
            if c["whenUnsatisfiable"] == "ScheduleAnyway":
                c.pop("minDomains", None)  # minDomains is for DoNotSchedule only
    if draw(st.integers(0, 4)) == 0:
        spec["nodeSelector"] = {names.LABEL_ZONE: draw(st.sampled_from(["z1", "z2"]))}
    if draw(st.integers(0, 4)) == 0:
        spec["tolerations"] = [{"key": "dedicated", "operator": "Exists"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"p{i}", "namespace": ns, "labels": labels, "uid": f"u{i}"},
        "spec": spec,
        "status": {"phase": "Pending"},
    }


@st.composite
def cluster_st(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[list[dict[str, Any]]]]:
    n = draw(st.integers(2, 9))
    nodes = [
        node_obj(
            i,
            draw(st.integers(1, 3)),
            draw(st.one_of(st.none(), st.integers(1, 2))),
            draw(st.integers(0, 4)) == 0,
        )
        for i in range(n)
    ]
    waves = []
    k = 0
    for _ in range(draw(st.integers(1, 4))):
        wave = []
        for _ in range(draw(st.integers(1, 8))):
            wave.append(draw(pod_st(k)))
            k += 1
        if draw(st.integers(0, 3)) == 0 and len(wave) >= 2:
            # the wave's pods of one namespace form a gang
            ns = wave[0]["metadata"]["namespace"]
            members = [p for p in wave if p["metadata"]["namespace"] == ns]
            for p in members:
                p["metadata"]["labels"][names.POD_GROUP_LABEL] = f"g{k}"
        waves.append(wave)
    return nodes, waves


def _pod_group(ns: str, name: str, size: int) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"minMember": size},
    }


REASONS = (
    "node(s) didn't match pod affinity rules",
    "node(s) didn't match pod anti-affinity rules",
    "node(s) didn't satisfy existing pods anti-affinity rules",
    "node(s) didn't match pod topology spread constraints",
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(cluster_st())
def test_no_binding_breaks_inter_pod_filters(
    cluster: tuple[list[dict[str, Any]], list[list[dict[str, Any]]]],
) -> None:
    nodes, waves = cluster
    NODES[:] = nodes
    by_name = {n["metadata"]["name"]: n for n in nodes}
    s = ClusterState()
    s.namespace_labels.update(NS_LABELS)
    for n in nodes:
        s.add_node(n)
    pods: dict[str, dict[str, Any]] = {}
    bound: list[tuple[dict[str, Any], dict[str, Any]]] = []
    t = 0.0
    for wave in waves:
        groups: dict[tuple[str, str], int] = {}
        for p in wave:
            g = p["metadata"]["labels"].get(names.POD_GROUP_LABEL)
            if g:
                k = (p["metadata"]["namespace"], g)
                groups[k] = groups.get(k, 0) + 1
        for (ns, g), size in groups.items():
            s.set_pod_group(_pod_group(ns, g, size))
        for p in wave:
            pods[f"{p['metadata']['namespace']}/{p['metadata']['name']}"] = p
            s.add_pod(p)
        for _ in range(2):
            t += 1.0
            d = schedule(s, t)
            for key, node in d.bindings:
                check_binding(pods[key], by_name[node], bound)
                bound.append((pods[key], by_name[node]))
                pods[key]["spec"]["nodeName"] = node
            for unit, reason in d.unschedulable.items():
                assert reason, unit
    # everything the state says is bound is what the checker saw bound
    assert {k for k, p in s.pods.items() if p.node} == {
        f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p, _ in bound
    }


def test_reasons_name_the_failed_filter() -> None:
    s = ClusterState()
    for i in range(3):
        s.add_node(node_obj(i, 1, 1, False))
    web = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "ns1", "labels": {"app": "a"}},
        "spec": {
            "schedulerName": names.SCHEDULER_NAME,
            "containers": [{"name": "c", "image": "x"}],
            "affinity": {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "labelSelector": {"matchLabels": {"app": "a"}},
                            "topologyKey": names.LABEL_ZONE,
                        }
                    ]
                }
            },
        },
        "status": {"phase": "Pending"},
    }
    s.add_pod(web)
    assert len(schedule(s, 1.0).bindings) == 1
    second = {**web, "metadata": {**web["metadata"], "name": "web2"}}
    s.add_pod(second)
    d = schedule(s, 2.0)
    assert not d.bindings
    assert "3 node(s) didn't match pod anti-affinity rules" in d.unschedulable["pod ns1/web2"]
    # a plain pod the first one's term names is kept out of its zone too
    plain = {
        **web,
        "metadata": {**web["metadata"], "name": "plain"},
        "spec": {
            "schedulerName": names.SCHEDULER_NAME,
            "containers": [{"name": "c", "image": "x"}],
        },
    }
    s.add_pod(plain)
    d = schedule(s, 3.0)
    assert (
        "3 node(s) didn't satisfy existing pods anti-affinity rules"
        in d.unschedulable["pod ns1/plain"]
    )
    # in another namespace the term names no one
    other = {**plain, "metadata": {**plain["metadata"], "name": "other", "namespace": "ns2"}}
    s.add_pod(other)
    assert [k for k, _ in schedule(s, 4.0).bindings] == ["ns2/other"]
