"""Scores as kube-scheduler gives them, on pods a user would write: bound pods' preferred
(anti-)affinity terms count for an incoming pod (symmetry), and PreferNoSchedule taints
score a node down without ever filtering it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from gpuyard import names
from gpuyard.cluster.testing import ClusterProcess, wait_for
from gpuyard.scheduling.policy import schedule
from gpuyard.scheduling.state import ClusterState

ZONE = names.LABEL_ZONE
GPU = "nvidia.com/gpu"


def node(name: str, zone: str, gpus: int = 8, taints: list[dict[str, Any]] | None = None) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {names.LABEL_HOSTNAME: name, ZONE: zone}},
        "spec": {"taints": taints} if taints else {},
        "status": {
            "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "110", "nvidia.com/gpu": gpus},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(name: str, app: str = "", gpus: int = 1, ns: str = "default", **spec: Any) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app} if app else {}},
        "spec": {
            "schedulerName": names.SCHEDULER_NAME,
            "containers": [
                {"name": "w", "image": "x", "resources": {"limits": {"nvidia.com/gpu": gpus}}}
            ],
            **spec,
        },
    }


def preferred(kind: str, app: str, weight: int = 100, key: str = ZONE) -> dict[str, Any]:
    return {
        kind: {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {
                    "weight": weight,
                    "podAffinityTerm": {
                        "labelSelector": {"matchLabels": {"app": app}},
                        "topologyKey": key,
                    },
                }
            ]
        }
    }


def place(s: ClusterState, p: dict[str, Any], t: float = 1.0) -> str:
    """Add the pod, run a pass, and return where the policy bound it."""
    s.add_pod(p)
    d = schedule(s, t)
    got = dict(d.bindings)
    key = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
    assert key in got, (key, d.unschedulable)
    return got[key]


def three_zones() -> ClusterState:
    """Three zones; zone a's node is the fullest (best fit would pick it first)."""
    s = ClusterState()
    for name, zone in (("a1", "a"), ("b1", "b"), ("c1", "c")):
        s.add_node(node(name, zone))
    s.add_pod(pod("filler", gpus=4, nodeName="a1"))
    return s


def test_a_bound_pods_preferred_affinity_draws_a_plain_pod_to_its_zone() -> None:
    s = three_zones()
    # a cache that prefers to run near the web pods, bound in zone c
    s.add_pod(pod("cache", app="cache", nodeName="c1", affinity=preferred("podAffinity", "web")))
    # a web pod that says nothing about affinity goes next to the cache (kube's symmetry),
    # not to a1, which best fit alone would choose
    assert place(s, pod("web-0", app="web")) == "c1"
    # a pod the term does not name keeps best fit
    assert place(s, pod("other", app="batch"), 2.0) == "a1"


def test_a_bound_pods_preferred_anti_affinity_pushes_a_plain_pod_away() -> None:
    s = three_zones()
    # a noisy job prefers no "quiet" pod in its zone; it runs in zone a
    s.add_pod(
        pod("noisy", app="noisy", nodeName="a1", affinity=preferred("podAntiAffinity", "quiet"))
    )
    got = place(s, pod("quiet-0", app="quiet"))
    assert got in ("b1", "c1"), got


def test_weights_of_several_bound_pods_add_up_and_the_heavier_side_wins() -> None:
    s = ClusterState()
    for name, zone in (("a1", "a"), ("b1", "b")):
        s.add_node(node(name, zone))
    # zone a: one pod preferring web near it (weight 80); zone b: two of weight 50
    s.add_pod(pod("x", app="x", nodeName="a1", affinity=preferred("podAffinity", "web", 80)))
    for i in range(2):
        s.add_pod(
            pod(f"y{i}", app="y", nodeName="b1", affinity=preferred("podAffinity", "web", 50))
        )
    assert place(s, pod("web-0", app="web")) == "b1"
    # an anti-affinity preference of weight 40 in zone b tips it back to a (80 > 100 - 40)
    s = ClusterState()
    for name, zone in (("a1", "a"), ("b1", "b")):
        s.add_node(node(name, zone))
    s.add_pod(pod("x", app="x", nodeName="a1", affinity=preferred("podAffinity", "web", 80)))
    for i in range(2):
        s.add_pod(
            pod(f"y{i}", app="y", nodeName="b1", affinity=preferred("podAffinity", "web", 50))
        )
    s.add_pod(pod("z", app="z", nodeName="b1", affinity=preferred("podAntiAffinity", "web", 40)))
    assert place(s, pod("web-0", app="web")) == "a1"


def test_a_bound_pods_required_affinity_counts_as_a_weak_preference() -> None:
    """kube's hardPodAffinityWeight (1): a pod that requires web pods near it draws
    them, but a preference of the incoming pod's own outweighs it."""
    s = three_zones()
    req = {
        "podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": ZONE}
            ]
        }
    }
    s.add_pod(pod("needs-web", app="n", nodeName="b1", affinity=req))
    assert place(s, pod("web-0", app="web")) == "b1"


def test_prefer_no_schedule_scores_a_node_down_but_never_filters_it() -> None:
    s = ClusterState()
    soft = [{"key": "maintenance", "value": "soon", "effect": "PreferNoSchedule"}]
    s.add_node(node("busy", "a", taints=soft))
    s.add_node(node("idle", "a"))
    s.add_pod(pod("filler", gpus=4, nodeName="busy"))
    # best fit alone picks 'busy' (fewest free GPUs); the taint sends the pod to 'idle'
    assert place(s, pod("p0")) == "idle"
    # a pod that tolerates the taint keeps best fit
    tol = [{"key": "maintenance", "operator": "Exists", "effect": "PreferNoSchedule"}]
    assert place(s, pod("p1", tolerations=tol), 2.0) == "busy"
    # once 'idle' is full, the tainted node still takes pods: the taint is no filter
    s.add_pod(pod("fill-idle", gpus=7, nodeName="idle"))
    assert place(s, pod("p2"), 3.0) == "busy"


def test_fewer_untolerated_prefer_no_schedule_taints_win() -> None:
    s = ClusterState()
    one = [{"key": "k1", "effect": "PreferNoSchedule"}]
    two = [*one, {"key": "k2", "effect": "PreferNoSchedule"}]
    s.add_node(node("two", "a", taints=two))
    s.add_node(node("one", "a", taints=one))
    s.add_pod(pod("f2", gpus=6, nodeName="two"))
    s.add_pod(pod("f1", gpus=4, nodeName="one"))
    assert place(s, pod("p")) == "one"
    # the taint is gone once the node is updated without it
    s.update_node(node("two", "a"))
    assert place(s, pod("q"), 2.0) == "two"


def test_a_gang_fills_nodes_without_prefer_no_schedule_taints_first() -> None:
    s = ClusterState()
    soft = [{"key": "spot", "effect": "PreferNoSchedule"}]
    for i in range(4):
        s.add_node(node(f"t{i}", "a", taints=soft))
    for i in range(4):
        s.add_node(node(f"u{i}", "b"))
    s.set_pod_group(
        {
            "apiVersion": "scheduling.x-k8s.io/v1alpha1",
            "kind": "PodGroup",
            "metadata": {"name": "train", "namespace": "default"},
            "spec": {"minMember": 4},
        }
    )
    for i in range(4):
        p = pod(f"train-{i}", gpus=8)
        p["metadata"]["labels"][names.POD_GROUP_LABEL] = "train"
        s.add_pod(p)
    d = schedule(s, 1.0)
    assert sorted(n for _, n in d.bindings) == ["u0", "u1", "u2", "u3"]


@pytest.mark.slow
def test_on_gpuyard_up_prefer_no_schedule_and_a_bound_pods_preference_steer_pods(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    """Through the live scheduler with real kubectl: `kubectl taint ... :PreferNoSchedule`
    keeps plain pods off the tainted nodes while others are free, and a bound pod's
    preferred affinity to `app=web` draws a web pod into its zone."""
    c = make_cluster(nodes=6, args=["--components", "scheduler", "--rack-size", "1"])

    def nodes() -> dict[str, str]:
        items = json.loads(c.kubectl("get", "nodes", "-o", "json").stdout)["items"]
        return {n["metadata"]["name"]: n["metadata"]["labels"][ZONE] for n in items}

    def node_of(name: str) -> str:
        def got() -> str:
            p = json.loads(c.kubectl("get", "pod", name, "-o", "json").stdout)
            return str(p["spec"].get("nodeName") or "")

        return str(wait_for(got, 30, f"pod {name} bound"))

    zone_of = nodes()
    names_ = sorted(zone_of)
    tainted, free = names_[:4], names_[4:]
    c.kubectl("taint", "nodes", *tainted, "maintenance=soon:PreferNoSchedule")

    def create(p: dict[str, Any]) -> None:
        p["metadata"].pop("namespace")
        c.kubectl("apply", "-f", "-", input=json.dumps(p))

    for i in range(2):
        create(pod(f"plain-{i}"))
    assert {node_of(f"plain-{i}") for i in range(2)} <= set(free)
    # every GPU of the untainted nodes taken: the tainted ones still take pods
    items = json.loads(c.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    gpus = {n["metadata"]["name"]: int(n["status"]["allocatable"][GPU]) for n in items}
    for n in free:
        left = gpus[n] - sum(1 for i in range(2) if node_of(f"plain-{i}") == n)
        create(pod(f"fill-{n}", gpus=left, nodeName=n))
        node_of(f"fill-{n}")
    create(pod("spill"))
    spilled = node_of("spill")
    assert spilled in tainted

    # Without the taint, best fit would put a web pod next to 'spill' (fewest free GPUs).
    # A cache in another zone that prefers web pods near it draws the web pod there.
    c.kubectl("taint", "nodes", *tainted, "maintenance-")
    target = next(n for n in tainted if zone_of[n] != zone_of[spilled])
    create(
        pod("cache", app="cache", gpus=0, nodeName=target, affinity=preferred("podAffinity", "web"))
    )
    node_of("cache")
    create(pod("web-0", app="web"))
    assert zone_of[node_of("web-0")] == zone_of[target]
    # and a pod the cache's term does not name goes by best fit, beside 'spill'
    create(pod("batch-0", app="batch"))
    assert node_of("batch-0") == spilled
