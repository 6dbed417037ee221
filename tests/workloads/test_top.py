"""metrics.k8s.io on `gpuyard up`: `kubectl top pods` and `top nodes` show the simulated
usage (a pod's gpuyard.io/sim-usage annotation, else a share of its requests; a node's
running pods plus the system's overhead), label selectors work, a downed node reports
nothing, and the official client reads the same; a bare API server has no metrics API,
as a cluster without metrics-server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8sconfig

from gpuyard.apiserver.testing import ServerProcess
from gpuyard.cluster.testing import ClusterProcess, wait_for


def pod(name: str, node: str, ann: dict[str, str], cpu: str | None = None) -> str:
    c: dict[str, Any] = {"name": "main", "image": "trainer"}
    if cpu:
        c["resources"] = {"requests": {"cpu": cpu, "memory": "2Gi"}}
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name}, "annotations": ann},
            "spec": {"nodeName": node, "containers": [c]},
        }
    )


def top(c: ClusterProcess, *args: str) -> list[list[str]]:
    out = c.kubectl("top", *args, "--no-headers").stdout
    return [ln.split() for ln in out.splitlines() if ln.strip()]


def running_pods_in_top(c: ClusterProcess) -> int:
    """How many pods `kubectl top pods` shows; 0 while it says the metrics are not there
    yet (kubectl exits 1 when a pod it lists has no metrics, as a pod not yet running has
    none, with metrics-server as here)."""
    out = c.kubectl("top", "pods", "--no-headers", check=False)
    if out.returncode != 0:
        assert "metrics not available yet" in out.stderr, out.stderr
        return 0
    return len([ln for ln in out.stdout.splitlines() if ln.strip()])


def test_top_pods_and_nodes_show_simulated_usage(cluster: ClusterProcess) -> None:
    c = cluster
    c.kubectl(
        "create",
        "-f",
        "-",
        input=pod("fixed", "gpu-node-0000", {"gpuyard.io/sim-usage": "cpu=250m,memory=512Mi"}),
    )
    c.kubectl("create", "-f", "-", input=pod("busy", "gpu-node-0001", {}, cpu="1"))
    wait_for(lambda: running_pods_in_top(c) == 2, what="both pods running")
    rows = {r[0]: r for r in top(c, "pods")}
    assert rows["fixed"][1:] == ["250m", "512Mi"]
    busy_cpu = int(rows["busy"][1].rstrip("m"))
    assert 200 <= busy_cpu <= 900  # a share of the 1 cpu it asked for
    busy_mem = int(rows["busy"][2].rstrip("Mi"))
    assert 1024 <= busy_mem <= 1946  # 50-95 % of 2Gi
    assert [r[0] for r in top(c, "pods", "-l", "app=fixed")] == ["fixed"]

    nodes = {r[0]: r for r in top(c, "nodes")}
    assert sorted(nodes) == [f"gpu-node-000{i}" for i in range(4)]
    # a node's pods, plus 100m and 1Gi for the system
    assert nodes["gpu-node-0000"][1] == "350m" and nodes["gpu-node-0000"][3] == "1536Mi"
    assert 300 <= int(nodes["gpu-node-0001"][1].rstrip("m")) <= 1000
    assert nodes["gpu-node-0002"][1] == "100m" and nodes["gpu-node-0002"][3] == "1024Mi"
    assert nodes["gpu-node-0000"][2].endswith("%")

    api = k8s.CustomObjectsApi(k8sconfig.new_client_from_config(config_file=c.kubeconfig))
    got = api.get_namespaced_custom_object("metrics.k8s.io", "v1beta1", "default", "pods", "fixed")
    assert got["containers"] == [
        {"name": "main", "usage": {"cpu": "250000000n", "memory": "524288Ki"}}
    ]
    listed = api.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    assert len(listed["items"]) == 4 and listed["kind"] == "NodeMetricsList"

    c.fault("node-down", "gpu-node-0003")

    def unknown() -> bool:  # kubectl prints a node the metrics API does not report so
        return {r[0]: r for r in top(c, "nodes")}["gpu-node-0003"][1] == "<unknown>"

    wait_for(unknown, what="node 3 without metrics")
    listed = api.list_cluster_custom_object("metrics.k8s.io", "v1beta1", "nodes")
    assert "gpu-node-0003" not in {m["metadata"]["name"] for m in listed["items"]}


def test_bare_apiserver_has_no_metrics_api(apiserver: ServerProcess) -> None:
    exe = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or "kubectl"
    out = subprocess.run(
        [exe, "--kubeconfig", apiserver.kubeconfig, "top", "nodes"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "Metrics API not available" in out.stderr
