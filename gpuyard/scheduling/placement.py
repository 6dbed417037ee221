"""Placement: where a unit's pods go, or None; the state is left as it was.

- A single pod: on its nominated node if it still fits there, else best fit, the node
  with the fewest free GPUs that still fits (pods without GPUs: nodes without GPUs
  first, then the least free cpu), so whole nodes stay free for gangs. Read from the
  best-fit buckets; a plain scan inside a preemption trial.
- A gang: packed into as few zones and racks as possible (fullest zones and racks
  first, most allocated nodes first within a rack), nominated nodes first, near its
  bound members if some run (the narrowest topology domain it shares with them);
  filled greedily in that order. A gang with a topology request (required levels,
  slices, a preferred level: gpuyard.scheduling.topology) is placed by that module
  over the same order. A gang of one class with
  nothing bound or nominated takes its order from the gang index, only as far as it
  needs.
- A pod with pod affinity, anti-affinity off the hostname fast path, topology spread
  or preferred node affinity, or one a bound pod's such anti-affinity names
  (`affinity.constrained`), takes the slower path: its candidates are scanned with
  `affinity.Topology` as one more filter; a single pod goes to the node with the
  highest preference score (best fit breaks ties), a gang fills its order (nodes the
  gang prefers first) with the members seeing each other's tentative places.
- A pod that only scores (`affinity.scored`: preferences of its own or of bound
  pods naming it, PreferNoSchedule taints it does not tolerate) takes the same
  scan without the inter-pod filter; a gang's order is sorted by score.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from gpuyard import names
from gpuyard.scheduling import dra
from gpuyard.scheduling.affinity import Topology, constrained, scored
from gpuyard.scheduling.filters import (
    anti_ok,
    capacity,
    fits,
    fits_resources,
    static_ok,
    tentative,
    untentative,
)
from gpuyard.scheduling.holds import HeldCap
from gpuyard.scheduling.indexes import (
    CPU_STEP,
    Buckets,
    GangIndex,
    buckets,
    candidate_names,
    candidate_pos,
    candidates,
    gang_index,
)
from gpuyard.scheduling.state import GPU, NodeInfo, PodInfo
from gpuyard.scheduling.topology import Request, near_members, pod_order
from gpuyard.scheduling.topology import place as place_topology

if TYPE_CHECKING:
    from gpuyard.scheduling.policy import Pass
    from gpuyard.scheduling.queue import Unit

Placement = list[tuple[PodInfo, NodeInfo]]


def place(ps: Pass, u: Unit) -> Placement | None:
    """All pods of the unit on nodes, or None; the state is left unchanged. A gang with
    more pods than it needs together (`Unit.need`: minMember less its running members)
    places those all or nothing, and as many of the others as fit with them."""
    if not u.is_gang:
        n = place_single(ps, u.pods[0], u)
        return None if n is None else [(u.pods[0], n)]
    if u.need < len(u.pods):
        return _place_beyond(ps, u)
    return place_gang(ps, u)


def _place_beyond(ps: Pass, u: Unit) -> Placement | None:
    """The gang's first `need` pods (in index order) and as many more as fit with them:
    all at once if they fit, else the most, found by halving (a pass places each count
    at most once: log2 of the pods beyond minMember placements)."""
    pods = pod_order(u.pods)
    full = place_gang(ps, u)
    if full is not None:
        return full
    best = place_gang(ps, replace(u, pods=pods[: u.need]))
    if best is None:
        return None
    lo, hi = u.need, len(pods) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        got = place_gang(ps, replace(u, pods=pods[:mid]))
        if got is not None:
            best, lo = got, mid
        else:
            hi = mid - 1
    return best


# ------------------------------------------------------------------ single pods


def place_single(ps: Pass, p: PodInfo, u: Unit) -> NodeInfo | None:
    if constrained(ps.s, p):
        return _place_constrained(ps, p, u)
    if scored(ps.s, p):
        return _place_constrained(ps, p, u, filters=False)
    if p.nominated:
        n = ps.s.nodes.get(p.nominated)
        if (
            n
            and ps.holds.free_for(n, u)
            and static_ok(p, n) is None
            and fits(p, n)
            and anti_ok(p, n)
        ):
            return n
    g = p.req[GPU]
    if ps.trial.on or p.xreq or p.host_ports:
        # A preemption trial moved victims off nodes the buckets do not follow; the
        # buckets do not count resources outside the vectors or host ports.
        return _best_fit_scan(ps, p, u)
    if p.claims:
        return _best_fit_claims(ps, p, u)
    if g:
        # Best fit: the node with the fewest free GPUs that still fits.
        return _scan(ps, buckets(ps, p, "gpu"), g, p, u)
    # No GPUs wanted: nodes without GPUs first, then the least free cpu.
    need = p.req[0] // CPU_STEP
    return _scan(ps, buckets(ps, p, "cpu0"), need, p, u) or _scan(
        ps, buckets(ps, p, "cpug"), need, p, u
    )


def _place_constrained(ps: Pass, p: PodInfo, u: Unit, filters: bool = True) -> NodeInfo | None:
    """A single pod on the slower path: every candidate that passes all filters,
    inter-pod ones included; the highest preference score wins, then best fit (its
    nominated node first when it still passes). `filters` False: the pod only scores
    (no inter-pod filter can fail it, so the pass keeps its failure memos)."""
    if filters:
        ps.topo_hit = True
    topo = Topology(ps.s)
    if p.nominated:
        n = ps.s.nodes.get(p.nominated)
        if (
            n
            and ps.holds.free_for(n, u)
            and static_ok(p, n) is None
            and fits(p, n)
            and anti_ok(p, n)
            and topo.why_not(p, n) is None
        ):
            return n
    only = ps.trial.only
    cands = candidates(ps, p)
    if only is not None:
        pos = candidate_pos(ps, p)
        rows = sorted((pos[name], n) for name, n in only.items() if name in pos)
    else:
        rows = list(enumerate(cands))
    free_for = ps.holds.free_for
    ok = [
        (i, n)
        for i, n in rows
        if fits(p, n) and free_for(n, u) and anti_ok(p, n) and topo.why_not(p, n) is None
    ]
    if not ok:
        return None
    score = topo.scores(p, [n for _, n in ok])
    return min(
        ok,
        key=lambda t: (
            -score[t[1].name],
            t[1].alloc[GPU] - t[1].used[GPU],
            t[1].alloc[0] - t[1].used[0],
            t[0],
        ),
    )[1]


def _best_fit_claims(ps: Pass, p: PodInfo, u: Unit) -> NodeInfo | None:
    """`_best_fit_scan` for a pod with device claims, through the free-GPU buckets (its
    request counts the GPU devices its own claims take): level by level from the
    fewest free GPUs that fit, the nodes of a level in best-fit order (least free cpu,
    then candidate order), the first whose devices can be had. The same node as the
    scan over every candidate, found without looking at the levels above it; within a
    level the best is tried before the rest are ordered (it nearly always wins)."""
    b = buckets(ps, p, "gpu")
    pos = candidate_pos(ps, p)
    held, blocks = ps.holds.held, ps.holds.blocks
    r0, r1, r2, r3 = p.req
    levels = b.levels
    far = len(pos)

    def takes(n: NodeInfo) -> bool:
        if (p.anti_affinity or any(q.anti_affinity for q in n.pods.values())) and not anti_ok(p, n):
            return False
        return dra.plan(p, n) is not None

    for lv in range(min(r2, len(levels)), len(levels)):
        level = levels[lv]
        if not level:
            continue
        rows: list[tuple[tuple[int, int], NodeInfo]] = []
        for n in level.values():
            if held:
                h = held.get(n.name)
                if h is not None and blocks(h, u):
                    continue
            a, us = n.alloc, n.used  # fits_resources, inlined: this loop is hot
            if r2 + us[2] > a[2] or r0 + us[0] > a[0] or r1 + us[1] > a[1] or r3 + us[3] > a[3]:
                continue
            rows.append(((a[0] - us[0], pos.get(n.name, far)), n))
        if not rows:
            continue
        best = min(rows, key=_row_key)
        if takes(best[1]):
            return best[1]
        rows.sort(key=_row_key)
        for row in rows:
            if row is not best and takes(row[1]):
                return row[1]
    return None


def _row_key(row: tuple[tuple[int, int], NodeInfo]) -> tuple[int, int]:
    return row[0]


def _best_fit_scan(ps: Pass, p: PodInfo, u: Unit) -> NodeInfo | None:
    """Best fit by a plain scan of the pod's candidate nodes: fewest free GPUs
    (then least free cpu, then candidate order) among the nodes it fits on now.
    In a preemption trial only the nodes victims came off are looked at: the pod
    fitted nowhere before they did."""
    best: NodeInfo | None = None
    best_key: tuple[int, int, int] | None = None
    only = ps.trial.only
    if only is not None:
        pos = candidate_pos(ps, p)
        nodes: Iterable[tuple[int, NodeInfo]] = ((pos[name], n) for name, n in only.items())
    else:
        nodes = enumerate(candidates(ps, p))
    free_for = ps.holds.free_for
    if p.claims:
        # Devices are looked for only on the nodes that would win: best first, the
        # first whose devices can be had
        rows = [
            ((n.alloc[GPU] - n.used[GPU], n.alloc[0] - n.used[0], i), n)
            for i, n in nodes
            if fits_resources(p, n) and free_for(n, u)
        ]
        rows.sort(key=lambda t: t[0])
        for _, n in rows:
            if (p.anti_affinity or any(q.anti_affinity for q in n.pods.values())) and not anti_ok(
                p, n
            ):
                continue
            if dra.plan(p, n) is not None:
                return n
        return None
    for i, n in nodes:
        if not fits(p, n) or not free_for(n, u):
            continue
        if (p.anti_affinity or any(q.anti_affinity for q in n.pods.values())) and not anti_ok(p, n):
            continue
        key = (n.alloc[GPU] - n.used[GPU], n.alloc[0] - n.used[0], i)
        if best_key is None or key < best_key:
            best, best_key = n, key
    return best


def _scan(ps: Pass, b: Buckets, start: int, p: PodInfo, u: Unit) -> NodeInfo | None:
    holds = ps.holds
    held = holds.held
    blocks = holds.blocks
    r0, r1, r2, r3 = p.req
    anti = p.anti_affinity
    for lv in range(min(start, len(b.levels)), len(b.levels)):
        nodes: Iterable[NodeInfo] = b.levels[lv].values()
        check = bool(held)
        if check and len(b.levels[lv]) > 64:
            # Many nodes here: when every holder at this level holds against the
            # unit, walk only the nodes no one holds (same order).
            unheld, holders = holds.level_view(b, lv)
            if all(blocks(h, u) for h in holders):
                nodes, check = unheld, False
        for n in nodes:
            if check:
                h = held.get(n.name)
                if h is not None and blocks(h, u):
                    continue
            a, us = n.alloc, n.used  # fits, inlined: this loop is hot
            if r2 + us[2] > a[2] or r0 + us[0] > a[0] or r1 + us[1] > a[1] or r3 + us[3] > a[3]:
                continue
            if (anti or any(q.anti_affinity for q in n.pods.values())) and not anti_ok(p, n):
                continue
            return n
    return None


# ------------------------------------------------------------------ gangs


def place_gang(ps: Pass, u: Unit) -> Placement | None:
    placed: Placement = []
    by_class: dict[tuple[Any, ...], list[PodInfo]] = defaultdict(list)
    for p in u.pods:
        by_class[(p.class_key(), tuple(p.req))].append(p)
    trial = ps.trial.on
    for pods in by_class.values():
        # A quick bound from the free-GPU buckets: if even every node with enough
        # free GPUs cannot hold the pods, skip the full ordering. (The buckets are
        # made here even when a gang index answers: their order breaks best-fit ties.)
        g = pods[0].req[GPU]
        if g and not trial:
            levels = buckets(ps, pods[0], "gpu").levels
            if sum(len(levels[lv]) * (lv // g) for lv in range(g, len(levels))) < len(pods):
                return None
    pack = ps.cfg.pack_topology
    s = ps.s
    topo = Topology(s) if any(constrained(s, p) for p in u.pods) else None
    if topo is not None:
        ps.topo_hit = True
    # nodes score differently for the gang's pods (preferences, PreferNoSchedule)
    rank = topo or (Topology(s) if any(scored(s, p) for p in u.pods) else None)
    if u.topo:
        return _place_topo(ps, u, u.topo, by_class, topo, rank)
    if rank is None and len(by_class) == 1 and not u.bound and not trial and pack:
        return _place_gang_fast(ps, u, next(iter(by_class.values())))
    try:
        for pods in by_class.values():
            p0 = pods[0]
            # Prefer nodes nominated for this gang.
            nominated = {p.nominated for p in pods if p.nominated}
            if pack:
                order = _gang_order(ps, u, candidates(ps, p0), p0)
            else:
                free_for = ps.holds.free_for
                nodes = [n for n in candidates(ps, p0) if free_for(n, u)]
                order = sorted(nodes, key=lambda n: n.name)
            if u.bound and pack:
                # Members already run (a binding was refused, or one was replaced):
                # the rest go to the narrowest domain they share with them (clique,
                # rack, block, zone), if they can.
                order = near_members(ps, u, order)
            if nominated:
                order.sort(key=lambda n: n.name not in nominated)
            if rank is not None and scored(s, p0):
                score = rank.scores(p0, order)
                order.sort(key=lambda n: -score[n.name])
            if not fill(order, pods, placed, topo):
                return None
        return list(placed)
    finally:
        for p, n in placed:
            untentative(p, n)


def _place_gang_fast(ps: Pass, u: Unit, pods: list[PodInfo]) -> Placement | None:
    """`place_gang` for a gang of one class with nothing bound, outside a preemption
    trial, in the same order (nominated nodes first), from the gang index."""
    nominated = {p.nominated for p in pods if p.nominated is not None}
    order = _fast_gang_order(ps, u, pods[0], len(pods), nominated)
    if order is None:
        return None
    placed: Placement = []
    try:
        return list(placed) if fill(order, pods, placed) else None
    finally:
        for p, n in placed:
            untentative(p, n)


def fill(
    order: Iterable[NodeInfo], pods: list[PodInfo], placed: Placement, topo: Topology | None = None
) -> bool:
    """Put the pods, in order, on the nodes in order (tentatively); all placed? With
    a `Topology`, its filter holds too and it counts each pod placed."""
    i = 0
    if topo is not None:
        order = list(order)
        # A pod the inter-pod filters refuse here may go on a later node; the next
        # pods start again from the first node (earlier places may open for them).
        for p in pods:
            for n in order:
                if fits(p, n) and anti_ok(p, n) and topo.why_not(p, n) is None:
                    tentative(p, n, placed)
                    topo.place(p, n)
                    i += 1
                    break
            else:
                return False
        return True
    for n in order:
        if i == len(pods):
            break
        while i < len(pods) and fits(pods[i], n) and anti_ok(pods[i], n):
            tentative(pods[i], n, placed)
            i += 1
    return i == len(pods)


def _fast_gang_order(
    ps: Pass, u: Unit, p0: PodInfo, need: int, first: set[str]
) -> Iterable[NodeInfo] | None:
    """The order `_gang_order` gives over the nodes free for the unit, the nodes
    named in `first` (its nominated nodes) moved ahead, from the gang index: None at
    once when their capacity is short of `need` pods."""
    key, gi = gang_index(ps, p0)
    if gi.total < need:
        return None
    excluded = ps.holds.excluding(u, key, gi)
    if gi.total - sum(hc.total for hc in excluded) < need:
        return None
    return _fast_order_iter(gi, excluded, first)


def _fast_order_iter(gi: GangIndex, excluded: list[HeldCap], first: set[str]) -> Iterable[NodeInfo]:
    zone_cap = dict(gi.zone_cap)
    rack_cap = gi.rack_cap
    ex_rack: Counter[tuple[str, str]] = Counter()
    ex_nodes: set[str] = set()
    for hc in excluded:
        for z, k in hc.zone.items():
            if k:
                zone_cap[z] -= k
        ex_rack.update(hc.rack)
        ex_nodes |= hc.nodes
    if first:
        # the nominated nodes among them, in the order below, then the rest
        ahead = []
        for name in first:
            if name not in gi.cap or name in ex_nodes:
                continue
            zr = gi.where[name]
            n = gi.rack_nodes[zr][name]
            rk = rack_cap[zr] - ex_rack[zr]
            ahead.append(
                ((-zone_cap[zr[0]], zr[0], -rk, zr[1], n.alloc[GPU] - n.used[GPU], name), n)
            )
        ahead.sort(key=lambda t: t[0])
        for _, n in ahead:
            yield n
        ex_nodes = ex_nodes | first
    zones = sorted((-k, z) for z, k in zone_cap.items() if k > 0)
    for _, z in zones:
        racks = []
        for zr in gi.zone_racks.get(z, ()):
            k = rack_cap[zr] - ex_rack[zr] if ex_rack else rack_cap[zr]
            if k > 0:
                racks.append((-k, zr[1], zr))
        racks.sort()
        for _, _, zr in racks:
            rows = [
                (n.alloc[GPU] - n.used[GPU], name, n)
                for name, n in gi.rack_nodes[zr].items()
                if name not in ex_nodes
            ]
            rows.sort(key=lambda t: (t[0], t[1]))
            for t in rows:
                yield t[2]


def _gang_order(ps: Pass, u: Unit, nodes: list[NodeInfo], p0: PodInfo) -> list[NodeInfo]:
    """The nodes free for the unit in the order a gang fills them: fullest zones and
    racks first, so the gang spans as few of them as it can; most allocated nodes
    first within a rack. (This scan is hot: holds and capacity are inlined.)"""
    rack_cap: defaultdict[tuple[str, str], int] = defaultdict(int)
    zone_cap: defaultdict[str, int] = defaultdict(int)
    rows = []
    held = ps.holds.held
    blocks = ps.holds.blocks
    r0, r1, r2, r3 = p0.req
    plain = not p0.xreq and not p0.host_ports
    big = 1 << 30
    zk, rk = names.LABEL_ZONE, names.LABEL_RACK
    for n in nodes:
        if held:
            h = held.get(n.name)
            if h is not None and blocks(h, u):
                continue
        if plain:
            a, us = n.alloc, n.used
            k = (a[2] - us[2]) // r2 if r2 else big
            if k <= 0:
                continue
            if r0:
                v = (a[0] - us[0]) // r0
                if v < k:
                    k = v
            if r1:
                v = (a[1] - us[1]) // r1
                if v < k:
                    k = v
            if r3:
                v = (a[3] - us[3]) // r3
                if v < k:
                    k = v
        else:
            k = capacity(p0, n)
        if k <= 0:
            continue
        labels = n.labels
        z = labels.get(zk, "")
        r = labels.get(rk, "")
        rack_cap[(z, r)] += k
        zone_cap[z] += k
        rows.append((z, r, n.alloc[GPU] - n.used[GPU], n.name, n))
    rows.sort(key=lambda t: (-zone_cap[t[0]], t[0], -rack_cap[(t[0], t[1])], t[1], t[2], t[3]))
    return [t[4] for t in rows]


def _place_topo(
    ps: Pass,
    u: Unit,
    req: Request,
    by_class: dict[tuple[Any, ...], list[PodInfo]],
    topo: Topology | None,
    rank: Topology | None,
) -> Placement | None:
    """A gang with a topology request (topology.place): its candidates free for it, in
    the order a gang fills them (nominated nodes first, near its running members, by
    score), each kind of pod on the nodes its static filters pass."""
    free_for = ps.holds.free_for
    p0 = u.pods[0]
    kinds = list(by_class)
    firsts = [pods[0] for pods in by_class.values()]
    allowed: list[set[str]] | None = None
    if len(firsts) == 1:
        nodes = [n for n in candidates(ps, p0) if free_for(n, u)]
    else:
        allowed = [candidate_names(ps, p) for p in firsts]
        seen: dict[str, NodeInfo] = {}
        for p in firsts:
            for n in candidates(ps, p):
                if n.name not in seen and free_for(n, u):
                    seen[n.name] = n
        nodes = list(seen.values())
    nominated = {p.nominated for p in u.pods if p.nominated}
    pack = ps.cfg.pack_topology
    s = ps.s

    def arrange(ns: list[NodeInfo]) -> list[NodeInfo]:
        if pack and allowed is None:
            order = _gang_order(ps, u, ns, p0)
        else:
            order = sorted(ns, key=lambda n: n.name)
        if u.bound and pack:
            order = near_members(ps, u, order)
        if nominated:
            order.sort(key=lambda n: n.name not in nominated)
        if rank is not None and scored(s, p0):
            score = rank.scores(p0, order)
            order.sort(key=lambda n: -score[n.name])
        return order

    def fill_kinds(
        order: list[NodeInfo], pods: list[PodInfo], placed: Placement, t: Topology | None
    ) -> bool:
        if allowed is None:
            return fill(order, pods, placed, t)
        for i, kind in enumerate(kinds):
            mine = [p for p in pods if (p.class_key(), tuple(p.req)) == kind]
            if mine and not fill([n for n in order if n.name in allowed[i]], mine, placed, t):
                return False
        return True

    return place_topology(ps, u, req, nodes, arrange, fill_kinds, topo)
