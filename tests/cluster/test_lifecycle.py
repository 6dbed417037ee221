"""Node lifecycle on `gpuyard up`, seen with kubectl: a node that has just registered
is given its grace period before it is called unreachable, whether or not its Lease is
written yet (a kubelet creates its Node first and its Lease a moment later, and under
load that moment can be longer than a lifecycle pass); a node that never heartbeats is
still marked once the grace has passed, and its pods are evicted."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from gpuyard.cluster.testing import ClusterProcess
from gpuyard.cluster.testing import wait_for as _until

GRACE = 5

NODE = {
    "apiVersion": "v1",
    "kind": "Node",
    "metadata": {"name": "late-kubelet", "labels": {"kubernetes.io/hostname": "late-kubelet"}},
}
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "on-late", "namespace": "default"},
    "spec": {"nodeName": "late-kubelet", "containers": [{"name": "main", "image": "busybox"}]},
}


def _get(c: ClusterProcess, *args: str) -> Any:
    return json.loads(c.kubectl("get", *args, "-o", "json").stdout)


def _unreachable(node: dict[str, Any]) -> bool:
    taints = (node.get("spec") or {}).get("taints") or []
    return any(t.get("key") == "node.kubernetes.io/unreachable" for t in taints)


def test_a_node_without_a_lease_yet_gets_its_grace_period(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    # One simulated node beside it, alive: were every node of the cluster unreachable,
    # none would be tainted (kube-controller-manager's disruption mode)
    c = make_cluster(1, ["--node-grace", str(GRACE), "--components", "none"])
    c.kubectl("create", "-f", "-", input=json.dumps(NODE))
    t0 = time.monotonic()
    c.kubectl("create", "-f", "-", input=json.dumps(POD))
    assert c.kubectl(
        "get", "lease", "-n", "kube-node-lease", "late-kubelet", check=False
    ).returncode

    # Several lifecycle passes (one every 1.25 s at a 5 s grace) within the grace: the
    # node is not unreachable and its pod is not evicted.
    time.sleep(2.5)
    assert time.monotonic() - t0 < GRACE - 1, "too slow to check within the grace period"
    node = _get(c, "node", "late-kubelet")
    assert not _unreachable(node), node["spec"]
    assert not _get(c, "pod", "on-late")["metadata"].get("deletionTimestamp")

    # No heartbeat ever came: once the grace has passed it is marked, its pod evicted.
    _until(lambda: _unreachable(_get(c, "node", "late-kubelet")), 20, "the node to be marked")
    assert time.monotonic() - t0 >= GRACE - 1.5  # creationTimestamp has 1 s resolution
    _until(
        lambda: _get(c, "pod", "on-late")["metadata"].get("deletionTimestamp"),
        20,
        "the pod of the unreachable node to be evicted",
    )
    assert "late-kubelet stopped renewing its lease: marked unreachable" in c.log()


def test_a_restart_longer_than_the_grace_keeps_the_nodes_and_their_pods(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    """The cluster is down for longer than the node grace: after the restart every
    Lease is older than the grace until its node renews it, which is no reason to call
    the nodes unreachable and evict their pods."""
    from gpuyard.cluster.testing import start_cluster_process

    fast = ["--lease-seconds", "1", "--node-grace", "3", "--components", "none"]
    c = make_cluster(2, fast)
    pod = {**POD, "spec": {**POD["spec"], "nodeName": "gpu-node-0001"}}
    c.kubectl("create", "-f", "-", input=json.dumps(pod))
    _until(
        lambda: _get(c, "pod", "on-late").get("status", {}).get("phase") == "Running",
        20,
        "the pod to run",
    )
    assert c.terminate() == 0
    time.sleep(4.5)  # longer than the 3 s grace: every lease is stale now
    again = start_cluster_process(c.data_dir, 2, fast)
    try:
        time.sleep(3)  # several lifecycle passes
        for name in ("gpu-node-0000", "gpu-node-0001"):
            assert not _unreachable(_get(again, "node", name)), name
        got = _get(again, "pod", "on-late")
        assert not got["metadata"].get("deletionTimestamp"), got["metadata"]
        assert "marked unreachable" not in again.log()
    finally:
        again.kill()
