"""The simulated cluster-autoscaler's rules (pure parts): node groups, which pods call
for nodes, how many nodes they need, which nodes are unneeded."""

from __future__ import annotations

from typing import Any

import pytest

from gpuyard.cluster import autoscaler as a
from gpuyard.cluster.shapes import default_shapes


def groups(spec: str = "gpu=0:10") -> dict[str, a.NodeGroup]:
    return a.parse_groups(spec, default_shapes(2, 1))


def pod(gpus: int = 0, cpu: str = "1", prio: int = 0, unsched: bool = True, **spec: Any) -> Any:
    res = {"cpu": cpu, **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    status: dict[str, Any] = {"phase": "Pending"}
    if unsched:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}
        ]
    return {
        "metadata": {"name": f"p{id(res)}", "namespace": "default"},
        "spec": {"priority": prio, "containers": [{"resources": {"requests": res}}], **spec},
        "status": status,
    }


@pytest.mark.parametrize(
    "spec,msg",
    [
        ("gpu", "want POOL=MIN:MAX"),
        ("gpu=a:b", "integers"),
        ("gpu=5:2", "0 <= MIN <= MAX"),
        ("gpu=0:1,gpu=0:2", "given twice"),
        ("gpu=0:99999999999", "MAX is at most 100000 nodes"),
        ("tpu=0:4", "no node of pool 'tpu'"),
        ("", "no node groups"),
    ],
)
def test_bad_node_group_specs_are_refused_with_the_reason(spec: str, msg: str) -> None:
    with pytest.raises(a.NodeGroupError, match=msg):
        a.parse_groups(spec, default_shapes(1))


def test_groups_take_the_pools_node_shape_as_template() -> None:
    g = groups("gpu=1:8,cpu=0:2")
    assert (g["gpu"].min_size, g["gpu"].max_size, g["gpu"].template.gpus) == (1, 8, 8)
    assert g["cpu"].template.gpus == 0 and g["cpu"].pool == "cpu"


def test_only_unschedulable_pods_call_for_nodes() -> None:
    assert a.is_unschedulable(pod())
    assert not a.is_unschedulable(pod(unsched=False))  # not tried by the scheduler yet
    nominated = pod()
    nominated["status"]["nominatedNodeName"] = "n1"  # preemption will make room
    assert not a.is_unschedulable(nominated)
    assert a.is_expendable(pod(prio=-11), -10) and not a.is_expendable(pod(prio=-5), -10)


def test_nodes_needed_packs_first_fit_decreasing_after_the_nodes_coming() -> None:
    g = groups()["gpu"]
    pods = [pod(gpus=8), pod(gpus=4), pod(gpus=4), pod(gpus=2), pod(gpus=1)]
    # 8 | 4+4 | 2+1 -> three nodes
    assert a.nodes_needed(pods, g, 0)[0] == 3
    assert a.nodes_needed(pods, g, 2)[0] == 1
    assert a.nodes_needed(pods, g, 5)[0] == 0


def test_a_pod_with_hostname_anti_affinity_takes_a_node_alone() -> None:
    g = groups()["gpu"]
    anti = {
        "podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {
                    "labelSelector": {"matchLabels": {"x": "y"}},
                    "topologyKey": "kubernetes.io/hostname",
                }
            ]
        }
    }
    pods = [pod(gpus=1, affinity=anti) for _ in range(3)]
    assert a.nodes_needed(pods, g, 0)[0] == 3


def test_template_fit_checks_selector_taints_and_size() -> None:
    g = groups("gpu=0:4,cpu=0:4")
    assert a.template_fits(pod(gpus=8), g["gpu"])
    assert not a.template_fits(pod(gpus=9), g["gpu"])
    assert not a.template_fits(pod(gpus=1), g["cpu"])
    assert not a.template_fits(pod(nodeSelector={"gpuyard.io/pool": "cpu"}), g["gpu"])
    # The preflight taint is a startup taint: it goes away, so it does not block.
    g["gpu"].template.taints = [{"key": "gpuyard.io/preflight", "effect": "NoSchedule"}]
    assert a.template_fits(pod(gpus=8), g["gpu"])
    g["gpu"].template.taints = [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]
    assert not a.template_fits(pod(gpus=8), g["gpu"])


def bound(gpus: int, prio: int = 0, ds: bool = False) -> Any:
    p = pod(gpus=gpus, prio=prio, unsched=False)
    p["spec"]["nodeName"] = "n"
    p["status"] = {"phase": "Running"}
    if ds:
        p["metadata"]["ownerReferences"] = [{"kind": "DaemonSet", "controller": True}]
    return p


def test_utilization_counts_gpus_and_ignores_daemonsets_and_expendable_pods() -> None:
    n = {"status": {"allocatable": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8"}}}
    u, movable = a.utilization(n, [bound(0, ds=True), bound(2, prio=-100)], -10)
    assert u == 0.0 and movable == []
    u, movable = a.utilization(n, [bound(8, prio=-5)], -10)  # a balloon above the cutoff
    assert u == 1.0 and len(movable) == 1
    u, movable = a.utilization(n, [bound(2)], -10)
    assert u == 0.25 and len(movable) == 1


def test_gpuyard_up_refuses_a_bad_node_group_before_starting(tmp_path: Any) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpuyard.cli",
            "up",
            "--autoscale",
            "gpu=5:2",
            "--data-dir",
            str(tmp_path / "d"),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "node group 'gpu=5:2': want 0 <= MIN <= MAX" in out.stderr
    assert not (tmp_path / "d" / "up.json").exists()
