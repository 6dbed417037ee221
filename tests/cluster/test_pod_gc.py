"""Pod garbage collection on `gpuyard up`: a pod bound to a node that is deleted goes
away once the node has been gone for the quarantine (the node grace here)."""

from __future__ import annotations

import json
import time

from gpuyard.cluster.testing import ClusterProcess

POD = """
apiVersion: v1
kind: Pod
metadata: {name: pinned, namespace: default}
spec:
  nodeName: gpu-node-0001
  containers: [{name: c, image: busybox}]
"""


def _phase(c: ClusterProcess) -> str | None:
    out = c.kubectl("get", "pod", "pinned", "-o", "json", check=False)
    if out.returncode != 0:
        return None
    phase: str = json.loads(out.stdout)["status"].get("phase", "Pending")
    return phase


def test_pods_of_a_deleted_node_are_collected(cluster: ClusterProcess) -> None:
    c = cluster
    c.kubectl("apply", "-f", "-", input=POD)
    deadline = time.monotonic() + 20
    while _phase(c) != "Running":
        assert time.monotonic() < deadline, "pod did not start"
        time.sleep(0.2)
    c.kubectl("delete", "node", "gpu-node-0001")
    t0 = time.monotonic()
    while _phase(c) is not None:
        assert time.monotonic() - t0 < 30, "pod of the deleted node was not collected"
        time.sleep(0.3)
    # Not before the quarantine (3 s node grace in the test cluster).
    assert time.monotonic() - t0 >= 2.5
    # The collector logs once the delete has returned: waited for, not read at once.
    deadline = time.monotonic() + 10
    while "which no longer exists" not in c.log():
        assert time.monotonic() < deadline, c.log()[-2000:]
        time.sleep(0.2)
