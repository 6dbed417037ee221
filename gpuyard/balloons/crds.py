"""The BalloonPool CustomResourceDefinition (gpuyard.io/v1alpha1, cluster-scoped).

One BalloonPool keeps warm capacity in one node pool (nodes labelled
gpuyard.io/pool=<pool>): balloon pods of PriorityClass gpuyard-balloon, one per node,
each sized to fill a node. The pods are owned by the BalloonPool, so deleting it
removes them.

    apiVersion: gpuyard.io/v1alpha1
    kind: BalloonPool
    metadata: {name: gpu}
    spec:
      pool: gpu              # nodes labelled gpuyard.io/pool=gpu
      replicas: 600          # optional; default: the pool's maximum size
      nodeGroups: [gpu]      # optional; autoscaler node groups that make up the pool
"""

from __future__ import annotations

from typing import Any

from gpuyard import names
from gpuyard.kube.crd import column, crd, object_schema

KIND = "BalloonPool"
PLURAL = "balloonpools"


def balloon_pool_crd() -> dict[str, Any]:
    spec = {
        "type": "object",
        "required": ["pool"],
        "properties": {
            "pool": {
                "type": "string",
                "minLength": 1,
                "description": "the node pool (label gpuyard.io/pool)",
            },
            "replicas": {
                "type": "integer",
                "minimum": 0,
                "description": "balloon pods to keep; default: the pool's maximum size",
            },
            "nodeGroups": {
                "type": "array",
                "items": {"type": "string"},
                "description": "cluster-autoscaler node groups of the pool (default: [pool])",
            },
        },
    }
    return crd(
        names.GROUP,
        names.VERSION,
        KIND,
        PLURAL,
        namespaced=False,
        schema=object_schema(spec),
        columns=[
            column("Pool", "string", ".spec.pool"),
            column("Desired", "integer", ".status.desired"),
            column("Running", "integer", ".status.running"),
            column("Pending", "integer", ".status.pending"),
            column("Evictions", "integer", ".status.evictions"),
        ],
        short_names=["bp"],
    )


def crds() -> list[dict[str, Any]]:
    return [balloon_pool_crd()]
