"""The whole remediation path on `gpuyard up`: an Xid 79 (GPU fallen off the bus) on a
node running a TrainingJob worker taints the node NoExecute, the job restarts its gang
elsewhere, the simulated cluster-autoscaler removes the node and buys a new one, and the
new node joins behind the preflight taint and takes work once its GPU test passes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from gpuyard.cluster.testing import ClusterProcess
from gpuyard.cluster.testing import wait_for as _until


def _get(c: ClusterProcess, *args: str) -> Any:
    return json.loads(c.kubectl("get", *args, "-o", "json").stdout)


def _nodes(c: ClusterProcess) -> dict[str, dict[str, Any]]:
    return {n["metadata"]["name"]: n for n in _get(c, "nodes")["items"]}


def _taints(n: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {t["key"]: (t.get("value", ""), t["effect"]) for t in n["spec"].get("taints") or []}


JOB = """
apiVersion: gpuyard.io/v1alpha1
kind: TrainingJob
metadata: {name: llm, namespace: default}
spec:
  replicas: 2
  gpusPerReplica: 8
  backoffLimit: 3
  template: {spec: {containers: [{name: t, image: trainer}]}}
"""


@pytest.mark.slow
def test_xid79_restarts_the_gang_elsewhere_and_the_node_is_replaced_and_preflighted(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(
        4,
        [
            "--preflight",
            "--autoscale",
            "gpu=4:4",
            "--components",
            "scheduler,jobs,health",
            "--set",
            "health_max_share=1.0",
            "--set",
            "autoscaler_scan_s=0.5",
            "--set",
            "autoscaler_remediate_s=1",
        ],
    )
    _until(
        lambda: len(_nodes(c)) == 4 and all(not _taints(n) for n in _nodes(c).values()),
        90,
        "the initial nodes to pass preflight",
    )
    before = set(_nodes(c))
    c.kubectl("apply", "-f", "-", input=JOB)

    def running() -> list[dict[str, Any]] | None:
        tj = _get(c, "trainingjob", "llm", "-n", "default")
        pods = _get(c, "pods", "-n", "default", "-l", "gpuyard.io/job=llm")["items"]
        live = [
            p
            for p in pods
            if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
        ]
        ok = (tj.get("status") or {}).get("phase") == "Running" and len(live) == 2
        return live if ok else None

    pods = _until(running, 60, "the job to run")
    node = pods[0]["spec"]["nodeName"]
    c.fault("gpu-xid", node, "--gpu", "3", "--xid", "79")

    def restarted_elsewhere() -> list[dict[str, Any]] | None:
        live = running()
        tj = _get(c, "trainingjob", "llm", "-n", "default")
        if live and tj["status"].get("restarts", 0) >= 1:
            if node not in {p["spec"]["nodeName"] for p in live}:
                return live
        return None

    _until(restarted_elsewhere, 60, "the gang to restart on other nodes")

    def replaced() -> dict[str, dict[str, Any]] | None:
        nodes = _nodes(c)
        return nodes if node not in nodes and len(nodes) == 4 else None

    nodes = _until(replaced, 90, f"{node} to be removed and replaced")
    (new,) = set(nodes) - before
    assert nodes[new]["metadata"]["labels"]["gpuyard.io/node-group"] == "gpu"

    def passed() -> dict[str, Any] | None:
        n = _nodes(c).get(new)
        ann = (n or {}).get("metadata", {}).get("annotations") or {}
        return n if n and not _taints(n) and ann.get("gpuyard.io/preflight-result") else None

    n = _until(passed, 90, f"{new} to pass preflight")
    assert n["metadata"]["annotations"]["gpuyard.io/preflight-result"] == "pass"
    assert "gpuyard.io/preflight" not in n["metadata"]["labels"]
    ready = [x for x in n["status"]["conditions"] if x["type"] == "Ready"][0]
    assert ready["status"] == "True"
    events = c.kubectl("get", "events", "-A").stdout
    assert "RemediateNode" in events and "Xid79" in events
