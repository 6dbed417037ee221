"""Deployments on `gpuyard up`, with kubectl: create deployment, rollout status, scale,
set image (a rolling update), rollout history and undo."""

from __future__ import annotations

import json

from gpuyard.cluster.testing import ClusterProcess, wait_for


def images(c: ClusterProcess) -> list[str]:
    out = json.loads(c.kubectl("get", "pods", "-l", "app=web", "-o", "json").stdout)
    return sorted(
        p["spec"]["containers"][0]["image"]
        for p in out["items"]
        if not p["metadata"].get("deletionTimestamp") and p["status"].get("phase") == "Running"
    )


def rollout(c: ClusterProcess) -> str:
    out = c.kubectl("rollout", "status", "deployment/web", "--timeout=60s", timeout=90)
    return out.stdout


def test_deployment_rolls_out_scales_updates_and_undoes(cluster: ClusterProcess) -> None:
    c = cluster
    c.kubectl("create", "deployment", "web", "--image=nginx:1", "--replicas=3")
    assert 'deployment "web" successfully rolled out' in rollout(c)
    wait_for(lambda: images(c) == ["nginx:1"] * 3)
    d = json.loads(c.kubectl("get", "deploy", "web", "-o", "json").stdout)
    st = d["status"]
    assert (st["replicas"], st["updatedReplicas"], st["readyReplicas"]) == (3, 3, 3)
    assert st["availableReplicas"] == 3 and st["observedGeneration"] == d["metadata"]["generation"]
    conds = {x["type"]: (x["status"], x["reason"]) for x in st["conditions"]}
    assert conds["Available"] == ("True", "MinimumReplicasAvailable")
    assert conds["Progressing"] == ("True", "NewReplicaSetAvailable")
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    (rs,) = json.loads(c.kubectl("get", "rs", "-l", "app=web", "-o", "json").stdout)["items"]
    h = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{h}"

    c.kubectl("scale", "deployment/web", "--replicas=5")
    rollout(c)
    wait_for(lambda: images(c) == ["nginx:1"] * 5)

    c.kubectl("set", "image", "deployment/web", "nginx=nginx:2")
    assert "successfully rolled out" in rollout(c)
    wait_for(lambda: images(c) == ["nginx:2"] * 5)
    sets = json.loads(c.kubectl("get", "rs", "-l", "app=web", "-o", "json").stdout)["items"]
    by_rev = {
        s["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: s["spec"]["replicas"]
        for s in sets
    }
    assert by_rev == {"1": 0, "2": 5}
    history = c.kubectl("rollout", "history", "deployment/web").stdout
    assert "1 " in history and "2 " in history

    c.kubectl("rollout", "undo", "deployment/web")
    assert "successfully rolled out" in rollout(c)
    wait_for(lambda: images(c) == ["nginx:1"] * 5)
    sets = json.loads(c.kubectl("get", "rs", "-l", "app=web", "-o", "json").stdout)["items"]
    assert len(sets) == 2  # the first ReplicaSet came back, as revision 3
    revs = {
        s["metadata"]["name"]: s["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        for s in sets
    }
    assert revs[f"web-{h}"] == "3"
