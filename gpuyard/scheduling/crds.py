"""The PodGroup CustomResourceDefinition (scheduling.x-k8s.io/v1alpha1), the gang API
that the scheduler-plugins Coscheduling plugin, Kubeflow and gpuyard share."""

from __future__ import annotations

from typing import Any

from gpuyard.kube.crd import column, crd, object_schema

_INT_OR_STRING = {
    "x-kubernetes-int-or-string": True,
    "anyOf": [{"type": "integer"}, {"type": "string"}],
}


def podgroup_crd() -> dict[str, Any]:
    spec = {
        "type": "object",
        "properties": {
            "minMember": {"type": "integer", "minimum": 1},
            "minResources": {"type": "object", "additionalProperties": _INT_OR_STRING},
            "scheduleTimeoutSeconds": {"type": "integer", "minimum": 1},
        },
    }
    status = {
        "type": "object",
        "properties": {
            "phase": {"type": "string"},
            "occupiedBy": {"type": "string"},
            "scheduled": {"type": "integer"},
            "running": {"type": "integer"},
            "succeeded": {"type": "integer"},
            "failed": {"type": "integer"},
            "scheduleStartTime": {"type": "string"},
        },
    }
    return crd(
        "scheduling.x-k8s.io",
        "v1alpha1",
        "PodGroup",
        "podgroups",
        namespaced=True,
        schema=object_schema(spec, status),
        columns=[
            column("Phase", "string", ".status.phase"),
            column("MinMember", "integer", ".spec.minMember"),
            column("Scheduled", "integer", ".status.scheduled"),
            column("Running", "integer", ".status.running"),
        ],
        short_names=["pg", "pgs"],
    )


def crds() -> list[dict[str, Any]]:
    return [podgroup_crd()]
