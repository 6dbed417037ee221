"""The TrainingJob CustomResourceDefinition (gpuyard.io/v1alpha1)."""

from __future__ import annotations

from typing import Any

from gpuyard import names
from gpuyard.kube.crd import column, crd

PHASES = ["Pending", "Scheduling", "Running", "Restarting", "Succeeded", "Failed"]

_INT = {"type": "integer"}
_STR = {"type": "string"}

# A resource quantity as Kubernetes writes one ("500m", "16Gi", 4): the grammar of
# resource.Quantity, so the API server refuses `cpu: lots` on the job itself instead of
# on each worker the controller would create from it.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITIES = {
    "type": "object",
    "additionalProperties": {"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN},
}
# What the workers' pod template must hold; the rest of a PodSpec is kept as written.
_CONTAINER = {
    "type": "object",
    "required": ["name", "image"],
    "x-kubernetes-preserve-unknown-fields": True,
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "image": {"type": "string", "minLength": 1},
        "resources": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
            "properties": {"requests": _QUANTITIES, "limits": _QUANTITIES},
        },
    },
}
_DNS_SUBDOMAIN = {
    "type": "string",
    "maxLength": 253,
    "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
}


def trainingjob_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": _STR,
            "kind": _STR,
            "metadata": {"type": "object"},
            "spec": {
                "type": "object",
                "required": ["replicas", "template"],
                "properties": {
                    "replicas": {"type": "integer", "minimum": 1, "maximum": 100000},
                    "gpusPerReplica": {"type": "integer", "minimum": 0, "maximum": 64},
                    "template": {
                        "type": "object",
                        "required": ["spec"],
                        "x-kubernetes-preserve-unknown-fields": True,
                        "properties": {
                            "metadata": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                            "spec": {
                                "type": "object",
                                "required": ["containers"],
                                "x-kubernetes-preserve-unknown-fields": True,
                                "properties": {
                                    "containers": {
                                        "type": "array",
                                        "minItems": 1,
                                        "items": _CONTAINER,
                                    },
                                    "initContainers": {"type": "array", "items": _CONTAINER},
                                },
                            },
                        },
                    },
                    "priorityClassName": _DNS_SUBDOMAIN,
                    "team": _STR,
                    "restartPolicy": {"type": "string", "enum": ["RestartGang", "Never"]},
                    "backoffLimit": {"type": "integer", "minimum": 0},
                    "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
                    "scheduleTimeoutSeconds": {"type": "integer", "minimum": 1},
                    "masterPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                },
            },
            "status": {
                "type": "object",
                "properties": {
                    "phase": {"type": "string", "enum": PHASES},
                    "reason": _STR,
                    "message": _STR,
                    "restarts": _INT,
                    "generation": _INT,
                    "startTime": _STR,
                    "completionTime": _STR,
                    "readyWorkers": _INT,
                    "runningWorkers": _INT,
                    "observedGeneration": _INT,
                    "conditions": {
                        "type": "array",
                        "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    },
                },
            },
        },
    }


def trainingjob_crd() -> dict[str, Any]:
    return crd(
        names.GROUP,
        names.VERSION,
        "TrainingJob",
        "trainingjobs",
        namespaced=True,
        schema=trainingjob_schema(),
        columns=[
            column("Replicas", "integer", ".spec.replicas"),
            column("Phase", "string", ".status.phase"),
            column("Restarts", "integer", ".status.restarts"),
            column("Running", "integer", ".status.runningWorkers"),
            column("Message", "string", ".status.message", priority=1),
        ],
        short_names=["tj"],
        categories=["gpuyard"],
    )


def crds() -> list[dict[str, Any]]:
    return [trainingjob_crd()]
