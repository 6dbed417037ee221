"""Balloon sizing and the balloon pods a pool should have (pure)."""

from __future__ import annotations

from typing import Any

from gpuyard.balloons import sizing
from gpuyard.k8s.autoscaler import group_max_sizes
from gpuyard.kube import objects as o


def node(name: str, gpus: int = 8, cpu: str = "96", mem: str = "1Ti", ready: bool = True) -> Any:
    return {
        "metadata": {"name": name, "labels": {"gpuyard.io/pool": "gpu"}},
        "status": {
            "allocatable": {"cpu": cpu, "memory": mem, "nvidia.com/gpu": str(gpus), "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def ds_pod(node_name: str, cpu: str, mem: str) -> Any:
    return {
        "metadata": {
            "name": f"agent-{node_name}",
            "ownerReferences": [{"kind": "DaemonSet", "name": "agent", "controller": True}],
        },
        "spec": {
            "nodeName": node_name,
            "containers": [{"resources": {"requests": {"cpu": cpu, "memory": mem}}}],
        },
        "status": {"phase": "Running"},
    }


def owner(pool: str = "gpu", **spec: Any) -> Any:
    return {
        "apiVersion": "gpuyard.io/v1alpha1",
        "kind": "BalloonPool",
        "metadata": {"name": pool, "uid": "u-1"},
        "spec": {"pool": pool, **spec},
    }


def test_balloon_fills_the_node_minus_daemonset_pods_on_the_tightest_node() -> None:
    nodes = [node("a"), node("b"), node("c", ready=False, cpu="8")]
    pods = {"a": [ds_pod("a", "2", "8Gi")], "b": [ds_pod("b", "500m", "1Gi")]}
    size = sizing.balloon_requests(nodes, pods)
    # The not-Ready node is not measured; node a has the least room.
    assert size == {"cpu": 94_000, "memory": 2**40 - 8 * 2**30, "nvidia.com/gpu": 8}


def test_ordinary_pods_do_not_shrink_a_balloon() -> None:
    worker = {
        "metadata": {"name": "w"},
        "spec": {
            "nodeName": "a",
            "containers": [{"resources": {"requests": {"nvidia.com/gpu": "8"}}}],
        },
        "status": {"phase": "Running"},
    }
    assert sizing.balloon_requests([node("a")], {"a": [worker]})["nvidia.com/gpu"] == 8


def test_no_ready_node_means_no_size() -> None:
    assert sizing.balloon_requests([node("a", ready=False)], {}) is None
    assert sizing.balloon_requests([], {}) is None


def test_desired_replicas_spec_then_autoscaler_max_then_node_count() -> None:
    assert sizing.desired_replicas({"pool": "gpu", "replicas": 3}, {"gpu": 10}, 5) == 3
    assert sizing.desired_replicas({"pool": "gpu"}, {"gpu": 10, "cpu": 4}, 5) == 10
    assert (
        sizing.desired_replicas({"pool": "gpu", "nodeGroups": ["a", "b"]}, {"a": 2, "b": 3}, 1) == 5
    )
    assert sizing.desired_replicas({"pool": "gpu"}, {}, 5) == 5


def test_balloon_pod_is_lowest_priority_one_per_node_and_owned() -> None:
    pod = sizing.balloon_pod(owner(), 7, {"cpu": 94_000, "nvidia.com/gpu": 8})
    assert pod["metadata"]["name"] == "balloon-gpu-7"
    assert pod["spec"]["priorityClassName"] == "gpuyard-balloon"
    assert pod["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    anti = pod["spec"]["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert anti[0]["topologyKey"] == "kubernetes.io/hostname"
    assert o.selector_matches(anti[0]["labelSelector"], pod["metadata"]["labels"])
    assert o.pod_requests(pod) == {"cpu": 94_000, "nvidia.com/gpu": 8}
    assert pod["spec"]["nodeSelector"] == {"gpuyard.io/pool": "gpu"}


def existing(i: int, node: str | None = None, phase: str = "Pending", gpus: int = 8) -> Any:
    p = sizing.balloon_pod(owner(), i, {"nvidia.com/gpu": gpus})
    if node:
        p["spec"]["nodeName"] = node
    p["status"] = {"phase": phase}
    return p


def test_plan_creates_missing_ordinals_and_deletes_extra_and_finished() -> None:
    have = [existing(0, "a", "Running"), existing(2, "b", "Failed"), existing(5, "c", "Running")]
    p = sizing.plan(owner(), 4, {"nvidia.com/gpu": 8}, have)
    assert sorted(x["metadata"]["name"] for x in p.create) == ["balloon-gpu-1", "balloon-gpu-3"]
    # ordinal 5 is beyond 4 replicas; ordinal 2 failed (it comes back after deletion)
    assert sorted(p.delete) == ["balloon-gpu-2", "balloon-gpu-5"]


def test_plan_resizes_only_pending_balloons() -> None:
    have = [existing(0, "a", "Running", gpus=4), existing(1, None, "Pending", gpus=4)]
    p = sizing.plan(owner(), 2, {"nvidia.com/gpu": 8}, have)
    assert p.delete == ["balloon-gpu-1"] and p.create == []


def test_plan_without_a_size_creates_nothing_but_still_trims() -> None:
    p = sizing.plan(owner(), 1, None, [existing(0), existing(1)])
    assert p.create == [] and p.delete == ["balloon-gpu-1"]


def test_autoscaler_status_configmap_is_read_for_max_sizes() -> None:
    text = "nodeGroups:\n- name: gpu\n  health: {minSize: 0, maxSize: 600}\n- name: x\n"
    assert group_max_sizes({"data": {"status": text}}) == {"gpu": 600}
    assert group_max_sizes({"data": {"status": "not: [valid"}}) == {}
    assert group_max_sizes(None) == {}
