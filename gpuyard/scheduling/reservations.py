"""Reservations: the first gang that does not fit holds the nodes it will run on, those
with the most free room now (they free up first), packed by topology, enough for every
member once their current occupants leave; later work may only backfill onto nodes it
does not hold. (A gang past its scheduleTimeoutSeconds drops its hold: see the pass
driver's gang_ready.) The holds themselves are holds.Holds."""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING

from gpuyard import names
from gpuyard.scheduling.filters import capacity, capacity_empty
from gpuyard.scheduling.indexes import Buckets, alloc_caps, candidates
from gpuyard.scheduling.state import GPU

if TYPE_CHECKING:
    from gpuyard.scheduling.policy import Pass
    from gpuyard.scheduling.queue import Unit

_FIRST4 = itemgetter(0, 1, 2, 3)


def reserve(ps: Pass, u: Unit) -> None:
    """Hold, for the gang, the nodes it will run on. Nothing new lands on them
    meanwhile."""
    p0 = u.pods[0]
    req = p0.req
    if req[GPU]:
        b = ps.mem.buckets.get((p0.class_key(), "gpu"))
        if b is not None:
            _reserve_from_buckets(ps, u, b)
            return
    holds = ps.holds
    nodes = []
    for n in candidates(ps, p0):
        if not holds.free_for(n, u):
            continue
        k = capacity_empty(p0, n)
        if k > 0:
            nodes.append((n, k))
    if sum(k for _, k in nodes) < len(u.pods):
        return  # it could not fit even on an empty cluster: holding nodes helps no one
    nodes.sort(
        key=lambda nk: (
            -(nk[0].alloc[GPU] - nk[0].used[GPU]),
            -capacity(p0, nk[0]),
            nk[0].rack,
            nk[0].name,
        )
    )
    need = len(u.pods)
    held: list[str] = []
    for n, k in nodes:
        if need <= 0:
            break
        holds.hold(n.name, (u.key, u.priority))
        held.append(n.name)
        need -= k
    holds.sums.clear()
    if held:
        ps.d.reservations[u.key] = held


def _reserve_from_buckets(ps: Pass, u: Unit, b: Buckets) -> None:
    """`reserve`, in the same order, from the free-GPU buckets: nodes are taken from
    the most free GPUs down, only as far as the gang needs."""
    p0 = u.pods[0]
    ks = alloc_caps(ps, p0)
    holds = ps.holds
    total = sum(ks.values())
    for name, h in holds.held.items():
        if name in ks and not (h[0] == u.key or u.priority > h[1]):
            total -= ks[name]
    if total < len(u.pods):
        return  # it could not fit even on an empty cluster: holding nodes helps no one
    need = len(u.pods)
    held: list[str] = []
    for lv in range(len(b.levels) - 1, -1, -1):
        if need <= 0:
            break
        rows = [
            (
                n.used[GPU] - n.alloc[GPU],
                -capacity(p0, n),
                n.labels.get(names.LABEL_RACK, ""),
                name,
                n,
            )
            for name, n in b.levels[lv].items()
            if name in ks and holds.free_for(n, u)
        ]
        rows.sort(key=_FIRST4)  # most free GPUs, capacity, rack, name
        for *_, n in rows:
            if need <= 0:
                break
            holds.hold(n.name, (u.key, u.priority))
            held.append(n.name)
            need -= ks[n.name]
    holds.sums.clear()
    if held:
        ps.d.reservations[u.key] = held
