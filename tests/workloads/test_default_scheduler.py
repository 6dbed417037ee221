"""`gpuyard up` answers for default-scheduler: a pod from ordinary tooling (no
schedulerName) is bound and runs, with a Scheduled Event as kube-scheduler writes it;
`--set scheduler_default=false` turns that off."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from gpuyard.cluster.testing import ClusterProcess, wait_for
from gpuyard.scheduling.state import ClusterState


def _pod(c: ClusterProcess, name: str) -> dict[str, Any]:
    return json.loads(c.kubectl("get", "pod", name, "-o", "json").stdout)  # type: ignore[no-any-return]


def test_pod_without_scheduler_name_is_bound_and_runs(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=2)
    c.kubectl("run", "plain", "--image=busybox", "--restart=Never")
    deadline = time.monotonic() + 30
    while (p := _pod(c, "plain"))["status"].get("phase") != "Running":
        assert time.monotonic() < deadline, p["status"]
        time.sleep(0.2)
    assert p["spec"]["schedulerName"] == "default-scheduler"
    assert p["spec"]["nodeName"].startswith("gpu-node-")
    scheduled = {x["type"]: x["status"] for x in p["status"]["conditions"]}["PodScheduled"]
    assert scheduled == "True"
    node = p["spec"]["nodeName"]

    def scheduled_events() -> list[dict[str, Any]]:
        out = c.kubectl(
            "get", "events", "--field-selector", "involvedObject.name=plain", "-o", "json"
        ).stdout
        return [e for e in json.loads(out)["items"] if e["reason"] == "Scheduled"]

    (ev,) = wait_for(scheduled_events, what="the Scheduled event")
    assert ev["type"] == "Normal"
    assert ev["message"] == f"Successfully assigned default/plain to {node}"
    assert ev["source"]["component"] == "default-scheduler"
    assert ev["involvedObject"]["uid"] == p["metadata"]["uid"]
    shown = c.kubectl("events", "--for", "pod/plain").stdout
    assert "Scheduled" in shown and f"Successfully assigned default/plain to {node}" in shown


def test_off_leaves_default_scheduler_pods_pending(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=1, args=["--set", "scheduler_default=false"])
    c.kubectl("run", "plain", "--image=busybox", "--restart=Never")
    time.sleep(3)
    p = _pod(c, "plain")
    assert p["status"].get("phase") == "Pending"
    assert not p["spec"].get("nodeName")


def test_state_queues_default_scheduler_pods_only_when_asked() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "default", "uid": "u"},
        "spec": {"containers": [{"name": "c", "image": "x"}]},
    }
    own = ClusterState()
    own.add_pod(pod)
    assert "default/p" not in own.pending
    both = ClusterState(also=("default-scheduler",))
    both.add_pod(pod)
    assert "default/p" in both.pending
    other = dict(pod, spec={**pod["spec"], "schedulerName": "someone-else"})
    both.add_pod(other)
    assert "default/p" not in both.pending
