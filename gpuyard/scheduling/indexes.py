"""Indexes over the nodes, kept in the policy's memory across passes: the static
candidates of each class of pods (`candidates`), those candidates bucketed by free
room for best fit (`Buckets`), and per class and request vector the gang index
(`GangIndex`): how many such pods each node, rack and zone can still take.

Nodes whose use changed are told to the buckets and gang indexes (`moved`); a change
to the nodes themselves (added, removed, relabelled, Ready or not) drops them all
(see memory.Memory.follow)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from gpuyard import names
from gpuyard.scheduling.filters import capacity, capacity_empty, static_ok
from gpuyard.scheduling.holds import HeldCap, Hold
from gpuyard.scheduling.state import GPU, NodeInfo, PodInfo

if TYPE_CHECKING:
    from gpuyard.scheduling.policy import Pass

ClassKey = tuple[Any, ...]

CPU_STEP = 2000  # milli-cpu per level when single pods without GPUs are best-fitted
CPU_LEVELS = 128


class Buckets:
    """A class's candidate nodes, bucketed by free room (free GPUs, or free cpu in
    steps), so best fit looks at a few nodes instead of all of them."""

    def __init__(self, nodes: list[NodeInfo], mode: str) -> None:
        self.mode = mode
        top = max((n.alloc[GPU] for n in nodes), default=0) if mode == "gpu" else CPU_LEVELS
        self.levels: list[dict[str, NodeInfo]] = [{} for _ in range(top + 1)]
        self.pos: dict[str, int] = {}
        self.version = [0] * (top + 1)  # per level: bumps when a node enters or leaves
        # per level: (version, holds signature, nodes no one holds, holders of the rest)
        self.views: dict[int, tuple[int, Any, list[NodeInfo], set[tuple[str, int]]]] = {}
        for n in nodes:
            self.put(n)

    def level(self, n: NodeInfo) -> int:
        if self.mode == "gpu":
            return max(0, n.alloc[GPU] - n.used[GPU])
        return max(0, min(CPU_LEVELS, (n.alloc[0] - n.used[0]) // CPU_STEP))

    def put(self, n: NodeInfo) -> None:
        lv = min(self.level(n), len(self.levels) - 1)
        old = self.pos.get(n.name)
        if old == lv:
            return
        if old is not None:
            self.levels[old].pop(n.name, None)
            self.version[old] += 1
        self.levels[lv][n.name] = n
        self.pos[n.name] = lv
        self.version[lv] += 1

    def moved(self, n: NodeInfo) -> None:
        if n.name in self.pos:
            self.put(n)


class GangIndex:
    """For one class of pods and one request vector: how many such pods each candidate
    node can still take, summed per rack and per zone, kept current as nodes' use
    changes. A gang's capacity is then a sum over a few zones, and its fill order is
    built rack by rack, only as far as the gang needs."""

    def __init__(self, nodes: list[NodeInfo], pod: PodInfo) -> None:
        self.pod = pod  # one pod of the class: they all request the same
        self.req = pod.req
        self.members = {n.name for n in nodes}
        self.cap: dict[str, int] = {}  # node -> pods it can take (> 0 only)
        self.where: dict[str, tuple[str, str]] = {}  # node -> (zone, rack)
        self.rack_nodes: dict[tuple[str, str], dict[str, NodeInfo]] = {}
        self.rack_cap: dict[tuple[str, str], int] = {}
        self.zone_cap: dict[str, int] = {}
        self.zone_racks: dict[str, set[tuple[str, str]]] = {}
        self.total = 0
        # capacity of the nodes of a few reservations kept in memos (Hold), by id,
        # kept current here so a restored reservation costs nothing to count
        self.hold_caps: dict[int, tuple[Hold, HeldCap]] = {}
        self.stale: dict[str, NodeInfo] = {}
        for n in nodes:
            self.put(n)

    def count(self, names_: Iterable[str]) -> HeldCap:
        """The capacity of these nodes, in total and per zone and rack."""
        hc = HeldCap()
        for name in names_:
            k = self.cap.get(name)
            if k:
                zr = self.where[name]
                hc.total += k
                hc.zone[zr[0]] += k
                hc.rack[zr] += k
                hc.nodes.add(name)
        return hc

    def held_cap(self, hold: Hold) -> HeldCap:
        got = self.hold_caps.get(id(hold))
        if got is not None and got[0] is hold:
            return got[1]
        hc = self.count(hold.names)
        if len(self.hold_caps) >= 4:
            del self.hold_caps[next(iter(self.hold_caps))]
        self.hold_caps[id(hold)] = (hold, hc)
        return hc

    def put(self, n: NodeInfo) -> None:
        k = capacity(self.pod, n)
        old = self.cap.get(n.name, 0)
        if k == old:
            return
        zr = self.where.get(n.name)
        if zr is None:
            zr = (n.labels.get(names.LABEL_ZONE, ""), n.labels.get(names.LABEL_RACK, ""))
            self.where[n.name] = zr
        z = zr[0]
        d = k - old
        for hold, hc in self.hold_caps.values():
            if n.name in hold.mapping:
                hc.total += d
                hc.zone[z] += d
                hc.rack[zr] += d
                if k > 0:
                    hc.nodes.add(n.name)
                else:
                    hc.nodes.discard(n.name)
        self.total += d
        self.rack_cap[zr] = self.rack_cap.get(zr, 0) + d
        self.zone_cap[z] = self.zone_cap.get(z, 0) + d
        if k > 0:
            self.cap[n.name] = k
            if old == 0:
                self.rack_nodes.setdefault(zr, {})[n.name] = n
                self.zone_racks.setdefault(z, set()).add(zr)
        else:
            del self.cap[n.name]
            rn = self.rack_nodes[zr]
            del rn[n.name]
            if not rn:
                del self.rack_nodes[zr]
                del self.rack_cap[zr]
                self.zone_racks[z].discard(zr)
            if not self.zone_cap[z]:
                del self.zone_cap[z]

    def moved(self, n: NodeInfo) -> None:
        """A node's use changed: counted again when the index is next read (`fresh`),
        once however often it changed meanwhile."""
        if n.name in self.members:
            self.stale[n.name] = n

    def fresh(self) -> GangIndex:
        if self.stale:
            for n in self.stale.values():
                self.put(n)
            self.stale.clear()
        return self


# ----------------------------------------------------------------- lookups, made once


def candidates(ps: Pass, p: PodInfo) -> list[NodeInfo]:
    """The nodes the pod's class passes the static filters on (valid while no node
    changes)."""
    classes = ps.mem.classes
    ck = p.class_key()
    c = classes.get(ck)
    if c is None:
        c = [n for n in ps.s.nodes.values() if static_ok(p, n) is None]
        classes[ck] = c
    return c


def candidate_names(ps: Pass, p: PodInfo) -> set[str]:
    cand_names = ps.mem.cand_names
    ck = p.class_key()
    names_ = cand_names.get(ck)
    if names_ is None:
        names_ = {n.name for n in candidates(ps, p)}
        cand_names[ck] = names_
    return names_


def candidate_pos(ps: Pass, p: PodInfo) -> dict[str, int]:
    """node -> its place among the pod class's candidates."""
    cand_pos = ps.mem.cand_pos
    ck = p.class_key()
    pos = cand_pos.get(ck)
    if pos is None:
        pos = cand_pos[ck] = {n.name: i for i, n in enumerate(candidates(ps, p))}
    return pos


def buckets(ps: Pass, p: PodInfo, mode: str) -> Buckets:
    """The pod class's candidates by free GPUs ("gpu"), or by free cpu among the nodes
    without GPUs ("cpu0") or with them ("cpug")."""
    bs = ps.mem.buckets
    key = (p.class_key(), mode)
    b = bs.get(key)
    if b is None:
        cands = candidates(ps, p)
        if mode == "cpu0":
            cands = [n for n in cands if n.alloc[GPU] == 0]
        elif mode == "cpug":
            cands = [n for n in cands if n.alloc[GPU] > 0]
        b = Buckets(cands, mode)
        bs[key] = b
    return b


def gang_index(ps: Pass, p: PodInfo) -> tuple[ClassKey, GangIndex]:
    """The gang index of pods like `p` (and its key), up to date."""
    gis = ps.mem.gang_index
    key = (p.class_key(), tuple(p.req))
    gi = gis.get(key)
    if gi is None:
        gi = GangIndex(candidates(ps, p), p)
        gis[key] = gi
    return key, gi.fresh()


def alloc_caps(ps: Pass, p: PodInfo) -> dict[str, int]:
    """Per candidate node, how many pods like `p` it holds when empty (> 0 only)."""
    caps = ps.mem.alloc_caps
    req = p.req
    key = (p.class_key(), tuple(req))
    ks = caps.get(key)
    if ks is None:
        ks = {}
        for n in candidates(ps, p):
            k = capacity_empty(p, n)
            if k > 0:
                ks[n.name] = k
        caps[key] = ks
    return ks
