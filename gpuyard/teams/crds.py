"""The Team CustomResourceDefinition (gpuyard.io/v1alpha1, cluster-scoped): which
namespaces belong to a team, how many nodes of each pool it is promised, whether its
low-priority work may borrow other teams' idle nodes; status says what it really has."""

from __future__ import annotations

from typing import Any

from gpuyard import names
from gpuyard.kube.crd import column, crd, object_schema

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
    spec = {
        "type": "object",
        "required": ["capacity"],
        "properties": {
            "namespaces": {"type": "array", "items": {"type": "string"}},
            "capacity": {"type": "object", "additionalProperties": _POOL},
            "borrow": {"type": "boolean", "default": False},
        },
    }
    status = {
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
            "pools": {"type": "object", "additionalProperties": pool_status},
            "conditions": {
                "type": "array",
                "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
    }
    return crd(
        names.GROUP,
        names.VERSION,
        "Team",
        "teams",
        namespaced=False,
        schema=object_schema(spec, status),
        columns=[
            column("Assigned", "integer", ".status.assigned"),
            column("Healthy", "integer", ".status.healthy"),
            column("In-Use", "integer", ".status.inUse"),
            column("Lent", "integer", ".status.lentOut"),
            column("Borrowed", "integer", ".status.borrowedIn"),
            column("Shortfall", "integer", ".status.shortfall"),
        ],
        short_names=["tm"],
    )


def crds() -> list[dict[str, Any]]:
    return [team_crd()]
