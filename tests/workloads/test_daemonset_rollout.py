"""DaemonSet rollouts on `gpuyard up`, with kubectl: a new template rolls out to every
node (`rollout status ds` ends), each template is kept as a ControllerRevision so
`rollout history` lists them and `rollout undo` goes back; OnDelete leaves pods alone."""

from __future__ import annotations

import json
import time
from typing import Any

from gpuyard.cluster.testing import ClusterProcess, wait_for


def ds(name: str, strategy: str = "RollingUpdate") -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "updateStrategy": {"type": strategy},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "agent", "image": "agent:1"}]},
                },
            },
        }
    )


def get(c: ClusterProcess, *what: str) -> Any:
    return json.loads(c.kubectl("get", *what, "-o", "json").stdout)


def images(c: ClusterProcess, app: str) -> list[str]:
    items = get(c, "pods", "-l", f"app={app}")["items"]
    return sorted(
        p["spec"]["containers"][0]["image"]
        for p in items
        if not p["metadata"].get("deletionTimestamp")
    )


def rolled(c: ClusterProcess, name: str) -> None:
    c.kubectl("rollout", "status", f"ds/{name}", "--timeout=60s", timeout=90)


def test_rolling_update_history_and_undo(make_cluster: Any) -> None:
    c = make_cluster(nodes=3)
    c.kubectl("apply", "-f", "-", input=ds("agent"))
    rolled(c, "agent")
    assert images(c, "agent") == ["agent:1"] * 3
    c.kubectl("set", "image", "ds/agent", "agent=agent:2")
    rolled(c, "agent")
    wait_for(lambda: images(c, "agent") == ["agent:2"] * 3, what="every node on agent:2")
    st = get(c, "ds", "agent")["status"]
    assert st["updatedNumberScheduled"] == st["desiredNumberScheduled"] == 3
    revs = {r["revision"]: r for r in get(c, "controllerrevisions", "-l", "app=agent")["items"]}
    assert sorted(revs) == [1, 2]
    hash2 = revs[2]["metadata"]["labels"]["controller.kubernetes.io/hash"]
    pods = get(c, "pods", "-l", "app=agent")["items"]
    assert {p["metadata"]["labels"]["controller-revision-hash"] for p in pods} == {hash2}
    history = c.kubectl("rollout", "history", "ds/agent").stdout
    assert [ln.split()[0] for ln in history.splitlines()[2:] if ln.strip()] == ["1", "2"]

    c.kubectl("rollout", "undo", "ds/agent")
    rolled(c, "agent")
    wait_for(lambda: images(c, "agent") == ["agent:1"] * 3, what="every node back on agent:1")
    revs = {r["revision"]: r for r in get(c, "controllerrevisions", "-l", "app=agent")["items"]}
    assert sorted(revs) == [2, 3]


def test_on_delete_waits_for_pods_to_be_deleted(cluster: ClusterProcess) -> None:
    c = cluster
    c.kubectl("apply", "-f", "-", input=ds("od", "OnDelete"))
    # (`rollout status` answers only for RollingUpdate, as kubectl says)
    wait_for(lambda: images(c, "od") == ["agent:1"] * 4, what="a daemon on each node")
    c.kubectl("set", "image", "ds/od", "agent=agent:2")
    time.sleep(2)
    assert images(c, "od") == ["agent:1"] * 4
    (first, *_) = get(c, "pods", "-l", "app=od")["items"]
    c.kubectl("delete", "pod", first["metadata"]["name"])
    wait_for(lambda: images(c, "od") == ["agent:1"] * 3 + ["agent:2"], what="one remade")
