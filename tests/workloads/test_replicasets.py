"""ReplicaSets on `gpuyard up`, with kubectl: pods of the template come up and run,
scale up and down, an orphan that matches the selector is adopted, status is kept."""

from __future__ import annotations

import json
import time
from typing import Any

from gpuyard.cluster.testing import ClusterProcess, wait_for

RS = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "metadata": {"name": "web"},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        },
    },
}


def pods(c: ClusterProcess) -> list[dict[str, Any]]:
    out = c.kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def running(c: ClusterProcess, n: int) -> bool:
    ps = pods(c)
    return len(ps) == n and all(p["status"].get("phase") == "Running" for p in ps)


def status(c: ClusterProcess) -> dict[str, Any]:
    return json.loads(c.kubectl("get", "rs", "web", "-o", "json").stdout)["status"]  # type: ignore[no-any-return]


def test_replicaset_scales_adopts_and_reports(cluster: ClusterProcess) -> None:
    # an orphan with the selector's labels, there first: adopted, and it counts
    orphan = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-stray", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }
    cluster.kubectl("create", "-f", "-", input=json.dumps(orphan))
    wait_for(lambda: running(cluster, 1))
    cluster.kubectl("create", "-f", "-", input=json.dumps(RS))
    wait_for(lambda: running(cluster, 3))
    uid = json.loads(cluster.kubectl("get", "rs", "web", "-o", "json").stdout)["metadata"]["uid"]
    assert "web-stray" in {p["metadata"]["name"] for p in pods(cluster)}
    for p in pods(cluster):
        (ref,) = p["metadata"]["ownerReferences"]
        assert ref["uid"] == uid and ref["controller"] is True and ref["kind"] == "ReplicaSet"
        assert p["metadata"]["name"].startswith("web-")
    wait_for(lambda: status(cluster).get("readyReplicas") == 3)
    st = status(cluster)
    assert st["replicas"] == 3 and st["availableReplicas"] == 3 and st["observedGeneration"] >= 1

    cluster.kubectl("scale", "rs", "web", "--replicas=5")
    wait_for(lambda: running(cluster, 5))
    cluster.kubectl("scale", "rs", "web", "--replicas=1")
    wait_for(lambda: len(pods(cluster)) == 1)
    wait_for(lambda: status(cluster).get("replicas") == 1)
    time.sleep(2)  # and it stays at one: no pod made twice from a lagging cache
    assert len(pods(cluster)) == 1

    # deleting the ReplicaSet takes its pods (the API server's garbage collector)
    cluster.kubectl("delete", "rs", "web")
    wait_for(lambda: not pods(cluster))
