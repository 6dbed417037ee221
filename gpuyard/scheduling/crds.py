"""The PodGroup CustomResourceDefinition (scheduling.x-k8s.io/v1alpha1), the gang API
that the scheduler-plugins Coscheduling plugin, Kubeflow and gpuyard share."""

from __future__ import annotations

from typing import Any

_INT_OR_STRING = {
    "x-kubernetes-int-or-string": True,
    "anyOf": [{"type": "integer"}, {"type": "string"}],
}


def podgroup_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "podgroups.scheduling.x-k8s.io"},
        "spec": {
            "group": "scheduling.x-k8s.io",
            "scope": "Namespaced",
            "names": {
                "plural": "podgroups",
                "singular": "podgroup",
                "kind": "PodGroup",
                "listKind": "PodGroupList",
                "shortNames": ["pg", "pgs"],
            },
            "versions": [
                {
                    "name": "v1alpha1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "MinMember", "type": "integer", "jsonPath": ".spec.minMember"},
                        {"name": "Scheduled", "type": "integer", "jsonPath": ".status.scheduled"},
                        {"name": "Running", "type": "integer", "jsonPath": ".status.running"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": {
                                    "type": "object",
                                    "properties": {
                                        "minMember": {"type": "integer", "minimum": 1},
                                        "minResources": {
                                            "type": "object",
                                            "additionalProperties": _INT_OR_STRING,
                                        },
                                        "scheduleTimeoutSeconds": {"type": "integer", "minimum": 1},
                                    },
                                },
                                "status": {
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
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def crds() -> list[dict[str, Any]]:
    return [podgroup_crd()]
