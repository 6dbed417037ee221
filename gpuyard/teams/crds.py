"""The Team CustomResourceDefinition (gpuyard.io/v1alpha1, cluster-scoped): which
namespaces belong to a team, how many nodes of each pool it is promised, whether its
low-priority work may borrow other teams' idle nodes; status says what it really has."""

from __future__ import annotations

from typing import Any

from gpuyard import names

_POOL = {
    "x-kubernetes-preserve-unknown-fields": True,
    "description": "A node count for the pool of that name (nodes labelled "
    "gpuyard.io/pool=<name>), or {selector: {matchLabels/matchExpressions}, count: N}.",
}


def team_crd() -> dict[str, Any]:
    pool_status = {
        "type": "object",
        "properties": {
            "wanted": {"type": "integer"},
            "assigned": {"type": "integer"},
            "healthy": {"type": "integer"},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"teams.{names.GROUP}"},
        "spec": {
            "group": names.GROUP,
            "scope": "Cluster",
            "names": {
                "plural": "teams",
                "singular": "team",
                "kind": "Team",
                "listKind": "TeamList",
                "shortNames": ["tm"],
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Assigned", "type": "integer", "jsonPath": ".status.assigned"},
                        {"name": "Healthy", "type": "integer", "jsonPath": ".status.healthy"},
                        {"name": "In-Use", "type": "integer", "jsonPath": ".status.inUse"},
                        {"name": "Lent", "type": "integer", "jsonPath": ".status.lentOut"},
                        {"name": "Borrowed", "type": "integer", "jsonPath": ".status.borrowedIn"},
                        {"name": "Shortfall", "type": "integer", "jsonPath": ".status.shortfall"},
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
                                    "required": ["capacity"],
                                    "properties": {
                                        "namespaces": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                        },
                                        "capacity": {
                                            "type": "object",
                                            "additionalProperties": _POOL,
                                        },
                                        "borrow": {"type": "boolean", "default": False},
                                    },
                                },
                                "status": {
                                    "type": "object",
                                    "properties": {
                                        "wanted": {"type": "integer"},
                                        "assigned": {"type": "integer"},
                                        "healthy": {"type": "integer"},
                                        "inUse": {"type": "integer"},
                                        "lentOut": {"type": "integer"},
                                        "borrowedIn": {"type": "integer"},
                                        "shortfall": {"type": "integer"},
                                        "reason": {"type": "string"},
                                        "pools": {
                                            "type": "object",
                                            "additionalProperties": pool_status,
                                        },
                                        "conditions": {
                                            "type": "array",
                                            "items": {
                                                "type": "object",
                                                "x-kubernetes-preserve-unknown-fields": True,
                                            },
                                        },
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
    return [team_crd()]
