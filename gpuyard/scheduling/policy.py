"""The scheduling policy: from a `ClusterState` to decisions. Pure: no I/O, no clock.

    decisions = schedule(state, now, PolicyConfig())

Work is taken in order: higher priority first, then older. A unit of work is a gang
(every pending pod of a PodGroup, placed all at once or not at all) or a single pod.

- Filters, as kube-scheduler defines them: node Ready and schedulable; NoSchedule and
  NoExecute taints against tolerations; nodeSelector; required node affinity; required
  pod anti-affinity on kubernetes.io/hostname (both ways); resource fit of cpu,
  memory, nvidia.com/gpu and pod slots against allocatable minus every bound pod.
  Static filters are evaluated once per equivalence class of pods, not once per pod.
- Scores: a gang is packed into as few zones and racks as possible; single pods are
  bin-packed onto the most allocated node that fits (best fit on free GPUs), so whole
  nodes stay free for gangs.
- Reservations: the first gang that does not fit holds the nodes it could use now,
  and gains each node that frees up, until it fits; later work may only backfill onto
  nodes it does not hold. A gang past its scheduleTimeoutSeconds drops its hold and
  backs off for a while, so a hold never lasts forever.
- Preemption: when a unit does not fit, the cheapest set of lower-priority victims is
  chosen (lowest priority first, so balloons go before borrowed low-priority work),
  counting a victim's whole gang as one unit, and only if the whole preemptor then
  fits. Victims are returned as evictions and the nodes the preemptor will use as
  nominations, which later cycles hold for it.
- Every unit left pending gets a reason a person can read.

`schedule` records the bindings it returns in the state (as if they succeeded); the
driver calls `state.unbind(key)` for a binding the API refused. Evictions are not
applied: the victims leave the state when the driver sees them deleted.

`PolicyConfig(gangs=False)` is plain FIFO (gang labels ignored, pods bound one by one);
`PolicyConfig(reservations=False)` is gangs without reservations. The digital twin
runs those through this same code for its comparisons.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any

from gpuyard import names
from gpuyard.kube import objects as o
from gpuyard.scheduling.state import GPU, NRES, RESOURCES, ClusterState, NodeInfo, PodInfo

__all__ = ["ClusterState", "Decisions", "Eviction", "PolicyConfig", "schedule"]


@dataclass(frozen=True)
class PolicyConfig:
    gangs: bool = True
    reservations: bool = True
    preemption: bool = True
    pack_topology: bool = True
    max_reservations: int = 1
    timeout_backoff: float = 30.0
    # Write a reason for every unit left pending (the live scheduler's Events); the
    # twin turns it off, as it only counts what happened.
    explain: bool = True


@dataclass
class Eviction:
    pod: str
    preemptor: str
    reason: str


def _label(unit_key: str) -> str:
    """The label of a unit key, as Unit.label gives it: "gang ns/name" -> "gang name"."""
    kind, _, key = unit_key.partition(" ")
    return f"{kind} {key.split('/', 1)[-1]}"


def relabel(reason: str, src: str, dst: str) -> str:
    """A reason written for unit `src`, told of unit `dst` (reasons start with the
    unit's label; units of one shape share everything after it)."""
    if src == dst:
        return reason
    a = _label(src)
    return _label(dst) + reason[len(a) :] if reason.startswith(a) else reason


class Reasons(MutableMapping[str, str]):
    """unit -> why it stays pending. Whole runs of units that fail alike are added as
    one slice of the queue with the reason of the unit they fail like, and spelled out
    (each with its own name) only when read, so a pass over a long blocked queue costs
    no more than its number of shapes."""

    def __init__(self) -> None:
        self._d: dict[str, str] = {}
        self._bulk: list[tuple[list[tuple[int, int, str]], str, str]] = []

    def add_run(self, entries: list[tuple[int, int, str]], reason: str, like: str) -> None:
        if entries:
            self._bulk.append((entries, reason, like))

    def _flat(self) -> dict[str, str]:
        if self._bulk:
            for entries, reason, like in self._bulk:
                for e in entries:
                    self._d[e[2]] = relabel(reason, like, e[2])
            self._bulk.clear()
        return self._d

    def __getitem__(self, key: str) -> str:
        return self._flat()[key]

    def __setitem__(self, key: str, value: str) -> None:
        # A unit is given one reason per pass: never one that is also in a run.
        self._d[key] = value

    def __delitem__(self, key: str) -> None:
        del self._flat()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._flat())

    def __len__(self) -> int:
        return len(self._flat())

    def __repr__(self) -> str:
        return f"Reasons({self._flat()!r})"


@dataclass
class Decisions:
    bindings: list[tuple[str, str]] = field(default_factory=list)
    nominations: dict[str, str] = field(default_factory=dict)
    evictions: list[Eviction] = field(default_factory=list)
    unschedulable: Reasons = field(default_factory=Reasons)  # unit -> reason
    reservations: dict[str, list[str]] = field(default_factory=dict)  # gang -> nodes held
    timed_out: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.bindings or self.evictions or self.nominations)


@dataclass
class Unit:
    key: str  # "gang ns/name" or "pod ns/name"
    pods: list[PodInfo]
    priority: int
    seq: int
    group: str | None = None
    bound: int = 0  # members already bound (gangs)

    @property
    def is_gang(self) -> bool:
        return self.group is not None

    @property
    def label(self) -> str:
        return f"gang {self.group.split('/', 1)[-1]}" if self.group else f"pod {self.pods[0].name}"


# --------------------------------------------------------------------------- filters


def _static_ok(p: PodInfo, n: NodeInfo) -> str | None:
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


def _anti_ok(p: PodInfo, n: NodeInfo, extra: Iterable[PodInfo] = ()) -> bool:
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


def _fits(req: list[int], n: NodeInfo) -> bool:
    a, u = n.alloc, n.used
    return (
        req[2] + u[2] <= a[2]
        and req[0] + u[0] <= a[0]
        and req[1] + u[1] <= a[1]
        and req[3] + u[3] <= a[3]
    )


def _short(req: list[int], n: NodeInfo) -> str | None:
    for i in range(NRES):
        if req[i] and n.used[i] + req[i] > n.alloc[i]:
            return RESOURCES[i]
    return None


def _fits_after_terminating(req: list[int], n: NodeInfo) -> bool:
    """Whether the pod fits once the node's terminating pods (e.g. victims) are gone."""
    gone = [0] * NRES
    for q in n.pods.values():
        if q.terminating:
            for i in range(NRES):
                gone[i] += q.req[i]
    if not any(gone):
        return False
    return all(not req[i] or n.used[i] - gone[i] + req[i] <= n.alloc[i] for i in range(NRES))


def _capacity(req: list[int], n: NodeInfo) -> int:
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


def _capacity_below(req: list[int], n: NodeInfo, prio: int) -> int:
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


# --------------------------------------------------------------------------- buckets

CPU_STEP = 2000  # milli-cpu per level when single pods without GPUs are best-fitted
CPU_LEVELS = 128


class _Buckets:
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


class _GangIndex:
    """For one class of pods and one request vector: how many such pods each candidate
    node can still take, summed per rack and per zone, kept current as nodes' use
    changes. A gang's capacity is then a sum over a few zones, and its fill order is
    built rack by rack, only as far as the gang needs."""

    def __init__(self, nodes: list[NodeInfo], req: list[int]) -> None:
        self.req = req
        self.members = {n.name for n in nodes}
        self.cap: dict[str, int] = {}  # node -> pods it can take (> 0 only)
        self.where: dict[str, tuple[str, str]] = {}  # node -> (zone, rack)
        self.rack_nodes: dict[tuple[str, str], dict[str, NodeInfo]] = {}
        self.rack_cap: dict[tuple[str, str], int] = {}
        self.zone_cap: dict[str, int] = {}
        self.zone_racks: dict[str, set[tuple[str, str]]] = {}
        self.total = 0
        # capacity of the nodes of a few reservations kept in memos (_Hold), by id,
        # kept current here so a restored reservation costs nothing to count
        self.hold_caps: dict[int, tuple[_Hold, _HeldCap]] = {}
        self.stale: dict[str, NodeInfo] = {}
        for n in nodes:
            self.put(n)

    def count(self, names_: Iterable[str]) -> _HeldCap:
        """The capacity of these nodes, in total and per zone and rack."""
        hc = _HeldCap()
        for name in names_:
            k = self.cap.get(name)
            if k:
                zr = self.where[name]
                hc.total += k
                hc.zone[zr[0]] += k
                hc.rack[zr] += k
                hc.nodes.add(name)
        return hc

    def held_cap(self, hold: _Hold) -> _HeldCap:
        got = self.hold_caps.get(id(hold))
        if got is not None and got[0] is hold:
            return got[1]
        hc = self.count(hold.names)
        if len(self.hold_caps) >= 4:
            del self.hold_caps[next(iter(self.hold_caps))]
        self.hold_caps[id(hold)] = (hold, hc)
        return hc

    def put(self, n: NodeInfo) -> None:
        k = _capacity(self.req, n)
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

    def fresh(self) -> _GangIndex:
        if self.stale:
            for n in self.stale.values():
                self.put(n)
            self.stale.clear()
        return self


@dataclass
class _HeldCap:
    """Capacity, in one gang index, of the nodes one holder holds."""

    total: int = 0
    zone: Counter[str] = field(default_factory=Counter)
    rack: Counter[tuple[str, str]] = field(default_factory=Counter)
    nodes: set[str] = field(default_factory=set)


@dataclass
class _Hold:
    """A reservation kept in a failure memo, ready to be put back in one step."""

    h: tuple[str, int]  # (unit key, priority)
    names: list[str]
    mapping: dict[str, tuple[str, int]]
    fp: tuple[int, int]  # (count, xor of the names' hashes)

    @classmethod
    def of(cls, h: tuple[str, int], names_: list[str]) -> _Hold:
        x = 0
        for name in names_:
            x ^= hash(name)
        return cls(h, list(names_), dict.fromkeys(names_, h), (len(names_), x))


@dataclass(eq=False)
class _Memo:
    """Why a failed unit is sure to fail again while it holds (see _Pass._memo_valid).
    mode "all": until any room is freed (gen: the state's freed_gen); "plain" (the
    unit cannot preempt) and "hi" (a complete preemption attempt failed): until the
    room freed since (gen: the freed-log epoch, pos: positions in the logs), counted
    per node in `counted`, could add up to the `need - slots` pods it lacked."""

    mode: str
    sig: tuple[Any, ...]
    gen: int
    pos: dict[int, int] = field(default_factory=dict)
    slots: int = 0
    need: int = 0
    counted: dict[str, int] = field(default_factory=dict)
    extra: int = 0


_SEQ = attrgetter("seq")
_FIRST4 = itemgetter(0, 1, 2, 3)
_PRIORITY = attrgetter("priority")

# --------------------------------------------------------------------------- the pass


class _Victims:
    """The bound pods preemption may take, kept across passes and updated from
    state.bound_log: single pods in a key-ordered list per priority, and per bound gang
    its entry (cost, key, members). `order(prio)` yields the units whose pods are all
    below prio by (cost, key): cost is (highest priority in the unit, pods in it)."""

    def __init__(self, s: ClusterState, gangs: bool) -> None:
        self.gangs = gangs
        self.singles: dict[int, list[str]] = {}  # priority -> sorted "pod ns/name"
        self.where: dict[str, tuple[int, str | None]] = {}  # pod key -> (prio, group)
        self.gang: dict[str, tuple[tuple[int, int], str, list[PodInfo]]] = {}
        self.dirty: set[str] = set()  # gangs whose entry is out of date
        s.bound_log.clear()  # what it logged before is in bound_by_prio
        for bound in s.bound_by_prio.values():
            for key in bound:
                s.bound_log[key] = s.pods[key].group if key in s.pods else None
        self.sync(s)

    def sync(self, s: ClusterState) -> None:
        groups: set[str] = set()
        for key, group in s.bound_log.items():
            old = self.where.pop(key, None)
            if old is not None:
                if old[1] is None:
                    lane = self.singles[old[0]]
                    i = bisect_left(lane, f"pod {key}")
                    del lane[i]
                    if not lane:
                        del self.singles[old[0]]
                else:
                    groups.add(old[1])
            p = s.pods.get(key)
            if p is None:
                if group and self.gangs:
                    groups.add(group)
                continue
            b = s.bound_by_prio.get(p.priority)
            if b is None or b.get(key) is not p:
                if p.group and self.gangs:
                    groups.add(p.group)
                continue  # not bound
            if p.group and self.gangs:
                groups.add(p.group)
                self.where[key] = (p.priority, p.group)
            else:
                insort(self.singles.setdefault(p.priority, []), f"pod {key}")
                self.where[key] = (p.priority, None)
        s.bound_log.clear()
        self.dirty.update(groups)  # their entries are made again when next asked for

    def _gangs(self, s: ClusterState) -> None:
        for g in self.dirty:
            # as _Pass._victim_unit gives them (preemption needs one of them bound)
            members = [m for m in s.members.get(g, {}).values() if m.node and not m.terminating]
            if members:
                top = max(m.priority for m in members)
                self.gang[g] = ((top, len(members)), f"gang {g}", members)
            else:
                self.gang.pop(g, None)
        self.dirty.clear()

    def order(
        self, s: ClusterState, prio: int
    ) -> Iterator[tuple[tuple[int, int], str, list[PodInfo]]]:
        pods = s.pods
        if self.dirty:
            self._gangs(s)

        def singles(level: int, lane: list[str]) -> Iterator[Any]:
            cost = (level, 1)
            for vk in lane:
                yield (cost, vk, [pods[vk[4:]]])

        runs: list[Iterable[Any]] = [
            singles(level, lane) for level, lane in self.singles.items() if level < prio
        ]
        runs.append(sorted(e for e in self.gang.values() if e[0][0] < prio))
        return heapq.merge(*runs)


_LOOSE: tuple[Any, ...] = ("loose",)
_Entry = tuple[int, int, str]  # (-priority, seq, unit key): queue order


class _Queue:
    """The pending units in queue order, kept in the state across passes and updated
    from what changed since the last one (state.queue_pods, state.queue_groups).

    Units of one shape and one priority share a lane, oldest first: when the head of a
    lane cannot be placed, none behind it can, so a pass costs the number of lanes,
    not of units. Units without a shape (nominated pods, gangs with members bound,
    gangs waiting for members or with timeouts) are in the loose lane and are taken one
    by one. The pass merges the lanes by their heads."""

    def __init__(self, s: ClusterState, gangs: bool) -> None:
        self.gangs = gangs
        self.units: dict[str, Unit] = {}
        self.entry: dict[str, _Entry] = {}
        self.lane_of: dict[str, tuple[Any, ...]] = {}
        self.lanes: dict[tuple[Any, ...], list[_Entry]] = {}
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
                return None
            su = p.__dict__.get("_unit")  # made once per pod record
            if su is None:
                su = p.__dict__["_unit"] = Unit(ukey, [p], p.priority, p.seq)
            return su  # type: ignore[no-any-return]
        members = s.members.get(key, {})
        pending = s.pending
        pods = [q for q in members.values() if pending.get(q.key) is q]
        if not pods:
            return None
        pods.sort(key=_SEQ)
        bound = sum(1 for q in members.values() if q.node and not q.terminating)
        return Unit(ukey, pods, max(map(_PRIORITY, pods)), pods[0].seq, key, bound)

    @staticmethod
    def _lane(s: ClusterState, u: Unit) -> tuple[Any, ...]:
        shape = _Pass._shape(u)
        if shape is None:
            return _LOOSE
        if u.group is not None:
            g = s.groups.get(u.group)
            if (
                g is None
                or g.timeout
                or g.min_resources is not None
                or len(u.pods) < g.min_member
                or u.group in s.backoff_until
            ):
                return _LOOSE  # gang_ready has something to say: taken on its own
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


class _Pass:
    """One scheduling pass over the queue."""

    def __init__(self, state: ClusterState, now: float, cfg: PolicyConfig) -> None:
        self.s = state
        self.now = now
        self.cfg = cfg
        self.d = Decisions()
        # node -> (unit key, priority) holding it (a reservation or a nomination); only
        # higher-priority work may use a node another unit holds.
        self.held: dict[str, tuple[str, int]] = {}
        # Caches kept in the state across passes: the static candidates of each class
        # of pods (valid while no node changes), and per class the candidates bucketed
        # by free GPUs for best fit (nodes whose use changed are re-bucketed here).
        cache = state.cache
        if cache.get("node_gen") != state.node_gen:
            cache.clear()
            cache["node_gen"] = state.node_gen
            state.dirty_nodes.clear()
        self.classes: dict[tuple[Any, ...], list[NodeInfo]] = cache.setdefault("classes", {})
        self.cand_names: dict[tuple[Any, ...], set[str]] = cache.setdefault("cand_names", {})
        self.cand_pos: dict[tuple[Any, ...], dict[str, int]] = cache.setdefault("cand_pos", {})
        # per (class, requests): how many such pods each candidate holds when empty (> 0)
        self.alloc_caps: dict[tuple[Any, ...], dict[str, int]] = cache.setdefault("alloc_caps", {})
        self.buckets: dict[tuple[Any, ...], _Buckets] = cache.setdefault("buckets", {})
        # unit of the loose lane -> (memo, reason, reservation) at its last failure;
        # lane -> (memo, reason, reservation, head unit) at its head's last failure
        self.blocked: dict[str, tuple[Any, ...]] = cache.setdefault("blocked", {})
        self.lane_blocked: dict[Any, tuple[Any, ...]] = cache.setdefault("lane_blocked", {})
        # per (class, requests) of gang pods: capacity summed per rack and zone
        self.gang_index: dict[tuple[Any, ...], _GangIndex] = cache.setdefault("gang_index", {})
        if state.dirty_nodes and (self.buckets or self.gang_index):
            for name in sorted(state.dirty_nodes):
                n = state.nodes.get(name)
                if n is not None:
                    for bk in self.buckets.values():
                        bk.moved(n)
                    for gi in self.gang_index.values():
                        gi.moved(n)
        state.dirty_nodes.clear()
        # The nodes each unit holds in `held`, and per gang index the capacity of held
        # nodes by holder (rebuilt when `held` changes).
        self.held_by: dict[str, set[str]] = {}  # unit key -> nodes it holds
        self.hold_fp: dict[tuple[str, int], list[int]] = {}  # holder -> (count, xor)
        self.hold_src: dict[tuple[str, int], _Hold] = {}  # holder -> reservation restored
        self._held_sum: dict[tuple[Any, ...], dict[tuple[str, int], _HeldCap]] = {}
        self.victims: set[str] = set()
        self.trial = False  # inside a preemption trial: buckets do not follow trial moves
        self.preempt_complete = False  # the last preemption attempt looked at every victim
        self.preempt_slots = 0  # ...and the slots it found with all of them gone
        self.trial_only: dict[str, NodeInfo] | None = None  # see _best_fit_scan
        self._held_ver = 0  # bumps on every change to `held`
        self._sig_at = -1
        self._sig: tuple[Any, ...] = ()
        self.reservations = 0
        self.failed_shapes: dict[tuple[Any, ...], int] = {}
        self.failed_reason: dict[tuple[Any, ...], tuple[str, str]] = {}  # (reason, unit)

    # -- static candidates per equivalence class
    def candidates(self, p: PodInfo) -> list[NodeInfo]:
        ck = p.class_key()
        c = self.classes.get(ck)
        if c is None:
            c = [n for n in self.s.nodes.values() if _static_ok(p, n) is None]
            self.classes[ck] = c
        return c

    def candidate_names(self, p: PodInfo) -> set[str]:
        ck = p.class_key()
        names_ = self.cand_names.get(ck)
        if names_ is None:
            names_ = {n.name for n in self.candidates(p)}
            self.cand_names[ck] = names_
        return names_

    def free_for(self, n: NodeInfo, unit: Unit) -> bool:
        h = self.held.get(n.name)
        return h is None or h[0] == unit.key or unit.priority > h[1]

    # -- the pass
    def run(self) -> Decisions:
        s = self.s
        q = s.queue
        if not isinstance(q, _Queue) or q.gangs != self.cfg.gangs:
            q = s.queue = _Queue(s, self.cfg.gangs)
            self.blocked.clear()
            self.lane_blocked.clear()
        else:
            for key in q.sync(s):
                self.blocked.pop(key, None)
        if isinstance(s.victim_index, _Victims) and s.bound_log:
            s.victim_index.sync(s)  # keeps the log short even when nothing preempts
        for lid in [k for k in self.lane_blocked if k not in q.lanes]:
            del self.lane_blocked[lid]
        # Nominated pods hold their nodes against lower-ranked work (they are all in
        # the loose lane: a nominated pod has no shape).
        for e in q.lanes.get(_LOOSE, ()):
            u = q.units[e[2]]
            for p in u.pods:
                if p.nominated and p.nominated in s.nodes and p.nominated not in self.held:
                    self._hold(p.nominated, (u.key, p.priority))
        heap = [(lane[0], i, lid) for i, (lid, lane) in enumerate(q.lanes.items())]
        heapq.heapify(heap)
        cursor: dict[Any, int] = {}
        units = q.units
        while heap:
            head, i, lid = heapq.heappop(heap)
            lane = q.lanes[lid]
            c = cursor.get(lid, 0)
            u = units[head[2]]
            if lid == _LOOSE:
                self._step(u)
                go_on = True
            else:
                go_on = self._lane_step(u, lid, lane, c)
            if go_on and c + 1 < len(lane):
                cursor[lid] = c + 1
                heapq.heappush(heap, (lane[c + 1], i, lid))
        return self.d

    def _memo(self, u: Unit) -> _Memo:
        """What a unit that just failed needs to fail again, checked by `_memo_valid`."""
        p0 = u.pods[0]
        uniform = all(p.req == p0.req and p.class_key() == p0.class_key() for p in u.pods)
        never = not self.cfg.preemption or any(
            p.preemption_never or p.priority_class in self.s.preempt_never for p in u.pods
        )
        if uniform and (never or self.preempt_complete):
            slots = self.preempt_slots if not never else self._slots(u)
            logs = self.s.freed_log
            pos = {q: len(log) for q, log in logs.items() if never or q >= u.priority}
            return _Memo(
                "plain" if never else "hi",
                self._hold_sig(u),
                self.s.freed_epoch,
                pos,
                slots,
                len(u.pods),
            )
        return _Memo("all", self._hold_sig(u), self.s.freed_gen)

    def _slots(self, u: Unit) -> int:
        """Pods like the unit's first that fit now on the nodes free for it."""
        key, gi = self._index(u.pods[0])
        return gi.total - sum(
            hc.total
            for h, hc in self._held_caps(key, gi).items()
            if not (h[0] == u.key or u.priority > h[1])
        )

    def _memo_valid(self, m: _Memo, u: Unit) -> bool:
        """Whether a unit fails again for sure: the holds against it then still hold the
        same nodes (new ones only take room away), and the room
        freed since its failure (only room it could not already have preempted, after a
        complete preemption attempt) cannot make up the pods it lacked. Each check
        reads only the frees logged since the last one."""
        fps = self.hold_fp
        for h, count, x in m.sig:  # holds added since only take room away
            fp = fps.get(h)
            if fp is None or fp[0] != count or fp[1] != x:
                return False
        if m.mode == "all":
            return bool(m.gen == self.s.freed_gen)
        if m.gen != self.s.freed_epoch:
            return False
        prio = u.priority
        hi = m.mode == "hi"
        held = self.held
        was_held = {h for h, _, _ in m.sig}
        p0 = u.pods[0]
        req = p0.req
        cset: set[str] | None = None
        nodes = self.s.nodes
        for q, log in self.s.freed_log.items():
            if hi and q < prio:
                continue
            start = m.pos.get(q, 0)
            if start >= len(log):
                continue
            m.pos[q] = len(log)
            if cset is None:
                cset = self.candidate_names(p0)
            for name in log[start:]:
                n = nodes.get(name)
                if n is None or name not in cset:
                    continue
                h = held.get(name)
                if h is not None and h in was_held and not self.free_for(n, u):
                    continue  # held against it then and still (checked above)
                c = _capacity_below(req, n, prio) if hi else _capacity(req, n)
                before = m.counted.get(name, 0)
                if c > before:
                    m.counted[name] = c
                    m.extra += c - before
        return m.slots + m.extra < m.need

    def _hold_sig(self, u: Unit) -> tuple[Any, ...]:
        key, prio = u.key, u.priority
        return tuple(
            sorted(
                (h, fp[0], fp[1]) for h, fp in self.hold_fp.items() if h[0] != key and prio <= h[1]
            )
        )

    def _restore_hold(self, u: Unit, hold: _Hold | None) -> None:
        if hold is None or self.reservations >= self.cfg.max_reservations:
            return
        self.reservations += 1
        h = (u.key, u.priority)
        if (
            hold.h == h
            and h not in self.hold_fp
            and u.key not in self.held_by
            and self.held.keys().isdisjoint(hold.mapping)
        ):
            # The common case, in one step: none of its nodes is held by anyone else.
            self.held.update(hold.mapping)
            self._held_ver += 1
            self.held_by[u.key] = set(hold.names)
            self.hold_fp[h] = list(hold.fp)
            self.hold_src[h] = hold
        else:
            for name in hold.names:
                self._hold(name, h)
        self._held_sum.clear()
        self.d.reservations[u.key] = list(hold.names)

    def _step(self, u: Unit) -> None:
        """One unit of the loose lane, on its own."""
        if u.group is not None and not self.gang_ready(u):
            return
        last = self.blocked.get(u.key)
        if last is not None and self._memo_valid(last[0], u):
            # Nothing it could use was freed since it last failed: keep reason and hold.
            self.d.unschedulable[u.key] = last[1]
            self._restore_hold(u, last[2])
            return
        shape = self._shape(u)
        failed_at = self.failed_shapes.get(shape) if shape is not None else None
        if shape is not None and failed_at is not None and failed_at >= u.priority:
            # A unit of the same shape and no lower priority failed earlier in this
            # pass; room has only shrunk since, so this one cannot fit either.
            self.d.unschedulable[u.key] = relabel(*self.failed_reason[shape], u.key)
            return
        memo = self._attempt(u, shape)
        if memo is None:
            self.blocked.pop(u.key, None)
        else:
            self.blocked[u.key] = memo

    def _lane_step(self, u: Unit, lid: tuple[Any, ...], lane: list[Any], c: int) -> bool:
        """The head of a lane of one shape and priority. False: the rest of the lane
        fails with it (given reasons in one run)."""
        shape, prio = lid
        memo = self.lane_blocked.get(lid)
        if memo is not None and memo[3] == u.key and self._memo_valid(memo[0], u):
            reason = memo[1]
            self.d.unschedulable[u.key] = reason
            self._restore_hold(u, memo[2])
        elif (failed_at := self.failed_shapes.get(shape)) is not None and failed_at >= prio:
            reason = relabel(*self.failed_reason[shape], u.key)
            self.d.unschedulable[u.key] = reason
        else:
            m = self._attempt(u, shape)
            if m is None:
                self.lane_blocked.pop(lid, None)
                return True
            self.lane_blocked[lid] = (*m, u.key)
            reason = m[1]
        if self.failed_shapes.get(shape, prio - 1) < prio:
            self.failed_shapes[shape] = prio
            self.failed_reason[shape] = (reason, u.key)
        self.d.unschedulable.add_run(lane[c + 1 :], reason, u.key)
        return False

    def _attempt(
        self, u: Unit, shape: tuple[Any, ...] | None
    ) -> tuple[_Memo, str, _Hold | None] | None:
        """Place the unit, or preempt for it, or give its reason (and maybe reserve).
        Returns the memo of a failure, None when it was placed or preempts."""
        placed = self.place(u)
        if placed is not None:
            for p, n in placed:
                before = n.alloc[GPU] - n.used[GPU]
                self.s.bind(p.key, n.name)
                self.d.bindings.append((p.key, n.name))
                self._rebucket(n, before)
            self.release(u)
            return None
        self.preempt_complete = False
        if self.cfg.preemption and self.preempt(u):
            return None
        memo = self._memo(u)
        reason = self.d.unschedulable[u.key] = (
            self.explain(u) if self.cfg.explain else "does not fit"
        )
        if shape is not None:
            self.failed_shapes[shape] = u.priority
            self.failed_reason[shape] = (reason, u.key)
        if u.is_gang and self.cfg.reservations and self.reservations < self.cfg.max_reservations:
            self.reservations += 1
            self.reserve(u)
        held = self.d.reservations.get(u.key)
        return memo, reason, _Hold.of((u.key, u.priority), held) if held else None

    @staticmethod
    def _shape(u: Unit) -> tuple[Any, ...] | None:
        """Units with one shape fit in exactly the same places (None: no shape)."""
        if u.group is None:
            # A single pod's shape is fixed for the record's life; computed once.
            p1 = u.pods[0]
            if p1.nominated:
                return None
            sh = p1.__dict__.get("_shape1")
            if sh is None:
                labels1 = tuple(sorted(p1.labels.items())) if p1.anti_affinity else ()
                sh = (p1.class_key(), tuple(p1.req), 1, False, labels1)
                p1.__dict__["_shape1"] = sh
            return sh  # type: ignore[no-any-return]
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
        return (p0.class_key(), tuple(p0.req), len(u.pods), u.is_gang, labels)

    # -- holds
    def _hold(self, name: str, h: tuple[str, int]) -> None:
        old = self.held.get(name)
        if old == h:
            return
        self._held_ver += 1
        self.hold_src.pop(h, None)
        if old is not None:
            self.hold_src.pop(old, None)
            self._fp(old, name, -1)
            self.held_by[old[0]].discard(name)
        self.held[name] = h
        self._fp(h, name, 1)
        self.held_by.setdefault(h[0], set()).add(name)

    def _fp(self, h: tuple[str, int], name: str, d: int) -> None:
        """Add (d=1) or take (d=-1) a node in its holder's fingerprint: the count and
        the xor of the names' hashes."""
        fp = self.hold_fp.get(h)
        if fp is None:
            fp = self.hold_fp[h] = [0, 0]
        fp[0] += d
        fp[1] ^= hash(name)
        if not fp[0]:
            del self.hold_fp[h]

    def release(self, u: Unit) -> None:
        """Drop every hold the unit has (it is placed, or backs off)."""
        mine = self.held_by.pop(u.key, None)
        if not mine:
            return
        self._held_ver += 1
        for name in mine:
            h = self.held.pop(name)
            self.hold_src.pop(h, None)
            self._fp(h, name, -1)
        self._held_sum.clear()

    # -- gangs
    def gang_ready(self, u: Unit) -> bool:
        assert u.group is not None
        g = self.s.groups.get(u.group)
        name = u.group.split("/", 1)[-1]
        if g is None:
            self.d.unschedulable[u.key] = f"gang {name}: PodGroup {u.group} not found"
            return False
        have = len(u.pods) + u.bound
        if have < g.min_member:
            self.d.unschedulable[u.key] = (
                f"gang {name} waits for members: {have} of minMember {g.min_member} exist"
            )
            return False
        until = self.s.backoff_until.get(u.group)
        if until is not None and self.now < until:
            self.d.unschedulable[u.key] = (
                f"gang {name} timed out after {g.timeout:g}s and backs off for "
                f"{until - self.now:.0f}s more"
            )
            return False
        first = self.s.group_first_seen.get(u.group)
        if first is None:
            first = g.created
        if g.timeout and u.bound == 0 and self.now - first > g.timeout:
            # Past its timeout: drop any hold, back off, and start the clock again.
            self.s.backoff_until[u.group] = self.now + self.cfg.timeout_backoff
            self.s.group_first_seen[u.group] = self.now + self.cfg.timeout_backoff
            self.d.timed_out.append(u.group)
            self.release(u)
            self.d.unschedulable[u.key] = (
                f"gang {name} did not fit within scheduleTimeoutSeconds={g.timeout:g}; backing off"
            )
            return False
        if g.min_resources is not None:
            free = [0] * NRES
            for n in self.s.nodes.values():
                if n.ready and not n.unschedulable:
                    for i in range(NRES):
                        free[i] += n.alloc[i] - n.used[i]
            for i, r in enumerate(RESOURCES):
                if g.min_resources[i] > free[i]:
                    self.d.unschedulable[u.key] = (
                        f"gang {name}: minResources {r}={g.min_resources[i]} exceeds the "
                        f"{free[i]} free in the cluster"
                    )
                    return False
        return True

    def place(self, u: Unit) -> list[tuple[PodInfo, NodeInfo]] | None:
        """All pods of the unit on nodes, or None; the state is left unchanged."""
        if not u.is_gang:
            n = self.place_single(u.pods[0], u)
            return None if n is None else [(u.pods[0], n)]
        return self.place_gang(u)

    def place_single(self, p: PodInfo, u: Unit) -> NodeInfo | None:
        if p.nominated:
            n = self.s.nodes.get(p.nominated)
            if (
                n
                and self.free_for(n, u)
                and _static_ok(p, n) is None
                and _fits(p.req, n)
                and _anti_ok(p, n)
            ):
                return n
        g = p.req[GPU]
        if self.trial:
            # A preemption trial moved victims off nodes the buckets do not follow.
            return self._best_fit_scan(p, u)
        if g:
            # Best fit: the node with the fewest free GPUs that still fits.
            return self._scan(self._buckets(p, "gpu"), g, p, u)
        # No GPUs wanted: nodes without GPUs first, then the least free cpu.
        need = p.req[0] // CPU_STEP
        return self._scan(self._buckets(p, "cpu0"), need, p, u) or self._scan(
            self._buckets(p, "cpug"), need, p, u
        )

    def _best_fit_scan(self, p: PodInfo, u: Unit) -> NodeInfo | None:
        """Best fit by a plain scan of the pod's candidate nodes: fewest free GPUs
        (then least free cpu, then candidate order) among the nodes it fits on now.
        In a preemption trial only the nodes victims came off are looked at: the pod
        fitted nowhere before they did."""
        best: NodeInfo | None = None
        best_key: tuple[int, int, int] | None = None
        only = self.trial_only
        if only is not None:
            pos = self._cand_pos(p)
            nodes: Iterable[tuple[int, NodeInfo]] = ((pos[name], n) for name, n in only.items())
        else:
            nodes = enumerate(self.candidates(p))
        for i, n in nodes:
            if not _fits(p.req, n) or not self.free_for(n, u):
                continue
            if (p.anti_affinity or any(q.anti_affinity for q in n.pods.values())) and not _anti_ok(
                p, n
            ):
                continue
            key = (n.alloc[GPU] - n.used[GPU], n.alloc[0] - n.used[0], i)
            if best_key is None or key < best_key:
                best, best_key = n, key
        return best

    def _cand_pos(self, p: PodInfo) -> dict[str, int]:
        ck = p.class_key()
        pos = self.cand_pos.get(ck)
        if pos is None:
            pos = self.cand_pos[ck] = {n.name: i for i, n in enumerate(self.candidates(p))}
        return pos

    def _scan(self, b: _Buckets, start: int, p: PodInfo, u: Unit) -> NodeInfo | None:
        held = self.held
        key, prio = u.key, u.priority
        r0, r1, r2, r3 = p.req
        anti = p.anti_affinity
        for lv in range(min(start, len(b.levels)), len(b.levels)):
            nodes: Iterable[NodeInfo] = b.levels[lv].values()
            check = bool(held)
            if check and len(b.levels[lv]) > 64:
                # Many nodes here: when every holder at this level holds against the
                # unit, walk only the nodes no one holds (same order).
                unheld, holders = self._level_view(b, lv)
                if all(h[0] != key and prio <= h[1] for h in holders):
                    nodes, check = unheld, False
            for n in nodes:
                if check:
                    h = held.get(n.name)
                    if h is not None and h[0] != key and prio <= h[1]:
                        continue
                a, us = n.alloc, n.used  # _fits, inlined: this loop is hot
                if r2 + us[2] > a[2] or r0 + us[0] > a[0] or r1 + us[1] > a[1] or r3 + us[3] > a[3]:
                    continue
                if (anti or any(q.anti_affinity for q in n.pods.values())) and not _anti_ok(p, n):
                    continue
                return n
        return None

    def _level_view(self, b: _Buckets, lv: int) -> tuple[list[NodeInfo], set[tuple[str, int]]]:
        """The nodes of a bucket level that no one holds, and the holders of the others;
        kept (across passes too) while the level and the holds are the same."""
        sig = self._held_sig()
        v = b.views.get(lv)
        if v is not None and v[0] == b.version[lv] and v[1] == sig:
            return v[2], v[3]
        held = self.held
        unheld = []
        holders = set()
        for name, n in b.levels[lv].items():
            h = held.get(name)
            if h is None:
                unheld.append(n)
            else:
                holders.add(h)
        b.views[lv] = (b.version[lv], sig, unheld, holders)
        return unheld, holders

    def _held_sig(self) -> tuple[Any, ...]:
        """What is held, by whom, as a value (from the holders' fingerprints)."""
        if self._sig_at != self._held_ver:
            self._sig = tuple(sorted((h, fp[0], fp[1]) for h, fp in self.hold_fp.items()))
            self._sig_at = self._held_ver
        return self._sig

    def _buckets(self, p: PodInfo, mode: str) -> _Buckets:
        key = (p.class_key(), mode)
        b = self.buckets.get(key)
        if b is None:
            cands = self.candidates(p)
            if mode == "cpu0":
                cands = [n for n in cands if n.alloc[GPU] == 0]
            elif mode == "cpug":
                cands = [n for n in cands if n.alloc[GPU] > 0]
            b = _Buckets(cands, mode)
            self.buckets[key] = b
        return b

    def _rebucket(self, n: NodeInfo, before: int) -> None:
        for b in self.buckets.values():
            b.moved(n)
        for gi in self.gang_index.values():
            gi.moved(n)
        if n.name in self.held:
            self._held_sum.clear()  # a held node's capacity changed

    def _index(self, p: PodInfo) -> tuple[tuple[Any, ...], _GangIndex]:
        key = (p.class_key(), tuple(p.req))
        gi = self.gang_index.get(key)
        if gi is None:
            gi = _GangIndex(self.candidates(p), p.req)
            self.gang_index[key] = gi
        return key, gi.fresh()

    def _held_caps(self, key: tuple[Any, ...], gi: _GangIndex) -> dict[tuple[str, int], _HeldCap]:
        """The capacity (in the index) of the nodes each holder holds."""
        hs = self._held_sum.get(key)
        if hs is None:
            hs = {}
            held = self.held
            for h in self.hold_fp:
                src = self.hold_src.get(h)
                if src is not None:
                    hs[h] = gi.held_cap(src)  # a reservation restored as it was
                    continue
                mine = self.held_by.get(h[0], ())
                hs[h] = gi.count(name for name in mine if held[name] == h)
            self._held_sum[key] = hs
        return hs

    def _fast_gang_order(self, u: Unit, p0: PodInfo, need: int) -> Iterable[NodeInfo] | None:
        """The order `_gang_order` gives over the nodes free for the unit, from the gang
        index: None at once when their capacity is short of `need` pods."""
        key, gi = self._index(p0)
        if gi.total < need:
            return None
        excluded = [
            hc
            for h, hc in self._held_caps(key, gi).items()
            if not (h[0] == u.key or u.priority > h[1])
        ]
        if gi.total - sum(hc.total for hc in excluded) < need:
            return None
        return self._fast_order_iter(gi, excluded)

    @staticmethod
    def _fast_order_iter(gi: _GangIndex, excluded: list[_HeldCap]) -> Iterable[NodeInfo]:
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

    def _gang_order(self, nodes: list[NodeInfo], req: list[int]) -> list[NodeInfo]:
        """Nodes in the order a gang fills them: fullest zones and racks first, so the
        gang spans as few of them as it can; most allocated nodes first within a rack."""
        if not self.cfg.pack_topology:
            return sorted(nodes, key=lambda n: n.name)
        rack_cap: defaultdict[tuple[str, str], int] = defaultdict(int)
        zone_cap: defaultdict[str, int] = defaultdict(int)
        rows = []
        for n in nodes:
            k = _capacity(req, n)
            if k <= 0:
                continue
            labels = n.labels
            z = labels.get(names.LABEL_ZONE, "")
            r = labels.get(names.LABEL_RACK, "")
            rack_cap[(z, r)] += k
            zone_cap[z] += k
            rows.append((z, r, n.alloc[GPU] - n.used[GPU], n.name, n))
        rows.sort(key=lambda t: (-zone_cap[t[0]], t[0], -rack_cap[(t[0], t[1])], t[1], t[2], t[3]))
        return [t[4] for t in rows]

    def _bound_places(self, u: Unit) -> tuple[set[str], set[str]]:
        """The zones and racks where the gang's bound members run."""
        zones: set[str] = set()
        racks: set[str] = set()
        for m in self.s.members.get(u.group or "", {}).values():
            n = self.s.nodes.get(m.node or "")
            if n is not None and not m.terminating:
                zones.add(n.zone)
                racks.add(n.rack)
        return zones, racks

    def place_gang(self, u: Unit) -> list[tuple[PodInfo, NodeInfo]] | None:
        placed: list[tuple[PodInfo, NodeInfo]] = []
        by_class: dict[tuple[Any, ...], list[PodInfo]] = defaultdict(list)
        for p in u.pods:
            by_class[(p.class_key(), tuple(p.req))].append(p)
        for pods in by_class.values():
            # A quick bound from the free-GPU buckets: if even every node with enough
            # free GPUs cannot hold the pods, skip the full ordering. (The buckets are
            # made here even when a gang index answers: their order breaks best-fit ties.)
            g = pods[0].req[GPU]
            if g and not self.trial:
                levels = self._buckets(pods[0], "gpu").levels
                if sum(len(levels[lv]) * (lv // g) for lv in range(g, len(levels))) < len(pods):
                    return None
        if (
            len(by_class) == 1
            and not u.bound
            and not self.trial
            and self.cfg.pack_topology
            and not any(p.nominated for p in u.pods)
        ):
            return self._place_gang_fast(u, next(iter(by_class.values())))
        try:
            for pods in by_class.values():
                p0 = pods[0]
                nodes = [n for n in self.candidates(p0) if self.free_for(n, u)]
                # Prefer nodes nominated for this gang.
                nominated = {p.nominated for p in pods if p.nominated}
                order = self._gang_order(nodes, p0.req)
                if u.bound and self.cfg.pack_topology:
                    # Members already run (a binding was refused, or one was replaced):
                    # the rest go to the same racks, then the same zones, if they can.
                    near = self._bound_places(u)
                    order.sort(key=lambda n: (n.rack not in near[1], n.zone not in near[0]))
                if nominated:
                    order.sort(key=lambda n: n.name not in nominated)
                if not self._fill(order, pods, placed):
                    return None
            return list(placed)
        finally:
            for p, n in placed:
                self._untentative(p, n)

    def _place_gang_fast(
        self, u: Unit, pods: list[PodInfo]
    ) -> list[tuple[PodInfo, NodeInfo]] | None:
        """`place_gang` for a gang of one class with nothing bound or nominated, in the
        same order, from the gang index."""
        order = self._fast_gang_order(u, pods[0], len(pods))
        if order is None:
            return None
        placed: list[tuple[PodInfo, NodeInfo]] = []
        try:
            return list(placed) if self._fill(order, pods, placed) else None
        finally:
            for p, n in placed:
                self._untentative(p, n)

    def _fill(
        self,
        order: Iterable[NodeInfo],
        pods: list[PodInfo],
        placed: list[tuple[PodInfo, NodeInfo]],
    ) -> bool:
        """Put the pods, in order, on the nodes in order (tentatively); all placed?"""
        i = 0
        for n in order:
            if i == len(pods):
                break
            while i < len(pods) and _fits(pods[i].req, n) and _anti_ok(pods[i], n):
                self._tentative(pods[i], n, placed)
                i += 1
        return i == len(pods)

    def _tentative(self, p: PodInfo, n: NodeInfo, placed: list[tuple[PodInfo, NodeInfo]]) -> None:
        n.pods[p.key] = p
        for i in range(NRES):
            n.used[i] += p.req[i]
        placed.append((p, n))

    def _untentative(self, p: PodInfo, n: NodeInfo) -> None:
        if n.pods.pop(p.key, None) is not None:
            for i in range(NRES):
                n.used[i] -= p.req[i]

    # -- reservations
    def reserve(self, u: Unit) -> None:
        """Hold, for the gang, the nodes it will run on: those with the most free room
        now (they free up first), packed by topology, enough for every member once
        their current occupants leave. Nothing new lands on them meanwhile."""
        p0 = u.pods[0]
        req = p0.req
        if req[GPU]:
            b = self.buckets.get((p0.class_key(), "gpu"))
            if b is not None:
                self._reserve_from_buckets(u, b)
                return
        nodes = []
        for n in self.candidates(p0):
            if not self.free_for(n, u):
                continue
            k = min((n.alloc[i] // req[i] for i in range(NRES) if req[i]), default=0)
            if k > 0:
                nodes.append((n, k))
        if sum(k for _, k in nodes) < len(u.pods):
            return  # it could not fit even on an empty cluster: holding nodes helps no one
        nodes.sort(
            key=lambda nk: (
                -(nk[0].alloc[GPU] - nk[0].used[GPU]),
                -_capacity(req, nk[0]),
                nk[0].rack,
                nk[0].name,
            )
        )
        need = len(u.pods)
        held: list[str] = []
        for n, k in nodes:
            if need <= 0:
                break
            self._hold(n.name, (u.key, u.priority))
            held.append(n.name)
            need -= k
        self._held_sum.clear()
        if held:
            self.d.reservations[u.key] = held

    def _reserve_from_buckets(self, u: Unit, b: _Buckets) -> None:
        """`reserve`, in the same order, from the free-GPU buckets: nodes are taken from
        the most free GPUs down, only as far as the gang needs."""
        p0 = u.pods[0]
        req = p0.req
        key = (p0.class_key(), tuple(req))
        ks = self.alloc_caps.get(key)
        if ks is None:
            ks = {}
            for n in self.candidates(p0):
                k = min((n.alloc[i] // req[i] for i in range(NRES) if req[i]), default=0)
                if k > 0:
                    ks[n.name] = k
            self.alloc_caps[key] = ks
        total = sum(ks.values())
        for name, h in self.held.items():
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
                    -_capacity(req, n),
                    n.labels.get(names.LABEL_RACK, ""),
                    name,
                    n,
                )
                for name, n in b.levels[lv].items()
                if name in ks and self.free_for(n, u)
            ]
            rows.sort(key=_FIRST4)  # most free GPUs, capacity, rack, name
            for *_, n in rows:
                if need <= 0:
                    break
                self._hold(n.name, (u.key, u.priority))
                held.append(n.name)
                need -= ks[n.name]
        self._held_sum.clear()
        if held:
            self.d.reservations[u.key] = held

    # -- preemption
    def _victim_unit(self, q: PodInfo) -> list[PodInfo]:
        if q.group and self.cfg.gangs:
            return [
                m for m in self.s.members.get(q.group, {}).values() if m.node and not m.terminating
            ]
        return [q]

    def _victim_order(self, prio: int) -> Iterator[tuple[tuple[int, int], str, list[PodInfo]]]:
        """Every unit of bound pods all below `prio`, cheapest first: (cost, key,
        members), from the victim index kept across passes."""
        vi = self.s.victim_index
        if not isinstance(vi, _Victims) or vi.gangs != self.cfg.gangs:
            vi = self.s.victim_index = _Victims(self.s, self.cfg.gangs)
        else:
            vi.sync(self.s)
        return vi.order(self.s, prio)

    def preempt(self, u: Unit) -> bool:
        self.trial = True
        try:
            return self._preempt(u)
        finally:
            self.trial = False

    def _preempt(self, u: Unit) -> bool:
        if any(p.preemption_never or p.priority_class in self.s.preempt_never for p in u.pods):
            return False
        # Past here every possible victim is looked at (unless some were taken by an
        # earlier preemptor in this pass): a failure then stands until room is freed
        # that was not preemptable (see _memo).
        self.preempt_complete = not self.victims
        prio = u.priority
        p0 = u.pods[0]
        cset = self.candidate_names(p0)
        nodes = self.s.nodes
        victims = self.victims
        # Slots for its pods on the nodes free for it, from the gang index (less what
        # other holders hold), then kept current as victims come off nodes.
        key, gi = self._index(p0)
        slots = self._slots(u)
        cost: dict[str, tuple[int, int]] = {}
        unit_of: dict[str, list[PodInfo]] = {}

        def seed(m: PodInfo) -> bool:
            """A pod through which its unit can be a victim of this preemptor."""
            if m.terminating or m.key in victims:
                return False
            n = nodes.get(m.node or "")
            return (
                n is not None and n.name in cset and n.pods.get(m.key) is m and self.free_for(n, u)
            )

        # Take victim units, cheapest first, until the whole preemptor fits.
        chosen: list[str] = []
        removed: list[PodInfo] = []
        placement = None
        caps: dict[str, int] = {}
        touched: dict[str, NodeInfo] = {}  # candidate nodes free for it victims came off
        need = len(u.pods)
        # A gang of one kind of pod that no pod anti-affinity touches fits exactly
        # when the slots add up (its fill is greedy by capacity): then slots decide,
        # and the placement is made once, at the end.
        by_slots = (
            u.is_gang
            and all(p.req == p0.req and p.class_key() == p0.class_key() for p in u.pods)
            and not any(p.anti_affinity for p in u.pods)
            and not any(
                o.requirements_match(o.label_selector_requirements(sel), p.labels)
                for _, sel in self.s.anti_bound.values()
                for p in u.pods
            )
        )

        def recount(vn: NodeInfo) -> int:
            if vn.name not in cset or not self.free_for(vn, u):
                return 0
            c = _capacity(p0.req, vn)
            d = c - caps.get(vn.name, gi.cap.get(vn.name, 0))
            caps[vn.name] = c
            touched[vn.name] = vn
            return d

        try:
            # Victim units, cheapest first: (highest priority in the unit, pods in it),
            # then key; a unit counts if one of its pods is a seed.
            for c, vk, members in self._victim_order(prio):
                if not any(seed(m) for m in members):
                    continue
                unit_of[vk] = members
                cost[vk] = c
                chosen.append(vk)
                for m in unit_of[vk]:
                    vn = self.s.nodes.get(m.node or "")
                    if vn is not None and m.key in vn.pods:
                        self._untentative(m, vn)
                        removed.append(m)
                        slots += recount(vn)
                if slots >= need:
                    if by_slots:
                        break
                    self.trial_only = None if u.is_gang else touched
                    try:
                        placement = self.place(u)
                    finally:
                        self.trial_only = None
                    if placement is not None:
                        break
            if not unit_of or slots < need or (placement is None and not by_slots):
                self.preempt_slots = slots
                return False
            # Give back victims that turn out not to be needed (most expensive first);
            # bounded, since each try may be a whole placement.
            for vk in sorted(chosen, key=lambda k: (cost[k], k), reverse=True)[:32]:
                back = [m for m in unit_of[vk] if m in removed]
                for m in back:
                    self.s.nodes[m.node or ""].pods[m.key] = m
                    for i in range(NRES):
                        self.s.nodes[m.node or ""].used[i] += m.req[i]
                if by_slots:
                    saved = dict(caps)
                    after = slots + sum(recount(self.s.nodes[m.node or ""]) for m in back)
                    ok = after >= need
                    if ok:
                        slots = after
                    else:
                        caps = saved
                elif not u.is_gang:
                    # One pod on one node: it still fits there, or it does not.
                    assert placement is not None
                    target = placement[0][1]
                    ok = _fits(p0.req, target) and _anti_ok(p0, target)
                else:
                    trial = self.place(u)
                    ok = trial is not None
                    if ok:
                        placement = trial
                if ok:
                    chosen.remove(vk)
                    for m in back:
                        removed.remove(m)
                else:
                    for m in back:
                        self._untentative(m, self.s.nodes[m.node or ""])
            if by_slots:
                placement = self.place(u)
                if placement is None:  # cannot happen: the slots add up
                    return False
        finally:
            for m in removed:
                rn = self.s.nodes.get(m.node or "")
                if rn is not None and m.key not in rn.pods:
                    rn.pods[m.key] = m
                    for i in range(NRES):
                        rn.used[i] += m.req[i]
        who = u.label
        for vk in chosen:
            for m in unit_of[vk]:
                self.victims.add(m.key)
                what = f"gang {m.group.split('/', 1)[-1]}" if m.group and self.cfg.gangs else "pod"
                node = self.s.nodes.get(m.node or "")
                owner = node.labels.get(names.LABEL_TEAM) if node else None
                reason = f"preempted by {who} (priority {prio}); evicting whole {what}"
                if owner:
                    reason += f"; reclaiming team {owner}'s capacity"
                self.d.evictions.append(Eviction(m.key, u.key, reason))
        assert placement is not None
        for p, n in placement:
            p.nominated = n.name
            self.s.queue_pods[p.key] = p.group  # nominated now: its unit changes lane
            self.d.nominations[p.key] = n.name
            self._hold(n.name, (u.key, u.priority))
        self._held_sum.clear()
        self.d.unschedulable[u.key] = (
            f"{who} preempts {sum(len(unit_of[v]) for v in chosen)} lower-priority pods "
            f"({len(chosen)} units) and waits for them to leave"
        )
        return True

    # -- reasons
    def explain(self, u: Unit) -> str:
        p0 = u.pods[0]
        why: Counter[str] = Counter()
        fit_slots = 0
        for n in self.s.nodes.values():
            r = _static_ok(p0, n)
            if r is None:
                if not self.free_for(n, u):
                    r = f"held for {self.held[n.name][0]}"
                elif (short := _short(p0.req, n)) is not None:
                    r = f"lack {short}"
                    if _fits_after_terminating(p0.req, n):
                        r = "freeing (pods terminating)"
                elif not _anti_ok(p0, n):
                    r = "conflict by pod anti-affinity"
            if r is None:
                why["fit"] += 1
                fit_slots += _capacity(p0.req, n)
            else:
                why[r] += 1
        parts = []
        if u.is_gang:
            parts.append(f"{u.label} needs {len(u.pods)} pods at once")
            parts.append(f"{min(fit_slots, len(u.pods))} fit on {why.pop('fit', 0)} nodes")
        else:
            parts.append(f"{u.label} fits on no node of {len(self.s.nodes)}")
            why.pop("fit", None)
        for r, k in why.most_common():
            verb = (
                "carry an"
                if r.startswith("untolerated")
                else ("are" if r.startswith(("not", "cordoned", "held", "freeing")) else "")
            )
            if r.startswith("lack"):
                parts.append(f"{k} {r}")
            elif r.startswith("untolerated"):
                parts.append(f"{k} {verb} {r}")
            elif verb:
                parts.append(f"{k} {verb} {r}")
            else:
                parts.append(f"{k}: {r}")
        return "; ".join(parts)


def schedule(state: ClusterState, now: float, config: PolicyConfig | None = None) -> Decisions:
    """One scheduling pass. See the module docstring."""
    return _Pass(state, now, config or PolicyConfig()).run()
