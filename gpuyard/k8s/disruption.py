"""The DisruptionTarget pod condition: whoever takes a pod away (the scheduler when it
preempts, a taint manager when a node turns unhealthy, the Eviction API) first says why
on the pod, as Kubernetes does, so the pod's owner and `kubectl describe pod` can tell."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

DISRUPTION_TARGET = "DisruptionTarget"
PREEMPTION_BY_SCHEDULER = "PreemptionByScheduler"
DELETION_BY_TAINT_MANAGER = "DeletionByTaintManager"
EVICTION_BY_EVICTION_API = "EvictionByEvictionAPI"
DELETION_BY_POD_GC = "DeletionByPodGC"


def disruption_condition(reason: str, message: str) -> dict[str, Any]:
    """The condition to write (a status patch) before the pod is deleted or evicted."""
    return {
        "type": DISRUPTION_TARGET,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def status_patch(reason: str, message: str) -> dict[str, Any]:
    """A strategic-merge status patch adding the condition (conditions merge by type)."""
    return {"status": {"conditions": [disruption_condition(reason, message)]}}
