"""DaemonSets on `gpuyard up`, with kubectl: one pod on every matching node, also on a
cordoned one (the unschedulable toleration every DaemonSet pod gets), none on a node
with a taint it does not tolerate; relabelling a node moves the daemon."""

from __future__ import annotations

import json
from collections.abc import Callable

from gpuyard.cluster.testing import ClusterProcess, wait_for

DS = {
    "apiVersion": "apps/v1",
    "kind": "DaemonSet",
    "metadata": {"name": "agent"},
    "spec": {
        "selector": {"matchLabels": {"app": "agent"}},
        "template": {
            "metadata": {"labels": {"app": "agent"}},
            "spec": {
                "nodeSelector": {"gpuyard.io/pool": "gpu"},
                "containers": [{"name": "c", "image": "busybox"}],
            },
        },
    },
}


def nodes_running(c: ClusterProcess) -> list[str]:
    out = json.loads(c.kubectl("get", "pods", "-l", "app=agent", "-o", "json").stdout)
    return sorted(
        p["spec"]["nodeName"]
        for p in out["items"]
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    )


def test_daemonset_one_pod_per_matching_node(make_cluster: Callable[..., ClusterProcess]) -> None:
    c = make_cluster(nodes=3, args=["--cpu-nodes", "1"])
    c.kubectl("cordon", "gpu-node-0001")
    c.kubectl("taint", "node", "gpu-node-0002", "dedicated=x:NoSchedule")
    c.kubectl("create", "-f", "-", input=json.dumps(DS))
    wait_for(lambda: nodes_running(c) == ["gpu-node-0000", "gpu-node-0001"])
    st = json.loads(c.kubectl("get", "ds", "agent", "-o", "json").stdout)["status"]
    wait_for(
        lambda: (
            json.loads(c.kubectl("get", "ds", "agent", "-o", "json").stdout)["status"].get(
                "numberReady"
            )
            == 2
        )
    )
    st = json.loads(c.kubectl("get", "ds", "agent", "-o", "json").stdout)["status"]
    assert st["desiredNumberScheduled"] == 2 and st["currentNumberScheduled"] == 2
    # the taint goes: the daemon comes; the pool label goes: the daemon goes
    c.kubectl("taint", "node", "gpu-node-0002", "dedicated=x:NoSchedule-")
    wait_for(lambda: nodes_running(c) == ["gpu-node-0000", "gpu-node-0001", "gpu-node-0002"])
    c.kubectl("label", "node", "gpu-node-0000", "gpuyard.io/pool=other", "--overwrite")
    wait_for(lambda: nodes_running(c) == ["gpu-node-0001", "gpu-node-0002"])
