"""`kubectl debug` on `gpuyard up`: the debug container is added to the running pod
through pods/ephemeralcontainers and the simulated kubelet reports it running."""

from __future__ import annotations

import json
from typing import Any

from gpuyard.cluster.testing import ClusterProcess, wait_for


def _pod(c: ClusterProcess, name: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(c.kubectl("get", "pod", name, "-o", "json").stdout)
    return out


def test_kubectl_debug_container_runs(cluster: ClusterProcess) -> None:
    c = cluster
    c.kubectl("run", "trainer", "--image=pytorch:2")
    wait_for(lambda: _pod(c, "trainer")["status"].get("phase") == "Running")
    c.kubectl("debug", "trainer", "--image=busybox", "-c", "dbg", "--target=trainer", "--quiet")

    def debug_running() -> bool:
        st = _pod(c, "trainer")["status"].get("ephemeralContainerStatuses") or []
        return any(s["name"] == "dbg" and "running" in s["state"] for s in st)

    wait_for(debug_running)
    p = _pod(c, "trainer")
    (s,) = p["status"]["ephemeralContainerStatuses"]
    assert s["image"] == "busybox" and s["restartCount"] == 0
    # The pod's own containers are untouched and still running.
    assert p["status"]["phase"] == "Running"
    assert [x["name"] for x in p["status"]["containerStatuses"]] == ["trainer"]
    assert p["status"]["containerStatuses"][0]["ready"] is True
