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

KIND = "BalloonPool"
PLURAL = "balloonpools"


def balloon_pool_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{names.GROUP}"},
        "spec": {
            "group": names.GROUP,
            "scope": "Cluster",
            "names": {
                "plural": PLURAL,
                "singular": "balloonpool",
                "kind": KIND,
                "listKind": f"{KIND}List",
                "shortNames": ["bp"],
            },
            "versions": [
                {
                    "name": names.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Pool", "type": "string", "jsonPath": ".spec.pool"},
                        {"name": "Desired", "type": "integer", "jsonPath": ".status.desired"},
                        {"name": "Running", "type": "integer", "jsonPath": ".status.running"},
                        {"name": "Pending", "type": "integer", "jsonPath": ".status.pending"},
                        {"name": "Evictions", "type": "integer", "jsonPath": ".status.evictions"},
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
                                            "description": "balloon pods to keep; default: "
                                            "the pool's maximum size",
                                        },
                                        "nodeGroups": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                            "description": "cluster-autoscaler node groups "
                                            "of the pool (default: [pool])",
                                        },
                                    },
                                },
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
    }


def crds() -> list[dict[str, Any]]:
    return [balloon_pool_crd()]
