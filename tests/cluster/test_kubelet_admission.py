"""End to end on `gpuyard up`, with kubectl: the simulated kubelet admits pods as a real
one does (whoever bound them: a user's spec.nodeName is never rebound by the scheduler),
and the taint manager evicts pods from NoExecute-tainted nodes, honouring
tolerationSeconds."""

from __future__ import annotations

import json
import time
from typing import Any

from gpuyard.cluster.testing import ClusterProcess, wait_for


def pod(name: str, node: str | None = None, **spec: Any) -> str:
    body: dict[str, Any] = {
        "containers": [
            {"name": "main", "image": "busybox", "resources": spec.pop("resources", {})}
        ],
        **spec,
    }
    if node:
        body["nodeName"] = node
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": body})


def get(c: ClusterProcess, name: str) -> dict[str, Any] | None:
    out = c.kubectl("get", "pod", name, "-o", "json", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def phase(c: ClusterProcess, name: str) -> str | None:
    p = get(c, name)
    return None if p is None else p["status"].get("phase")


def test_kubelet_refuses_what_a_real_kubelet_refuses(cluster: ClusterProcess) -> None:
    node = "gpu-node-0001"
    create = lambda body: cluster.kubectl("create", "-f", "-", input=body)  # noqa: E731
    # node selector: the user bound it to a node whose labels do not match
    create(pod("sel", node, nodeSelector={"gpuyard.io/pool": "cpu"}))
    # an extended resource the node does not have
    create(pod("mig", node, resources={"limits": {"nvidia.com/mig-1g.10gb": "1"}}))
    # host ports: the second pod binding 8080/TCP on the node is refused
    port = [{"containerPort": 80, "hostPort": 8080}]
    body = json.loads(pod("web1", node))
    body["spec"]["containers"][0]["ports"] = port
    create(json.dumps(body))
    wait_for(lambda: phase(cluster, "web1") == "Running")
    body["metadata"]["name"] = "web2"
    create(json.dumps(body))
    for name, reason in (
        ("sel", "NodeAffinity"),
        ("mig", "OutOfnvidia.com/mig-1g.10gb"),
        ("web2", "NodePorts"),
    ):
        p = wait_for(
            lambda n=name: (x := get(cluster, n)) and x["status"].get("phase") == "Failed" and x
        )
        assert p["status"]["reason"] == reason, p["status"]
        assert p["status"]["message"].startswith("Pod was rejected: "), p["status"]
        assert p["spec"]["nodeName"] == node  # never rebound
    # a pod bound by its user to a node that fits runs there, untouched by the scheduler
    create(pod("mine", "gpu-node-0002", resources={"limits": {"nvidia.com/gpu": "8"}}))
    wait_for(lambda: phase(cluster, "mine") == "Running")
    assert get(cluster, "mine")["spec"]["nodeName"] == "gpu-node-0002"  # type: ignore[index]


def test_no_execute_taint_evicts_after_toleration_seconds(cluster: ClusterProcess) -> None:
    node = "gpu-node-0003"
    tol = {"key": "maintenance", "operator": "Exists", "effect": "NoExecute"}
    cluster.kubectl("create", "-f", "-", input=pod("plain", node))
    cluster.kubectl(
        "create", "-f", "-", input=pod("brief", node, tolerations=[{**tol, "tolerationSeconds": 4}])
    )
    cluster.kubectl("create", "-f", "-", input=pod("forever", node, tolerations=[tol]))
    for name in ("plain", "brief", "forever"):
        wait_for(lambda n=name: phase(cluster, n) == "Running")
    t0 = time.monotonic()
    cluster.kubectl("taint", "node", node, "maintenance=now:NoExecute")
    wait_for(lambda: get(cluster, "plain") is None, timeout=15)
    assert time.monotonic() - t0 < 3.5, "an untolerating pod leaves at once"
    gone = wait_for(lambda: get(cluster, "brief") is None, timeout=20)
    assert gone and time.monotonic() - t0 >= 3.5, "a pod tolerating 4 s stays about 4 s"
    time.sleep(1.0)
    forever = get(cluster, "forever")
    assert forever is not None and not forever["metadata"].get("deletionTimestamp")
    events = json.loads(
        cluster.kubectl(
            "get", "events", "--field-selector", "involvedObject.name=brief", "-o", "json"
        ).stdout
    )["items"]
    assert any(e["reason"] == "TaintManagerEviction" for e in events), events
    cluster.kubectl("taint", "node", node, "maintenance=now:NoExecute-")
