"""StatefulSet revisions and claims on `gpuyard up`, with kubectl: every template is kept
as a ControllerRevision, so `rollout history` lists them and `rollout undo` goes back
(the old revision becomes the newest); volumeClaimTemplates give each ordinal its own
PersistentVolumeClaim, mounted by its pod, kept across a pod's restart and deleted
with the set when the retention policy says so."""

from __future__ import annotations

import json
from typing import Any

from gpuyard.cluster.testing import ClusterProcess, wait_for


def sts(name: str, image: str, **spec: Any) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name},
            "spec": {
                "replicas": 2,
                "serviceName": name,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": image}]},
                },
                **spec,
            },
        }
    )


def get(c: ClusterProcess, *what: str) -> Any:
    return json.loads(c.kubectl("get", *what, "-o", "json").stdout)


def revisions(c: ClusterProcess, app: str) -> dict[int, dict[str, Any]]:
    items = get(c, "controllerrevisions", "-l", f"app={app}")["items"]
    return {r["revision"]: r for r in items}


def images(c: ClusterProcess, app: str) -> list[str]:
    items = get(c, "pods", "-l", f"app={app}")["items"]
    return sorted(p["spec"]["containers"][0]["image"] for p in items)


def rolled(c: ClusterProcess, name: str) -> None:
    c.kubectl("rollout", "status", f"sts/{name}", "--timeout=60s", timeout=90)


def test_rollout_history_and_undo(cluster: ClusterProcess) -> None:
    c = cluster
    c.kubectl("apply", "-f", "-", input=sts("web", "etcd:3"))
    rolled(c, "web")
    c.kubectl("set", "image", "sts/web", "c=etcd:4")
    rolled(c, "web")
    assert images(c, "web") == ["etcd:4", "etcd:4"]
    revs = wait_for(lambda: len(revisions(c, "web")) == 2 and revisions(c, "web"))
    one, two = revs[1], revs[2]
    assert one["data"]["spec"]["template"]["spec"]["containers"][0]["image"] == "etcd:3"
    assert two["data"]["spec"]["template"]["$patch"] == "replace"
    (owner,) = two["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["controller"]) == ("StatefulSet", "web", True)
    st = get(c, "sts", "web")["status"]
    assert st["updateRevision"] == st["currentRevision"] == two["metadata"]["name"]
    pods = get(c, "pods", "-l", "app=web")["items"]
    assert {p["metadata"]["labels"]["controller-revision-hash"] for p in pods} == {
        two["metadata"]["name"]
    }
    history = c.kubectl("rollout", "history", "sts/web").stdout
    assert [ln.split()[0] for ln in history.splitlines()[2:] if ln.strip()] == ["1", "2"]
    shown = c.kubectl("rollout", "history", "sts/web", "--revision=1").stdout
    assert "etcd:3" in shown

    c.kubectl("rollout", "undo", "sts/web")
    rolled(c, "web")
    wait_for(lambda: images(c, "web") == ["etcd:3", "etcd:3"], what="the pods back on etcd:3")
    revs = wait_for(lambda: sorted(revisions(c, "web")) == [2, 3] and revisions(c, "web"))
    assert revs[3]["metadata"]["name"] == one["metadata"]["name"]  # the old one, renumbered
    assert get(c, "sts", "web")["status"]["updateRevision"] == one["metadata"]["name"]


def test_claims_per_ordinal_from_volume_claim_templates(cluster: ClusterProcess) -> None:
    c = cluster
    claim = {
        "metadata": {"name": "data", "labels": {"tier": "db"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    body = sts(
        "pg",
        "postgres",
        volumeClaimTemplates=[claim],
        persistentVolumeClaimRetentionPolicy={"whenDeleted": "Delete", "whenScaled": "Retain"},
    )
    c.kubectl("apply", "-f", "-", input=body)
    rolled(c, "pg")
    pvcs = {p["metadata"]["name"]: p for p in get(c, "pvc")["items"]}
    assert sorted(pvcs) == ["data-pg-0", "data-pg-1"]
    for p in pvcs.values():
        assert p["metadata"]["labels"] == {"tier": "db", "app": "pg"}
        assert p["spec"]["resources"]["requests"]["storage"] == "1Gi"
        assert p["status"]["phase"] == "Pending"  # no storage in the simulated cluster
    for i in (0, 1):
        pod = get(c, "pod", f"pg-{i}")
        (vol,) = [v for v in pod["spec"]["volumes"] if v["name"] == "data"]
        assert vol["persistentVolumeClaim"]["claimName"] == f"data-pg-{i}"
    uid = pvcs["data-pg-0"]["metadata"]["uid"]
    pod_uid = get(c, "pod", "pg-0")["metadata"]["uid"]
    c.kubectl("delete", "pod", "pg-0")

    def remade() -> bool:
        out = c.kubectl("get", "pod", "pg-0", "-o", "json", check=False)
        if out.returncode != 0:
            return False
        pod = json.loads(out.stdout)
        return pod["metadata"]["uid"] != pod_uid and pod["status"].get("phase") == "Running"

    wait_for(remade, what="pg-0 made again")
    assert get(c, "pvc", "data-pg-0")["metadata"]["uid"] == uid  # the same claim
    c.kubectl("delete", "sts", "pg")
    wait_for(lambda: get(c, "pvc")["items"] == [], what="the claims to go with the set")
