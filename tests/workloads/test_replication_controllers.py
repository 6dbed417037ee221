"""v1 ReplicationControllers on `gpuyard up`, with kubectl: the selector defaults to the
template's labels, pods come up, `kubectl scale rc` scales, status is kept."""

from __future__ import annotations

import json

from gpuyard.cluster.testing import ClusterProcess, wait_for

RC = {
    "apiVersion": "v1",
    "kind": "ReplicationController",
    "metadata": {"name": "web"},
    "spec": {
        "replicas": 3,
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        },
    },
}


def test_replication_controller_keeps_and_scales_its_pods(cluster: ClusterProcess) -> None:
    cluster.kubectl("create", "-f", "-", input=json.dumps(RC))
    rc = json.loads(cluster.kubectl("get", "rc", "web", "-o", "json").stdout)
    assert rc["spec"]["selector"] == {"app": "web"}
    assert rc["metadata"]["labels"] == {"app": "web"}

    def status(**want: int) -> bool:
        st = (
            json.loads(cluster.kubectl("get", "rc", "web", "-o", "json").stdout).get("status") or {}
        )
        return all(st.get(k, 0) == v for k, v in want.items())

    wait_for(lambda: status(replicas=3, readyReplicas=3, availableReplicas=3, observedGeneration=1))
    pods = json.loads(cluster.kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)["items"]
    assert len(pods) == 3
    for p in pods:
        (ref,) = p["metadata"]["ownerReferences"]
        assert (ref["kind"], ref["name"], ref["controller"]) == (
            "ReplicationController",
            "web",
            True,
        )
    head, row = cluster.kubectl("get", "rc", "web").stdout.splitlines()
    assert head.split() == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
    assert row.split()[:4] == ["web", "3", "3", "3"]
    cluster.kubectl("scale", "rc", "web", "--replicas=1")
    wait_for(lambda: status(replicas=1, readyReplicas=1), what="the scale down")

    def live() -> int:
        items = json.loads(cluster.kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)[
            "items"
        ]
        return sum(1 for p in items if not p["metadata"].get("deletionTimestamp"))

    wait_for(lambda: live() == 1, what="two pods deleted")
