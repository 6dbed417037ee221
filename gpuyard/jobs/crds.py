"""The TrainingJob CustomResourceDefinition (gpuyard.io/v1alpha1)."""

from __future__ import annotations

from typing import Any

from gpuyard import names

PHASES = ["Pending", "Scheduling", "Running", "Restarting", "Succeeded", "Failed"]

_INT = {"type": "integer"}
_STR = {"type": "string"}


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
                        "x-kubernetes-preserve-unknown-fields": True,
                        "properties": {
                            "metadata": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                            "spec": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    },
                    "priorityClassName": _STR,
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
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"trainingjobs.{names.GROUP}"},
        "spec": {
            "group": names.GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": "trainingjobs",
                "singular": "trainingjob",
                "kind": "TrainingJob",
                "listKind": "TrainingJobList",
                "shortNames": ["tj"],
                "categories": ["gpuyard"],
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts"},
                        {
                            "name": "Running",
                            "type": "integer",
                            "jsonPath": ".status.runningWorkers",
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                        {
                            "name": "Message",
                            "type": "string",
                            "jsonPath": ".status.message",
                            "priority": 1,
                        },
                    ],
                    "schema": {"openAPIV3Schema": trainingjob_schema()},
                }
            ],
        },
    }


def crds() -> list[dict[str, Any]]:
    return [trainingjob_crd()]
