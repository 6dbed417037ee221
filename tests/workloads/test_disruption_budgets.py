"""PodDisruptionBudgets on `gpuyard up`: the disruption controller keeps their status
(expectedPods, desiredHealthy, currentHealthy, disruptionsAllowed, the DisruptionAllowed
condition) and the Eviction API takes disruptions from it: the official client's
eviction is refused with 429 once the budget is spent, and `kubectl drain` cannot move a
pod its budget protects."""

from __future__ import annotations

import json
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8sconfig
from kubernetes.client.rest import ApiException

from gpuyard.cluster.testing import ClusterProcess, wait_for


def pdb_status(c: ClusterProcess, name: str) -> dict[str, Any]:
    out = json.loads(c.kubectl("get", "pdb", name, "-o", "json").stdout)
    return out.get("status") or {}  # type: ignore[no-any-return]


def settled(c: ClusterProcess, name: str, **want: Any) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        st = pdb_status(c, name)
        return st if all(st.get(k, 0) == v for k, v in want.items()) else None

    return wait_for(check, what=f"budget {name} to read {want}")  # type: ignore[no-any-return]


def condition(st: dict[str, Any]) -> tuple[str, str, str]:
    (c,) = [c for c in st["conditions"] if c["type"] == "DisruptionAllowed"]
    return c["status"], c["reason"], c.get("message", "")


def ready_pods(c: ClusterProcess, selector: str, n: int) -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]] | None:
        items = json.loads(c.kubectl("get", "pods", "-l", selector, "-o", "json").stdout)["items"]
        ok = [
            p
            for p in items
            if not p["metadata"].get("deletionTimestamp")
            and any(
                x["type"] == "Ready" and x["status"] == "True"
                for x in p["status"].get("conditions") or []
            )
        ]
        return ok if len(ok) == n else None

    return wait_for(check, what=f"{n} ready pods {selector}")  # type: ignore[no-any-return]


def evict(api: k8s.CoreV1Api, name: str) -> None:
    body = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name=name, namespace="default"))
    api.create_namespaced_pod_eviction(name, "default", body)


def test_budget_status_and_evictions_against_it(cluster: ClusterProcess) -> None:
    for n in ("a", "b", "c"):
        cluster.kubectl("run", n, "--image=busybox", "--restart=Never", "--labels=app=x")
    ready_pods(cluster, "app=x", 3)
    cluster.kubectl("create", "pdb", "keep2", "--selector=app=x", "--min-available=2")
    st = settled(
        cluster, "keep2", currentHealthy=3, desiredHealthy=2, expectedPods=3, disruptionsAllowed=1
    )
    assert condition(st)[:2] == ("True", "SufficientPods")
    head, row = cluster.kubectl("get", "pdb", "keep2").stdout.splitlines()
    assert head.split()[:7] == [
        "NAME",
        "MIN",
        "AVAILABLE",
        "MAX",
        "UNAVAILABLE",
        "ALLOWED",
        "DISRUPTIONS",
    ]
    assert row.split()[:4] == ["keep2", "2", "N/A", "1"]

    api = k8s.CoreV1Api(k8sconfig.new_client_from_config(config_file=cluster.kubeconfig))
    evict(api, "a")
    with pytest.raises(ApiException) as err:
        evict(api, "b")
    assert err.value.status == 429
    body = json.loads(err.value.body)
    assert body["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert body["details"]["causes"][0]["message"].startswith(
        "The disruption budget keep2 needs 2 healthy pods"
    )
    # the controller sees the evicted pod gone: two left, none may go
    st = settled(
        cluster, "keep2", currentHealthy=2, desiredHealthy=2, expectedPods=2, disruptionsAllowed=0
    )
    assert not st.get("disruptedPods")
    assert condition(st)[:2] == ("False", "InsufficientPods")
    assert st["observedGeneration"] == 1


def test_percentages_count_what_the_controllers_want(cluster: ClusterProcess) -> None:
    cluster.kubectl("create", "deployment", "web", "--image=nginx", "--replicas=4")
    ready_pods(cluster, "app=web", 4)
    cluster.kubectl("create", "pdb", "web", "--selector=app=web", "--max-unavailable=25%")
    settled(
        cluster, "web", expectedPods=4, desiredHealthy=3, currentHealthy=4, disruptionsAllowed=1
    )
    cluster.kubectl("scale", "deployment", "web", "--replicas=8")
    settled(
        cluster, "web", expectedPods=8, desiredHealthy=6, currentHealthy=8, disruptionsAllowed=2
    )
    # a pod no controller counts for makes a percentage budget fail safe
    cluster.kubectl("run", "stray", "--image=busybox", "--labels=app=web")
    st = settled(cluster, "web", disruptionsAllowed=0, expectedPods=0)
    assert condition(st) == ("False", "SyncFailed", 'found no controllers for pod "stray"')


def test_drain_cannot_move_a_protected_pod(make_cluster: Any) -> None:
    c = make_cluster(nodes=2)
    c.kubectl("create", "deployment", "db", "--image=postgres", "--replicas=2")
    (pod, _) = ready_pods(c, "app=db", 2)
    c.kubectl("create", "pdb", "db", "--selector=app=db", "--max-unavailable=0")
    settled(c, "db", expectedPods=2, desiredHealthy=2, currentHealthy=2)
    node = pod["spec"]["nodeName"]
    out = c.kubectl("drain", node, "--ignore-daemonsets", "--timeout=4s", check=False, timeout=30)
    assert out.returncode != 0
    assert "Cannot evict pod as it would violate the pod's disruption budget." in out.stderr
    assert len(ready_pods(c, "app=db", 2)) == 2
