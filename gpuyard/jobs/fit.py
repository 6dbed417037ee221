"""Whether a TrainingJob could ever fit, whatever else runs. Pure: no I/O.

A busy cluster and a job too big for the cluster both leave the workers waiting; only
the second never ends, so it is said in other words: "can never fit". What the cluster
can ever offer is its nodes as they are (GPU allocatable, whoever uses it now) plus,
for each node group of the cluster-autoscaler (its status ConfigMap,
kube-system/cluster-autoscaler-status, `nodeGroups[].health.maxSize`), as many nodes as
its max size, each like the largest node of that group seen so far. A group with no
node yet is of unknown shape and is not counted against the job (no false "never").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from gpuyard import names
from gpuyard.kube import objects as o

LABEL_NODE_GROUP = "gpuyard.io/node-group"


def node_gpus(node: Mapping[str, Any]) -> int:
    alloc = ((node.get("status") or {}).get("allocatable") or {}).get(names.RESOURCE_GPU)
    try:
        return int(o.parse_quantity(alloc)) if alloc is not None else 0
    except (ValueError, TypeError):
        return 0


def never_fits(
    replicas: int, gpus: int, nodes: Iterable[Mapping[str, Any]], max_sizes: Mapping[str, int]
) -> str | None:
    """Why `replicas` workers of `gpus` GPUs each can never be placed at once, or None."""
    if gpus <= 0 or replicas <= 0:
        return None
    nodes = list(nodes)
    if not nodes:
        return None
    largest = max(node_gpus(n) for n in nodes)
    if gpus > largest:
        return (
            f"can never fit: each worker asks for {gpus} GPUs and the largest node offers {largest}"
        )
    grouped: dict[str, list[int]] = {}
    slots = 0
    for n in nodes:
        labels = o.labels_of(n)
        g = labels.get(LABEL_NODE_GROUP)
        if g not in max_sizes:
            g = labels.get(names.LABEL_POOL)
        if g in max_sizes:
            grouped.setdefault(str(g), []).append(node_gpus(n))
        else:
            slots += node_gpus(n) // gpus
    tops = []
    for g, mx in max_sizes.items():
        have = grouped.get(g)
        if not have:
            continue
        count = max(len(have), mx)
        slots += sum(x // gpus for x in have) + (count - len(have)) * (max(have) // gpus)
        tops.append(f"{count} nodes of {max(have)} GPUs ({g})")
    if slots >= replicas:
        return None
    where = ", ".join(tops) if tops else f"{len(nodes)} nodes (no autoscaler)"
    return (
        f"can never fit: {replicas} workers of {gpus} GPUs at once, and the node pools "
        f"top out at {where}: room for {slots}"
    )
