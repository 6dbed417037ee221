"""The queue: pending work as units (a gang, placed all at once or not at all, or a
single pod), in order (higher priority first, then older), kept across passes and
updated from what changed since the last one (state.queue_pods, state.queue_groups).

Units of one shape (`shape_of`: they fit in exactly the same places; with fair sharing,
of one team too) and one priority share a lane, oldest first: when the head of a lane cannot be placed, none behind it
can, so a pass costs the number of lanes, not of units. Units without a shape
(nominated pods, gangs with members bound, gangs waiting for members or with more pods
than minMember, gangs with timeouts) are in the loose lane (`LOOSE`) and are taken one by one. The pass driver merges the
lanes by their heads."""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from gpuyard.scheduling.state import ClusterState, PodInfo

if TYPE_CHECKING:
    from gpuyard.scheduling.topology import Request

Shape = tuple[Any, ...]
LaneId = tuple[Any, ...]
Entry = tuple[int, int, str]  # (-priority, seq, unit key): queue order
LOOSE: LaneId = ("loose",)

_SEQ = attrgetter("seq")
_PRIORITY = attrgetter("priority")


@dataclass(eq=False)
class Unit:
    key: str  # "gang ns/name" or "pod ns/name"
    pods: list[PodInfo]
    priority: int
    seq: int
    group: str | None = None
    bound: int = 0  # members already bound (gangs)
    # a single pod's shape, made once per pod record (see shape_of)
    shape1: Shape | None = None
    # how long it runs at most once started (its pods' longest; None: one is unknown)
    runtime: float | None = None
    # what a gang needs of the topology: its PodGroup's request, else its pods'
    topo: Request | None = None
    # the pods that must be placed together: a gang's minMember less its members
    # running (at least 1); its other pods go too when they fit (see placement.place)
    need: int = 1

    @property
    def is_gang(self) -> bool:
        return self.group is not None

    @property
    def label(self) -> str:
        return f"gang {self.group.split('/', 1)[-1]}" if self.group else f"pod {self.pods[0].name}"


def shape_of(u: Unit) -> Shape | None:
    """Units with one shape fit in exactly the same places (None: no shape)."""
    if u.group is None:
        # A single pod's shape is fixed for the record's life; computed once.
        p1 = u.pods[0]
        if p1.nominated:
            return None
        sh = u.shape1
        if sh is None:
            labels1 = tuple(sorted(p1.labels.items())) if p1.anti_affinity else ()
            sh = u.shape1 = (p1.class_key(), tuple(p1.req), 1, False, labels1, p1.team)
        return sh
    if u.bound or any(p.nominated for p in u.pods):
        return None
    p0 = u.pods[0]
    if any(p.req != p0.req or p.class_key() != p0.class_key() for p in u.pods[1:]):
        return None
    # Pods with anti-affinity fit alike only if their own labels match too (labels
    # decide whom they repel and who repels them); balloons all do.
    labels = tuple(sorted(p0.labels.items())) if p0.anti_affinity else ()
    if labels and any(p.labels != p0.labels for p in u.pods[1:]):
        return None
    return (p0.class_key(), tuple(p0.req), len(u.pods), u.is_gang, labels, p0.team, u.topo)


class Queue:
    """The pending units in lanes, kept across passes (in the policy's memory)."""

    def __init__(self, s: ClusterState, gangs: bool) -> None:
        self.gangs = gangs
        self.teams_gen = s.teams_gen  # the teams its units' shapes were made with
        self.units: dict[str, Unit] = {}
        self.entry: dict[str, Entry] = {}
        self.lane_of: dict[str, LaneId] = {}
        self.lanes: dict[LaneId, list[Entry]] = {}
        self.singles: dict[str, Unit] = {}  # pod key -> its unit, made once per record
        keys = {self._key(p.key, p.group) for p in s.pending.values()}
        for k in keys:
            self._put(s, k, ordered=False)
        for lane in self.lanes.values():
            lane.sort()
        s.queue_pods.clear()
        s.queue_groups.clear()

    def _key(self, key: str, group: str | None) -> str:
        return f"gang {group}" if (self.gangs and group) else f"pod {key}"

    def sync(self, s: ClusterState) -> set[str]:
        """Apply what changed; returns the units that left the queue."""
        touched: set[str] = set()
        for key, group in s.queue_pods.items():
            pk = f"pod {key}"
            if self.gangs and group:
                touched.add(f"gang {group}")
                if pk in self.units:  # it joined a group
                    touched.add(pk)
            else:
                touched.add(pk)
        if self.gangs:
            touched.update(f"gang {g}" for g in s.queue_groups)
        s.queue_pods.clear()
        s.queue_groups.clear()
        return {k for k in touched if not self._put(s, k)}

    def _make(self, s: ClusterState, ukey: str) -> Unit | None:
        kind, _, key = ukey.partition(" ")
        if kind == "pod":
            p = s.pending.get(key)
            if p is None or (self.gangs and p.group):
                self.singles.pop(key, None)
                return None
            su = self.singles.get(key)
            if su is None or su.pods[0] is not p:
                su = self.singles[key] = Unit(ukey, [p], p.priority, p.seq, runtime=p.runtime)
            return su
        members = s.members.get(key, {})
        pending = s.pending
        pods = [q for q in members.values() if pending.get(q.key) is q]
        if not pods:
            return None
        pods.sort(key=_SEQ)
        bound = sum(1 for q in members.values() if q.node and not q.terminating)
        runtimes = [q.runtime for q in pods]
        runtime = None if None in runtimes else max(runtimes)  # type: ignore[type-var]
        prio = max(map(_PRIORITY, pods))
        g = s.groups.get(key)
        if g is not None and g.priority is not None:  # the PodGroup's own (upstream API)
            prio = g.priority
        topo = g.topology if g is not None else None
        if not topo:
            topo = next((q.topology for q in pods if q.topology), None)
        # a CompositePodGroup's gang places every pod of its children together
        need = (
            len(pods) if g is None or g.composite else min(len(pods), max(1, g.min_member - bound))
        )
        return Unit(
            ukey, pods, prio, pods[0].seq, key, bound, runtime=runtime, topo=topo or None, need=need
        )

    @staticmethod
    def _lane(s: ClusterState, u: Unit) -> LaneId:
        shape = shape_of(u)
        if shape is None:
            return LOOSE
        if u.group is not None:
            g = s.groups.get(u.group)
            if (
                g is None
                or g.timeout
                or g.wait
                or g.min_resources is not None
                or len(u.pods) != g.min_member  # waits for members, or has pods beyond
                or u.group in s.backoff_until
            ):
                return LOOSE  # gang_ready has something to say: taken on its own
        return (shape, u.priority)

    def _put(self, s: ClusterState, ukey: str, ordered: bool = True) -> bool:
        """(Re)place one unit; False when it is no longer pending."""
        old = self.entry.pop(ukey, None)
        if old is not None:
            lid = self.lane_of.pop(ukey)
            lane = self.lanes[lid]
            del lane[bisect_left(lane, old)]
            if not lane:
                del self.lanes[lid]
            del self.units[ukey]
        u = self._make(s, ukey)
        if u is None:
            return False
        e = (-u.priority, u.seq, ukey)
        lid = self._lane(s, u)
        self.units[ukey] = u
        self.entry[ukey] = e
        self.lane_of[ukey] = lid
        lane = self.lanes.setdefault(lid, [])
        if ordered:
            insort(lane, e)
        else:
            lane.append(e)
        return True
