"""Filters and fit: whether a node can take a pod, and how many more it can take.

Static filters, as kube-scheduler defines them (node Ready and schedulable; NoSchedule
and NoExecute taints against tolerations; nodeSelector; required node affinity), are
`static_ok`; required pod anti-affinity on kubernetes.io/hostname, both ways, is
`anti_ok`; resource fit of cpu, memory, nvidia.com/gpu and pod slots against
allocatable minus every bound pod is `fits` (and `capacity`, `capacity_below`).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain

from gpuyard.kube import objects as o
from gpuyard.scheduling.state import NRES, RESOURCES, NodeInfo, PodInfo


def static_ok(p: PodInfo, n: NodeInfo) -> str | None:
    """Why the node can never take the pod (None: it can, given room)."""
    if not n.ready:
        return "not Ready"
    if n.unschedulable:
        return "cordoned"
    for t in n.taints:
        if not o.tolerates(p.tolerations, t):
            return f"untolerated taint {o.taint_str(t).rsplit(':', 1)[0]}"
    for k, v in p.node_selector:
        if n.labels.get(k) != v:
            return "node selector mismatch"
    if p.affinity is not None:
        node = n.obj or {"metadata": {"name": n.name, "labels": n.labels}}
        if not any(o.node_selector_term_matches(term, node) for term in p.affinity):
            return "node affinity mismatch"
    return None


def anti_ok(p: PodInfo, n: NodeInfo, extra: Iterable[PodInfo] = ()) -> bool:
    """Required pod anti-affinity on the hostname key, both ways."""
    pods = n.pods
    if not pods and not extra:
        return True
    others = chain(pods.values(), extra)
    if p.anti_affinity:
        reqs = [o.label_selector_requirements(sel) for sel in p.anti_affinity]
        for q in chain(pods.values(), extra):
            if q.key != p.key and any(o.requirements_match(r, q.labels) for r in reqs):
                return False
    for q in others:
        if q.anti_affinity and q.key != p.key:
            for sel in q.anti_affinity:
                if o.requirements_match(o.label_selector_requirements(sel), p.labels):
                    return False
    return True


def fits(req: list[int], n: NodeInfo) -> bool:
    a, u = n.alloc, n.used
    return (
        req[2] + u[2] <= a[2]
        and req[0] + u[0] <= a[0]
        and req[1] + u[1] <= a[1]
        and req[3] + u[3] <= a[3]
    )


def short(req: list[int], n: NodeInfo) -> str | None:
    """The first resource the node lacks for these requests."""
    for i in range(NRES):
        if req[i] and n.used[i] + req[i] > n.alloc[i]:
            return RESOURCES[i]
    return None


def fits_after_terminating(req: list[int], n: NodeInfo) -> bool:
    """Whether the pod fits once the node's terminating pods (e.g. victims) are gone."""
    gone = [0] * NRES
    for q in n.pods.values():
        if q.terminating:
            for i in range(NRES):
                gone[i] += q.req[i]
    if not any(gone):
        return False
    return all(not req[i] or n.used[i] - gone[i] + req[i] <= n.alloc[i] for i in range(NRES))


def capacity(req: list[int], n: NodeInfo) -> int:
    """How many more pods with these requests fit on the node."""
    a, u = n.alloc, n.used
    k = 1 << 30
    for i in range(NRES):
        r = req[i]
        if r:
            v = (a[i] - u[i]) // r
            if v < k:
                if v <= 0:
                    return 0
                k = v
    return k


def capacity_below(req: list[int], n: NodeInfo, prio: int) -> int:
    """How many pods with these requests fit on the node once every pod below `prio`
    that is not already terminating is gone (what preemption could free there)."""
    free = [a - u for a, u in zip(n.alloc, n.used, strict=True)]
    for q in n.pods.values():
        if q.priority < prio and not q.terminating:
            for i in range(NRES):
                free[i] += q.req[i]
    k = 1 << 30
    for i in range(NRES):
        if req[i]:
            k = min(k, free[i] // req[i])
    return max(k, 0)


def capacity_empty(req: list[int], n: NodeInfo) -> int:
    """How many pods with these requests the node holds when empty."""
    return min((n.alloc[i] // req[i] for i in range(NRES) if req[i]), default=0)


def tentative(p: PodInfo, n: NodeInfo, placed: list[tuple[PodInfo, NodeInfo]]) -> None:
    """Put the pod on the node for a trial (undone by `untentative`)."""
    n.pods[p.key] = p
    for i in range(NRES):
        n.used[i] += p.req[i]
    placed.append((p, n))


def untentative(p: PodInfo, n: NodeInfo) -> None:
    if n.pods.pop(p.key, None) is not None:
        for i in range(NRES):
            n.used[i] -= p.req[i]


def put_back(m: PodInfo, n: NodeInfo) -> None:
    """A pod taken off its node for a trial counts on it again."""
    n.pods[m.key] = m
    for i in range(NRES):
        n.used[i] += m.req[i]
