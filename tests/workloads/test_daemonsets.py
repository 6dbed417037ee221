"""DaemonSets on `gpuyard up`, with kubectl: one pod on every matching node, also on a
cordoned one (the unschedulable toleration every DaemonSet pod gets), none on a node
with a taint it does not tolerate; relabelling a node moves the daemon. The health agent
DaemonSet of `gpuyard manifests` runs on every simulated GPU node (cordoned too), not
on the CPU node."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import yaml

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

    # The health agent DaemonSet as `gpuyard manifests` ships it (its namespace and
    # account with it): one pod on every GPU node, whatever its taints, none on the CPU node.
    out = subprocess.run(
        [sys.executable, "-m", "gpuyard.cli", "manifests"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    want = {
        ("Namespace", "gpuyard-system"),
        ("ServiceAccount", "gpuyard-health-agent"),
        ("DaemonSet", "gpuyard-health-agent"),
    }
    docs = [d for d in yaml.safe_load_all(out) if d and (d["kind"], d["metadata"]["name"]) in want]
    assert len(docs) == 3
    c.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})
    )

    def agents() -> list[str]:
        got = c.kubectl(
            "get", "pods", "-n", "gpuyard-system", "-l", "app=gpuyard-health-agent", "-o", "json"
        ).stdout
        return sorted(
            p["spec"]["nodeName"]
            for p in json.loads(got)["items"]
            if p["status"].get("phase") == "Running"
        )

    gpu_nodes = ["gpu-node-0000", "gpu-node-0001", "gpu-node-0002"]
    wait_for(lambda: agents() == gpu_nodes, what="the health agent on every GPU node")
    st = json.loads(
        c.kubectl("get", "ds", "-n", "gpuyard-system", "gpuyard-health-agent", "-o", "json").stdout
    )["status"]
    assert st["desiredNumberScheduled"] == 3
