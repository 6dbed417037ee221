"""Node replacement on `gpuyard up`: an Xid 79 (GPU fallen off the bus) taints a node
unhealthy; the simulated cluster-autoscaler removes it and buys a new one; the new node
joins behind the preflight taint and only takes work once its GPU test passes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from gpuyard.cluster.testing import ClusterProcess


def _nodes(c: ClusterProcess) -> dict[str, dict[str, Any]]:
    items = json.loads(c.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    return {n["metadata"]["name"]: n for n in items}


def _taints(n: dict[str, Any]) -> set[str]:
    return {t["key"] for t in n["spec"].get("taints") or []}


def _until(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


@pytest.mark.slow
def test_xid_node_is_replaced_and_the_new_node_passes_preflight(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(
        4,
        [
            "--preflight",
            "--autoscale",
            "gpu=0:4",
            "--components",
            "scheduler,health",
            "--set",
            "health_max_share=1.0",
            "--set",
            "autoscaler_scan_s=0.5",
            "--set",
            "autoscaler_remediate_s=1",
            "--set",
            "autoscaler_unneeded_s=600",
        ],
    )
    # The first four nodes pass their preflight test.
    _until(
        lambda: all(not _taints(n) for n in _nodes(c).values()) and len(_nodes(c)) == 4,
        90,
        "the initial nodes to pass preflight",
    )
    before = set(_nodes(c))
    c.fault("gpu-xid", "gpu-node-0002", "--gpu", "3", "--xid", "79")

    def replaced() -> dict[str, dict[str, Any]] | None:
        nodes = _nodes(c)
        return nodes if "gpu-node-0002" not in nodes and len(nodes) == 4 else None

    nodes = _until(replaced, 90, "gpu-node-0002 to be removed and replaced")
    (new,) = set(nodes) - before
    assert nodes[new]["metadata"]["labels"]["gpuyard.io/node-group"] == "gpu"

    def passed() -> dict[str, Any] | None:
        n = _nodes(c).get(new)
        ok = (
            n and not _taints(n) and n["metadata"]["annotations"].get("gpuyard.io/preflight-result")
        )
        return n if ok else None

    node = _until(passed, 90, f"{new} to pass preflight")
    assert node["metadata"]["annotations"]["gpuyard.io/preflight-result"] == "pass"
    assert "gpuyard.io/preflight" not in node["metadata"]["labels"]
    events = c.kubectl("get", "events", "-A").stdout
    assert "RemediateNode" in events
