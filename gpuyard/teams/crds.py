"""The Team CustomResourceDefinition (gpuyard.io/v1alpha1, cluster-scoped): which
namespaces belong to a team, how many nodes of each pool it is promised, whether its
low-priority work may borrow other teams' idle nodes; status says what it really has."""

from __future__ import annotations

from typing import Any

from gpuyard import names
from gpuyard.kube.crd import column, crd, object_schema

_POOL = {
    "x-kubernetes-preserve-unknown-fields": True,
    "description": "Whole nodes of the pool of that name (nodes labelled "
    "gpuyard.io/pool=<name>): {nodes: N}, or {selector: {matchLabels/matchExpressions}, "
    "nodes: N} for the nodes a selector picks. A bare number N, and count: N, are node "
    "counts too (the older spelling). Capacity is counted in nodes, never GPUs: on 8-GPU "
    "nodes {nodes: 4} is 32 GPUs.",
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
        "description": "Which namespaces are the team's and how many nodes it owns.",
        "properties": {
            "namespaces": {
                "type": "array",
                "items": {"type": "string"},
                "description": "The team's namespaces: their pods get the team's "
                "toleration, and affinity to its nodes or the shared pool.",
            },
            "capacity": {
                "type": "object",
                "additionalProperties": _POOL,
                "description": "Nodes the team owns per pool, such as {gpu: {nodes: 4}}: "
                "the team manager labels and taints that many healthy nodes for it.",
            },
            "borrow": {
                "type": "boolean",
                "default": False,
                "description": "Whether the team's gpuyard-low pods may run on other "
                "teams' idle nodes (evicted when the owner needs them back).",
            },
            "internetEgressBandwidth": {
                "type": "string",
                "maxLength": 32,
                "pattern": r"^[0-9]+(\.[0-9]+)?[kKmMgGtT]?(bit)?$",
                "description": "The default internet egress limit of the team's pods, in "
                "bits per second such as 2Gbit or 500Mbit (100kbit to 400Gbit): the team "
                "webhook sets it as gpuyard.io/internet-egress-bandwidth on pods created "
                "in the team's namespaces without that annotation, and the node agent "
                "(gpuyard netd) shapes what they send to the internet; in-cluster traffic "
                "is never limited. Unset: no default.",
            },
            "weight": {
                "type": "number",
                "default": 1,
                "exclusiveMinimum": True,
                "minimum": 0,
                "maximum": 1000000,
                "description": "The team's weight in dividing what teams share: the nodes "
                "of the shared pool and the idle team nodes others borrow. Pending work of "
                "equal priority goes first for the team whose GPUs there, divided by its "
                "weight, are fewest (dominant-resource fairness over GPUs); its fair share "
                "is its weight over the sum of all teams' weights. Default 1.",
            },
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
            "share": {
                "type": "number",
                "description": "The team's share of the shared-pool and borrowed nodes "
                "that teams' pods run on now.",
            },
            "fairShare": {
                "type": "number",
                "description": "What its weight entitles it to: spec.weight over the sum "
                "of all teams' weights.",
            },
            "reason": {"type": "string"},
            "pools": {"type": "object", "additionalProperties": pool_status},
            "gpus": {
                "type": "object",
                "description": "The same figures in GPUs (allocatable nvidia.com/gpu of "
                "nodes, requests of running pods): assigned (on its nodes), inUse (its "
                "own pods' there), lentOut (other teams' pods' on its nodes), borrowedIn "
                "(its pods' on other teams' nodes), shortfall (the nodes it lacks, in "
                "the GPUs a node of that pool holds).",
                "properties": {
                    k: {"type": "integer"}
                    for k in ("assigned", "inUse", "lentOut", "borrowedIn", "shortfall")
                },
            },
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
            column("Weight", "number", ".spec.weight"),
            column("Share", "number", ".status.share"),
            column("Fair-Share", "number", ".status.fairShare"),
        ],
        short_names=["tm"],
    )


def crds() -> list[dict[str, Any]]:
    return [team_crd()]
