"""StatefulSets on `gpuyard up`, with kubectl: pods <set>-<ordinal> come up one at a time
in order (OrderedReady), `rollout status` ends, a scale down removes the highest ordinal,
a template change rolls pods from the highest ordinal to the partition, and Parallel
makes them all at once."""

from __future__ import annotations

import json
import time
from typing import Any

from gpuyard.cluster.testing import ClusterProcess, wait_for


def sts(name: str, replicas: int, policy: str = "OrderedReady") -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "serviceName": name,
                "podManagementPolicy": policy,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "etcd:3"}]},
                },
            },
        }
    )


def pods(c: ClusterProcess, app: str) -> dict[str, dict[str, Any]]:
    out = c.kubectl("get", "pods", "-l", f"app={app}", "-o", "json").stdout
    return {
        p["metadata"]["name"]: p
        for p in json.loads(out)["items"]
        if not p["metadata"].get("deletionTimestamp")
    }


def test_ordered_ready_scale_and_rolling_update(cluster: ClusterProcess) -> None:
    c = cluster
    c.kubectl("apply", "-f", "-", input=sts("db", 3))
    # watch the pods appear: each only once the one before it runs
    order: list[str] = []
    running_at_creation: list[set[str]] = []

    def all_running() -> bool:
        ps = pods(c, "db")
        for n in sorted(ps, key=lambda n: ps[n]["metadata"]["creationTimestamp"]):
            if n not in order:
                order.append(n)
                running_at_creation.append(
                    {m for m, p in ps.items() if m != n and p["status"].get("phase") == "Running"}
                )
        return len(ps) == 3 and all(p["status"].get("phase") == "Running" for p in ps.values())

    wait_for(all_running, every=0.05)
    assert order == ["db-0", "db-1", "db-2"]
    # when each pod was first seen, every lower ordinal was already Running
    assert [running_at_creation[i] >= set(order[:i]) for i in range(3)] == [True] * 3
    for i, name in enumerate(order):
        ps = pods(c, "db")
        assert ps[name]["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == str(i)
        assert ps[name]["spec"]["hostname"] == name and ps[name]["spec"]["subdomain"] == "db"
    # creation times are ordered (second resolution) and no pod came before its predecessor
    created = [pods(c, "db")[n]["metadata"]["creationTimestamp"] for n in order]
    assert created == sorted(created)

    done = c.kubectl("rollout", "status", "sts/db", "--timeout=30s")
    assert "roll out complete" in done.stdout or "partitioned roll out complete" in done.stdout
    st = json.loads(c.kubectl("get", "sts", "db", "-o", "json").stdout)["status"]
    assert st["replicas"] == st["readyReplicas"] == st["currentReplicas"] == 3
    assert st["updatedReplicas"] == 3 and st["currentRevision"] == st["updateRevision"]

    # scale down: the highest ordinal goes
    c.kubectl("scale", "sts/db", "--replicas=2")
    wait_for(lambda: set(pods(c, "db")) == {"db-0", "db-1"})
    c.kubectl("rollout", "status", "sts/db", "--timeout=30s")

    # a template change with partition 1: only db-1 is replaced
    c.kubectl(
        "patch",
        "sts",
        "db",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "spec": {
                    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}},
                    "template": {"spec": {"containers": [{"name": "c", "image": "etcd:4"}]}},
                }
            }
        ),
    )

    def images() -> dict[str, str]:
        ps = pods(c, "db")
        return {n: p["spec"]["containers"][0]["image"] for n, p in ps.items()}

    wait_for(lambda: images() == {"db-0": "etcd:3", "db-1": "etcd:4"})
    out = c.kubectl("rollout", "status", "sts/db", "--timeout=30s").stdout
    assert "partitioned roll out complete" in out
    time.sleep(1)
    assert images()["db-0"] == "etcd:3"


def test_parallel_makes_all_at_once(cluster: ClusterProcess) -> None:
    c = cluster
    c.kubectl("apply", "-f", "-", input=sts("par", 4, "Parallel"))
    wait_for(lambda: set(pods(c, "par")) == {"par-0", "par-1", "par-2", "par-3"})
    c.kubectl("rollout", "status", "sts/par", "--timeout=30s")
