"""Filters and fit: whether a node can take a pod, and how many more it can take.

Static filters, as kube-scheduler defines them (node Ready and schedulable; NoSchedule
and NoExecute taints against tolerations; nodeSelector; required node affinity), are
`static_ok`; required pod anti-affinity on kubernetes.io/hostname, both ways, is
`anti_ok`; resource fit against allocatable minus every bound pod is `fits` (and
`capacity`, `capacity_below`, `capacity_empty`).

Resource fit covers every resource a pod requests, as kube-scheduler's NodeResourcesFit
does: cpu, memory, nvidia.com/gpu and pod slots in the fast vectors (`PodInfo.req`,
`NodeInfo.alloc`, `NodeInfo.used`), and anything else (extended resources such as
nvidia.com/mig-1g.10gb or rdma/hca, hugepages-*, ephemeral-storage) in the pod's
`xreq` against the node's `xalloc` minus `xused`. A node without the resource has none
of it. Most pods request nothing outside the vectors and never pay for the rest; a
node whose allocatable can never hold a pod's extra requests fails its static filter
("Insufficient <resource>", kube-scheduler's wording), so such a pod's candidates are
only the nodes that have them.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import chain

from gpuyard.kube import objects as o
from gpuyard.scheduling import dra
from gpuyard.scheduling.state import NRES, RESOURCES, NodeInfo, PodInfo, add_extras


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
    if p.xreq:
        xa = n.xalloc
        for res, amount in p.xreq:
            if xa.get(res, 0) < amount:
                return f"Insufficient {res}"
    if p.claims or p.claim_wait:
        return dra.static_why(p, n)
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


def fits(p: PodInfo, n: NodeInfo) -> bool:
    """Whether the pod's requests fit in the node's allocatable minus its bound pods
    (its device claims included)."""
    return fits_resources(p, n) and (not p.claims or dra.plan(p, n) is not None)


def fits_resources(p: PodInfo, n: NodeInfo) -> bool:
    """`fits` but for device claims (the cheap part, tried first)."""
    req, a, u = p.req, n.alloc, n.used
    return (
        req[2] + u[2] <= a[2]
        and req[0] + u[0] <= a[0]
        and req[1] + u[1] <= a[1]
        and req[3] + u[3] <= a[3]
        and (not p.xreq or xfits(p, n))
        and (not p.host_ports or ports_free(p, n))
    )


def ports_free(p: PodInfo, n: NodeInfo) -> bool:
    """kube-scheduler's NodePorts: no other pod on the node binds one of the pod's host
    ports (same protocol and port, on the same address or where either is 0.0.0.0)."""
    mine = p.host_ports
    for q in n.pods.values():
        if q.host_ports and q.key != p.key:
            for ip, proto, port in q.host_ports:
                for ip2, proto2, port2 in mine:
                    if (
                        port == port2
                        and proto == proto2
                        and (ip == ip2 or ip == "0.0.0.0" or ip2 == "0.0.0.0")
                    ):
                        return False
    return True


def xfits(p: PodInfo, n: NodeInfo) -> bool:
    """Whether the pod's requests outside the vectors fit on the node."""
    xa, xu = n.xalloc, n.xused
    return all(v + xu.get(r, 0) <= xa.get(r, 0) for r, v in p.xreq)


def short(p: PodInfo, n: NodeInfo) -> str | None:
    """The first resource the node lacks for the pod's requests."""
    req = p.req
    for i in range(NRES):
        if req[i] and n.used[i] + req[i] > n.alloc[i]:
            return RESOURCES[i]
    xa, xu = n.xalloc, n.xused
    for r, v in p.xreq:
        if v + xu.get(r, 0) > xa.get(r, 0):
            return r
    return None


def fits_after_terminating(p: PodInfo, n: NodeInfo) -> bool:
    """Whether the pod fits once the node's terminating pods (e.g. victims) are gone."""
    req = p.req
    gone = [0] * NRES
    xgone: dict[str, int] = {}
    for q in n.pods.values():
        if q.terminating:
            for i in range(NRES):
                gone[i] += q.req[i]
            for r, v in q.xreq:
                xgone[r] = xgone.get(r, 0) + v
    if not any(gone) and not xgone:
        return False
    xa, xu = n.xalloc, n.xused
    return all(
        not req[i] or n.used[i] - gone[i] + req[i] <= n.alloc[i] for i in range(NRES)
    ) and all(xu.get(r, 0) - xgone.get(r, 0) + v <= xa.get(r, 0) for r, v in p.xreq)


def capacity(p: PodInfo, n: NodeInfo) -> int:
    """How many more pods with the pod's requests fit on the node."""
    req, a, u = p.req, n.alloc, n.used
    k = 1 << 30
    for i in range(NRES):
        r = req[i]
        if r:
            v = (a[i] - u[i]) // r
            if v < k:
                if v <= 0:
                    return 0
                k = v
    if p.xreq:
        xa, xu = n.xalloc, n.xused
        for res, w in p.xreq:
            v = (xa.get(res, 0) - xu.get(res, 0)) // w
            if v < k:
                if v <= 0:
                    return 0
                k = v
    if p.host_ports:
        # pods alike bind the same host ports: one of them per node at most
        return 1 if ports_free(p, n) else 0
    return k


def capacity_below(p: PodInfo, n: NodeInfo, prio: int) -> int:
    """How many pods with the pod's requests fit on the node once every pod below `prio`
    that is not already terminating is gone (what preemption could free there)."""
    req = p.req
    free = [a - u for a, u in zip(n.alloc, n.used, strict=True)]
    xfree = {r: n.xalloc.get(r, 0) - n.xused.get(r, 0) for r, _ in p.xreq}
    for q in n.pods.values():
        if q.priority < prio and not q.terminating:
            for i in range(NRES):
                free[i] += q.req[i]
            for r, v in q.xreq:
                if r in xfree:
                    xfree[r] += v
    k = 1 << 30
    for i in range(NRES):
        if req[i]:
            k = min(k, free[i] // req[i])
    for r, v in p.xreq:
        k = min(k, xfree[r] // v)
    if p.host_ports:
        # the ports of pods that stay (not below prio, or terminating) stay bound
        stay = [q for q in n.pods.values() if q.priority >= prio or q.terminating]
        k = min(
            k, 1 if ports_free(p, NodeInfo(n.name, n.alloc, pods={q.key: q for q in stay})) else 0
        )
    return max(k, 0)


def capacity_empty(p: PodInfo, n: NodeInfo) -> int:
    """How many pods with the pod's requests the node holds when empty."""
    req = p.req
    k = min((n.alloc[i] // req[i] for i in range(NRES) if req[i]), default=0)
    for r, v in p.xreq:
        k = min(k, n.xalloc.get(r, 0) // v)
    if p.host_ports:
        k = min(k, 1)
    return k


def tentative(p: PodInfo, n: NodeInfo, placed: list[tuple[PodInfo, NodeInfo]]) -> None:
    """Put the pod on the node for a trial (undone by `untentative`)."""
    if p.claims:
        dra.hold(p, n)
    n.pods[p.key] = p
    for i in range(NRES):
        n.used[i] += p.req[i]
    if p.xreq:
        add_extras(n, p.xreq, 1)
    placed.append((p, n))


def untentative(p: PodInfo, n: NodeInfo) -> None:
    if n.pods.pop(p.key, None) is not None:
        for i in range(NRES):
            n.used[i] -= p.req[i]
        if p.xreq:
            add_extras(n, p.xreq, -1)
        if p.claims:
            dra.unhold(p, n)


def put_back(m: PodInfo, n: NodeInfo) -> None:
    """A pod taken off its node for a trial counts on it again."""
    n.pods[m.key] = m
    for i in range(NRES):
        n.used[i] += m.req[i]
    if m.xreq:
        add_extras(n, m.xreq, 1)
