"""The Eviction API says why on the pod before deleting it: `kubectl drain` leaves a
DisruptionTarget condition (EvictionByEvictionAPI) that the pod's owner can read."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from gpuyard.apiserver.testing import ServerProcess

KUBECTL = shutil.which("kubectl", path=os.path.dirname(sys.executable)) or "kubectl"

NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "gpu-node-a"}}


def _pod(name: str, grace: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": "gpu-node-a",
            "terminationGracePeriodSeconds": grace,
            "containers": [{"name": "c", "image": "busybox"}],
        },
    }


def _kubectl(srv: ServerProcess, *args: str, stdin: str | None = None) -> str:
    r = subprocess.run(
        [KUBECTL, "--kubeconfig", srv.kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def _drain_watching(srv: ServerProcess, pod: str) -> list[dict[str, Any]]:
    """`kubectl drain --grace-period=0` while `kubectl get -w` records each state of the
    pod, the last one (DELETED) included."""
    w = subprocess.Popen(
        [
            KUBECTL,
            "--kubeconfig",
            srv.kubeconfig,
            "get",
            "pod",
            pod,
            "-w",
            "-o",
            "json",
            "--output-watch-events",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        time.sleep(1.0)  # the watch is established
        _kubectl(srv, "drain", "gpu-node-a", "--force", "--grace-period=0", "--timeout=30s")
        time.sleep(1.0)
    finally:
        w.terminate()
        text, _ = w.communicate(timeout=10)
    events, dec, i = [], json.JSONDecoder(), 0
    text = text.strip()
    while i < len(text):
        ev, i = dec.raw_decode(text, i)
        events.append(ev)
        while i < len(text) and text[i].isspace():
            i += 1
    return events


def _disruption(pod: dict[str, Any]) -> dict[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "DisruptionTarget":
            return dict(c)
    return None


def test_kubectl_drain_marks_the_pod_before_deleting_it(apiserver: ServerProcess) -> None:
    _kubectl(apiserver, "apply", "-f", "-", stdin=json.dumps(NODE))
    _kubectl(apiserver, "apply", "-f", "-", stdin=json.dumps(_pod("worker-0", 600)))
    events = _drain_watching(apiserver, "worker-0")
    assert events[-1]["type"] == "DELETED", [e["type"] for e in events]
    assert _disruption(events[0]["object"]) is None  # before the drain
    pod = events[-1]["object"]
    cond = _disruption(pod)
    assert cond is not None, pod.get("status")
    assert cond["status"] == "True"
    assert cond["reason"] == "EvictionByEvictionAPI"
    assert "gpu-node-a" in cond["message"]
    node = json.loads(_kubectl(apiserver, "get", "node", "gpu-node-a", "-o", "json"))
    assert node["spec"].get("unschedulable") is True


def test_a_pod_that_already_says_why_keeps_its_reason_and_dry_run_writes_nothing(
    apiserver: ServerProcess,
) -> None:
    _kubectl(apiserver, "apply", "-f", "-", stdin=json.dumps(NODE))
    _kubectl(apiserver, "apply", "-f", "-", stdin=json.dumps(_pod("victim", 600)))
    said = {
        "status": {
            "conditions": [
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "PreemptionByScheduler",
                    "message": "preempted by gang big",
                }
            ]
        }
    }
    _kubectl(
        apiserver,
        "patch",
        "pod",
        "victim",
        "--subresource=status",
        "--type=strategic",
        "-p",
        json.dumps(said),
    )
    events = _drain_watching(apiserver, "victim")
    assert events[-1]["type"] == "DELETED"
    cond = _disruption(events[-1]["object"])
    assert cond is not None and cond["reason"] == "PreemptionByScheduler"
    assert cond["message"] == "preempted by gang big"
    # A dry-run eviction writes nothing.
    _kubectl(apiserver, "apply", "-f", "-", stdin=json.dumps(_pod("kept", 600)))
    r = subprocess.run(
        [
            KUBECTL,
            "--kubeconfig",
            apiserver.kubeconfig,
            "create",
            "--raw",
            "/api/v1/namespaces/default/pods/kept/eviction?dryRun=All",
            "-f",
            "-",
        ],
        input=json.dumps(
            {
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": "kept", "namespace": "default"},
            }
        ),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    kept = json.loads(_kubectl(apiserver, "get", "pod", "kept", "-o", "json"))
    assert _disruption(kept) is None and not kept["metadata"].get("deletionTimestamp")
