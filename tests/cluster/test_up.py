"""End to end on `gpuyard up`: simulated nodes, kubelets, node lifecycle, faults, restart."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from typing import Any

from gpuyard.cluster.testing import ClusterProcess
from gpuyard.kube.resources import NODES, PODS


def wait_for(fn: Callable[[], Any], timeout: float = 20, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(every)


def kjson(c: ClusterProcess, *args: str) -> Any:
    return json.loads(c.kubectl("get", *args, "-o", "json").stdout)


def pod_manifest(name: str, node: str, **ann: str) -> str:
    gpus = ann.pop("gpus", "1")
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "annotations": ann},
            "spec": {
                "nodeName": node,
                "containers": [
                    {
                        "name": "main",
                        "image": "busybox",
                        "resources": {"limits": {"nvidia.com/gpu": gpus}},
                    }
                ],
            },
        }
    )


def ready(node: dict[str, Any]) -> str:
    return next(c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready")


def test_nodes_register_ready_with_gpu_capacity_and_leases(cluster: ClusterProcess) -> None:
    nodes = kjson(cluster, "nodes")["items"]
    assert len(nodes) == 4
    for n in nodes:
        assert ready(n) == "True"
        assert n["status"]["allocatable"]["nvidia.com/gpu"] == "8"
        labels = n["metadata"]["labels"]
        assert labels["gpuyard.io/pool"] == "gpu"
        assert labels["nvidia.com/gpu.product"]
        assert labels["gpuyard.io/rack"] and labels["topology.kubernetes.io/zone"]
    leases = kjson(cluster, "leases", "-n", "kube-node-lease")["items"]
    assert {x["metadata"]["name"] for x in leases} == {n["metadata"]["name"] for n in nodes}
    first = {x["metadata"]["name"]: x["spec"]["renewTime"] for x in leases}
    before = lease_requests(cluster)
    time.sleep(2.5)
    after = lease_requests(cluster)
    again = {
        x["metadata"]["name"]: x["spec"]["renewTime"]
        for x in kjson(cluster, "leases", "-n", "kube-node-lease")["items"]
    }
    assert all(again[k] > first[k] for k in first), "leases are renewed every lease period"
    # The renewals are API writes (4 nodes, a 1 s lease period); the node lifecycle
    # (a pass every 0.75 s at the 3 s grace) reads them from its watch, never a list.
    writes = sum(after.get(v, 0) - before.get(v, 0) for v in ("update", "patch"))
    assert writes >= 8, (before, after)
    assert after.get("list", 0) == before.get("list", 0), (before, after)
    # The kubelet's field ownership of its Lease stays one entry, as renewals go on.
    owners = kjson(cluster, "lease", "-n", "kube-node-lease", "gpu-node-0000",
                   "--show-managed-fields")["metadata"]["managedFields"]  # fmt: skip
    assert [(m["manager"], m["operation"]) for m in owners] == [("gpuyard-kubelet", "Update")]
    assert "f:renewTime" in owners[0]["fieldsV1"]["f:spec"]


def lease_requests(c: ClusterProcess) -> dict[str, float]:
    """The API server's count of requests about Leases by verb (its
    apiserver_request_total, every namespace together)."""
    out: dict[str, float] = {}
    for line in c.kubectl("get", "--raw", "/metrics").stdout.splitlines():
        if line.startswith("apiserver_request_total{") and 'resource="leases"' in line:
            verb = line.split('verb="', 1)[1].split('"', 1)[0]
            out[verb] = out.get(verb, 0) + float(line.rsplit(" ", 1)[1])
    return out


def test_pod_runs_and_finishes_with_its_exit_code(cluster: ClusterProcess) -> None:
    cluster.kubectl(
        "create",
        "--validate=false",
        "-f",
        "-",
        input=pod_manifest(
            "trainer",
            "gpu-node-0001",
            **{"gpuyard.io/sim-duration": "1.5", "gpuyard.io/sim-exit-code": "3", "gpus": "8"},
        ),
    )
    running = wait_for(
        lambda: (p := kjson(cluster, "pod", "trainer"))["status"]["phase"] == "Running" and p
    )
    assert running["status"]["podIP"].startswith("10.")
    assert all(c["status"] == "True" for c in running["status"]["conditions"])
    done = wait_for(
        lambda: (p := kjson(cluster, "pod", "trainer"))["status"]["phase"] == "Failed" and p
    )
    term = done["status"]["containerStatuses"][0]["state"]["terminated"]
    assert term["exitCode"] == 3


def test_pod_asking_more_than_the_node_has_is_rejected(cluster: ClusterProcess) -> None:
    cluster.kubectl(
        "create",
        "--validate=false",
        "-f",
        "-",
        input=pod_manifest("big", "gpu-node-0002", gpus="8"),
    )
    wait_for(lambda: kjson(cluster, "pod", "big")["status"]["phase"] == "Running")
    cluster.kubectl(
        "create",
        "--validate=false",
        "-f",
        "-",
        input=pod_manifest("extra", "gpu-node-0002", gpus="1"),
    )
    p = wait_for(lambda: (p := kjson(cluster, "pod", "extra"))["status"]["phase"] == "Failed" and p)
    assert p["status"]["reason"] == "OutOfnvidia.com/gpu"
    cluster.kubectl("delete", "pod", "big", "--wait=true", "--timeout=20s")
    assert "big" not in cluster.kubectl("get", "pods", "-o", "name").stdout


def test_node_down_evicts_and_node_up_recovers(cluster: ClusterProcess) -> None:
    cluster.kubectl(
        "create", "--validate=false", "-f", "-", input=pod_manifest("victim", "gpu-node-0003")
    )
    wait_for(lambda: kjson(cluster, "pod", "victim")["status"]["phase"] == "Running")
    # A condition another component owns must survive the lifecycle's and kubelet's writes.
    mine = {"type": "ExampleCheck", "status": "False", "reason": "Fine", "message": "ok"}
    cluster.kubectl(
        "patch", "node", "gpu-node-0003", "--subresource=status", "--type=strategic",
        "-p", json.dumps({"status": {"conditions": [mine]}}),
    )  # fmt: skip
    cluster.fault("node-down", "gpu-node-0003")
    node = wait_for(
        lambda: (n := kjson(cluster, "node", "gpu-node-0003")) and ready(n) == "Unknown" and n,
        timeout=15,
    )
    taints = node["spec"]["taints"]
    assert {"node.kubernetes.io/unreachable": "NoExecute"} == {
        t["key"]: t["effect"] for t in taints
    }
    pod = wait_for(
        lambda: (p := kjson(cluster, "pod", "victim"))["metadata"].get("deletionTimestamp") and p
    )
    assert pod["status"]["phase"] == "Running"  # Terminating: its kubelet is gone
    cluster.fault("node-up", "gpu-node-0003")
    wait_for(lambda: ready(kjson(cluster, "node", "gpu-node-0003")) == "True", timeout=15)
    node = wait_for(
        lambda: (
            (n := kjson(cluster, "node", "gpu-node-0003")) and not n["spec"].get("taints") and n
        ),
        timeout=15,
    )
    kept = [c for c in node["status"]["conditions"] if c["type"] == "ExampleCheck"]
    assert [(c["status"], c["reason"]) for c in kept] == [("False", "Fine")]
    wait_for(lambda: "victim" not in cluster.kubectl("get", "pods", "-o", "name").stdout)
    listed = cluster.gpuyard("fault", "list", "--kubeconfig", cluster.kubeconfig)
    assert "node-down" in listed.stdout and "node-up" in listed.stdout


def test_xid_fault_lands_in_the_nodes_kernel_log(cluster: ClusterProcess) -> None:
    out = cluster.fault("gpu-xid", "gpu-node-0000", "--gpu", "2", "--xid", "79").stdout
    log = (cluster.data_dir / "hosts" / "gpu-node-0000" / "kern.log").read_text().splitlines()
    assert "NVRM: Xid (PCI:0000:38:00): 79, pid=0, name=, GPU has fallen off the bus." in log[-1]
    assert log[-1] in out
    gpus = json.loads((cluster.data_dir / "hosts" / "gpu-node-0000" / "gpus.json").read_text())[
        "gpus"
    ]
    assert gpus[2]["present"] is False
    bad = cluster.gpuyard(
        "fault", "gpu-xid", "gpu-node-0000", "--gpu", "9", "--kubeconfig", cluster.kubeconfig
    )
    assert bad.returncode == 1 and "has no GPU 9" in bad.stderr
    missing = cluster.gpuyard("fault", "node-down", "nope", "--kubeconfig", cluster.kubeconfig)
    assert missing.returncode == 1 and "no simulated node named 'nope'" in missing.stderr


def test_restart_resumes_from_the_data_directory(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=3)
    c.kubectl(
        "create", "--validate=false", "-f", "-", input=pod_manifest("keeper", "gpu-node-0001")
    )
    wait_for(lambda: kjson(c, "pod", "keeper")["status"]["phase"] == "Running")
    before = {n["metadata"]["name"]: n["metadata"]["uid"] for n in kjson(c, "nodes")["items"]}
    # Ctrl-C reaches every process of the group: all stop in order, quietly (no
    # traceback from a child, no request served after the audit log closed).
    assert c.terminate(sig=signal.SIGINT) == 0
    log = c.log()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    from gpuyard.cluster.testing import start_cluster_process

    again = start_cluster_process(c.data_dir, 3, ["--lease-seconds", "1", "--node-grace", "3"])
    try:
        after = {
            n["metadata"]["name"]: n["metadata"]["uid"] for n in kjson(again, "nodes")["items"]
        }
        assert after == before, "nodes are adopted, not duplicated"
        assert kjson(again, "pod", "keeper")["status"]["phase"] == "Running"
    finally:
        again.kill()


def test_in_process_client_sees_the_cluster(cluster: ClusterProcess) -> None:
    async def check() -> tuple[int, int]:
        async with cluster.client() as client:
            nodes = (await client.list(NODES))["items"]
            pods = (await client.list(PODS))["items"]
            return len(nodes), len(pods)

    assert asyncio.run(check()) == (4, 0)
