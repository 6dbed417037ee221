"""Which pod updates the live scheduler may skip rebuilding its record for: only those
that change nothing `ClusterState.add_pod` reads (a kubelet starting a bound pod)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gpuyard.scheduling.scheduler import _same_for_scheduling


def pod() -> dict[str, Any]:
    return {
        "metadata": {
            "name": "p",
            "namespace": "default",
            "resourceVersion": "5",
            "labels": {"scheduling.x-k8s.io/pod-group": "g"},
        },
        "spec": {
            "nodeName": "n1",
            "schedulerName": "gpuyard-scheduler",
            "containers": [{"name": "w", "resources": {"limits": {"nvidia.com/gpu": "1"}}}],
        },
        "status": {"phase": "Pending"},
    }


def test_kubelet_start_is_skippable() -> None:
    old = pod()
    new = copy.deepcopy(old)
    new["metadata"]["resourceVersion"] = "6"
    new["status"] = {
        "phase": "Running",
        "podIP": "10.0.0.1",
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    assert _same_for_scheduling(old, new)


@pytest.mark.parametrize(
    "change",
    [
        lambda p: p["spec"].pop("nodeName"),
        lambda p: p["spec"]["containers"][0]["resources"]["limits"].update({"nvidia.com/gpu": "2"}),
        lambda p: p["spec"].update({"priority": 1000}),
        lambda p: p["metadata"]["labels"].update({"scheduling.x-k8s.io/pod-group": "h"}),
        lambda p: p["metadata"].update({"deletionTimestamp": "2026-01-01T00:00:00Z"}),
        lambda p: p["status"].update({"phase": "Succeeded"}),
        lambda p: p["status"].update({"phase": "Failed"}),
        lambda p: p["status"].update({"nominatedNodeName": "n2"}),
    ],
)
def test_changes_the_snapshot_reads_are_not_skipped(change: Any) -> None:
    old = pod()
    new = copy.deepcopy(old)
    change(new)
    assert not _same_for_scheduling(old, new)
