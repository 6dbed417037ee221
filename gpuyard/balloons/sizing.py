"""Balloon sizing and the balloon pods a pool should have: pure functions, no I/O.

A balloon is a placeholder pod that holds one whole node: PriorityClass gpuyard-balloon
(the lowest, so the scheduler evicts it first when real work needs the node), sized to
the node's allocatable minus what its DaemonSet (and mirror) pods request, one per node
by required pod anti-affinity on the hostname. The size is the smallest such room over
the pool's Ready nodes, so a balloon fits on every node of the pool.

Balloon pods are named `balloon-<pool>-<i>` for i below the desired count, like a
StatefulSet's ordinals, so the desired set is known without reading anything else.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuyard import names
from gpuyard.kube import objects as o

NAMESPACE = "gpuyard-system"
LABEL_BALLOON = "gpuyard.io/balloon"
SIZED = ("cpu", "memory", names.RESOURCE_GPU)
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


def pod_name(pool: str, index: int) -> str:
    return f"balloon-{pool}-{index}"


def index_of(pool: str, name: str) -> int | None:
    prefix = f"balloon-{pool}-"
    if not name.startswith(prefix):
        return None
    tail = name[len(prefix) :]
    return int(tail) if tail.isdigit() else None


def pool_nodes(nodes: Iterable[Mapping[str, Any]], pool: str) -> list[Mapping[str, Any]]:
    return [n for n in nodes if o.labels_of(n).get(names.LABEL_POOL) == pool]


def node_room(node: Mapping[str, Any], pods_on_node: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """What a balloon may take on this node: allocatable minus DaemonSet and mirror pods."""
    room = {r: v for r, v in o.node_allocatable(node).items() if r in SIZED}
    for p in pods_on_node:
        if o.is_pod_terminal(p) or not (o.is_daemonset_pod(p) or o.is_mirror_pod(p)):
            continue
        for r, v in o.pod_requests(p).items():
            if r in room:
                room[r] = max(0, room[r] - v)
    return room


def balloon_requests(
    nodes: Iterable[Mapping[str, Any]],
    pods_by_node: Mapping[str, Iterable[Mapping[str, Any]]],
) -> dict[str, int] | None:
    """The balloon size for a pool: per resource, the least room over its Ready nodes.
    None when the pool has no Ready node to measure."""
    return least_room(
        node_room(n, pods_by_node.get(o.name_of(n), ())) for n in nodes if o.is_node_ready(n)
    )


def least_room(rooms: Iterable[Mapping[str, int]]) -> dict[str, int] | None:
    """Per resource, the least of the rooms (None for none); resources at 0 dropped."""
    size: dict[str, int] | None = None
    for room in rooms:
        if size is None:
            size = dict(room)
        else:
            size = {r: min(size.get(r, 0), room.get(r, 0)) for r in set(size) | set(room)}
    return None if size is None else {r: v for r, v in size.items() if v > 0}


def desired_replicas(
    spec: Mapping[str, Any], group_max: Mapping[str, int] | None, nodes_in_pool: int
) -> int:
    """spec.replicas, else the pool's maximum size: the sum of its node groups' maxSize
    as the cluster-autoscaler reports them, else the nodes the pool has now."""
    if spec.get("replicas") is not None:
        return int(spec["replicas"])
    groups = spec.get("nodeGroups") or [spec.get("pool")]
    if group_max:
        known = [group_max[g] for g in groups if g in group_max]
        if known:
            return sum(known)
    return nodes_in_pool


def balloon_pod(
    owner: Mapping[str, Any], index: int, requests: Mapping[str, int]
) -> dict[str, Any]:
    """The balloon pod `index` of a BalloonPool, owned by it."""
    pool = owner["spec"]["pool"]
    quantities = {r: o.format_quantity(v, r) for r, v in sorted(requests.items())}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(pool, index),
            "namespace": NAMESPACE,
            "labels": {LABEL_BALLOON: pool, "app.kubernetes.io/managed-by": "gpuyard"},
            "ownerReferences": [o.owner_reference(owner)],
        },
        "spec": {
            "schedulerName": names.SCHEDULER_NAME,
            "priorityClassName": names.PRIORITY_BALLOON,
            "nodeSelector": {names.LABEL_POOL: pool},
            "affinity": {
                "podAntiAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": [
                        {
                            "labelSelector": {"matchLabels": {LABEL_BALLOON: pool}},
                            "topologyKey": names.LABEL_HOSTNAME,
                        }
                    ]
                }
            },
            # Warm capacity is kept on every team's nodes too.
            "tolerations": [
                {"key": names.TAINT_TEAM, "operator": "Exists", "effect": "NoSchedule"}
            ],
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {
                    "name": "balloon",
                    "image": PAUSE_IMAGE,
                    "resources": {"requests": dict(quantities), "limits": dict(quantities)},
                }
            ],
        },
    }


@dataclass
class Plan:
    """What to change for one pool: pods to create, pod names to delete."""

    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)


def plan(
    owner: Mapping[str, Any],
    replicas: int,
    requests: Mapping[str, int] | None,
    existing: Iterable[Mapping[str, Any]],
) -> Plan:
    """Create the missing ordinals below `replicas`; delete ordinals at or above it,
    finished pods (a kubelet refused or ended them; they come back), and pending pods of
    an outdated size. Running balloons are never touched for their size."""
    pool = owner["spec"]["pool"]
    out = Plan()
    have: dict[int, Mapping[str, Any]] = {}
    want_req = {r: v for r, v in (requests or {}).items() if v}
    for p in existing:
        i = index_of(pool, o.name_of(p))
        if i is None or (p.get("metadata") or {}).get("deletionTimestamp"):
            if i is not None:
                have[i] = p  # going away: do not recreate until it is gone
            continue
        if i >= replicas or o.is_pod_terminal(p):
            out.delete.append(o.name_of(p))
            have[i] = p
            continue
        pending = not (p.get("spec") or {}).get("nodeName")
        if pending and requests is not None:
            have_req = {r: v for r, v in o.pod_requests(p).items() if r in SIZED and v}
            if have_req != want_req:
                out.delete.append(o.name_of(p))
        have[i] = p
    if requests is None:
        return out
    for i in range(replicas):
        if i not in have:
            out.create.append(balloon_pod(owner, i, want_req))
    return out
