"""Events from the simulated kubelets on `gpuyard up`, as `kubectl events` shows them:
Pulled, Created and Started for a pod's containers, from the kubelet on its node;
Killing when it is deleted; a Warning with the reason when the kubelet refuses a pod."""

from __future__ import annotations

import json
from typing import Any

from gpuyard.cluster.testing import ClusterProcess, wait_for


def events(c: ClusterProcess, pod: str) -> list[dict[str, Any]]:
    out = c.kubectl(
        "get", "events", "--field-selector", f"involvedObject.name={pod}", "-o", "json"
    ).stdout
    return json.loads(out)["items"]  # type: ignore[no-any-return]


def reasons(c: ClusterProcess, pod: str) -> set[str]:
    return {e["reason"] for e in events(c, pod)}


def test_container_lifecycle_events(cluster: ClusterProcess) -> None:
    c = cluster
    c.kubectl("run", "web", "--image=nginx:1.27", "--restart=Never")
    wait_for(lambda: reasons(c, "web") >= {"Pulled", "Created", "Started"}, what="start events")
    pod = json.loads(c.kubectl("get", "pod", "web", "-o", "json").stdout)
    node = pod["spec"]["nodeName"]
    by_reason = {e["reason"]: e for e in events(c, "web")}
    for reason, message in (
        ("Pulled", 'Container image "nginx:1.27" already present on machine'),
        ("Created", "Created container: web"),
        ("Started", "Started container web"),
    ):
        e = by_reason[reason]
        assert e["message"] == message and e["type"] == "Normal"
        assert e["source"] == {"component": "kubelet", "host": node}
        assert e["involvedObject"]["fieldPath"] == "spec.containers{web}"
        assert e["involvedObject"]["uid"] == pod["metadata"]["uid"]
    shown = c.kubectl("events", "--for", "pod/web").stdout
    assert "Started container web" in shown
    c.kubectl("delete", "pod", "web", "--wait=false")
    killing = wait_for(
        lambda: [e for e in events(c, "web") if e["reason"] == "Killing"], what="Killing"
    )
    assert killing[0]["message"] == "Stopping container web"


def test_refused_pod_gets_a_warning(cluster: ClusterProcess) -> None:
    c = cluster
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "huge"},
        "spec": {
            "nodeName": "gpu-node-0000",
            "restartPolicy": "Never",
            "containers": [
                {"name": "c", "image": "x", "resources": {"requests": {"cpu": "100000"}}}
            ],
        },
    }
    c.kubectl("create", "-f", "-", input=json.dumps(body))
    (warn,) = wait_for(
        lambda: [e for e in events(c, "huge") if e["type"] == "Warning"], what="the refusal"
    )
    pod = json.loads(c.kubectl("get", "pod", "huge", "-o", "json").stdout)
    assert pod["status"]["phase"] == "Failed"
    assert warn["reason"] == pod["status"]["reason"] == "OutOfcpu"
    assert warn["message"] == pod["status"]["message"]
