"""Preemption: when a unit does not fit, which lower-priority work it evicts.

Victims are whole units (a bound gang counts as one), taken cheapest first: lowest
priority first (so balloons go before borrowed low-priority work), then (with fair
sharing) units of teams over their fair share, then those that lose the least work,
then fewest pods, then key (`Victims`, an index kept across passes). Units are taken
until the whole preemptor fits, then those not needed are given back (most expensive
first).

Checkpoint-aware: a unit loses the work it did since the later of when it started
(status.startTime, or when the policy bound it; a gang's: its last member's) and the
checkpoint it resumes from (the annotation `gpuyard.io/last-checkpoint`, an RFC 3339
time, on its pod; a gang's: the oldest its members report), in GPU-seconds: the GPUs
it holds (a pod without GPUs counts as one) times that time. So a trainer that never
checkpoints loses all it did since it started, and is weighed against the others on
the same scale: within a priority, least work lost first. A unit that says neither
(no start time known, no checkpoint) goes after them, in the order above. A gang
of one kind of pod that no anti-affinity touches is decided by counting slots;
others by trial placements. Device claims take part: a victim's claims that no
pod left on its node holds give their devices back for the trial (and a preemptor
with claims is always decided by trial placements: slots do not count devices).
The victims become evictions, the nodes the preemptor will use nominations, which
later passes hold for it (holds.py)."""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from gpuyard import names
from gpuyard.kube import objects as o
from gpuyard.scheduling import dra
from gpuyard.scheduling.affinity import Topology, constrained
from gpuyard.scheduling.config import Eviction
from gpuyard.scheduling.filters import anti_ok, capacity, fits, put_back, untentative
from gpuyard.scheduling.indexes import candidate_names, gang_index
from gpuyard.scheduling.memos import slots as free_slots
from gpuyard.scheduling.placement import Placement, place
from gpuyard.scheduling.state import GPU, ClusterState, NodeInfo, PodInfo

if TYPE_CHECKING:
    from gpuyard.scheduling.policy import Pass
    from gpuyard.scheduling.queue import Unit

# (cost, key, members); cost: (priority, [1 if its team is within its fair share,]
# 0 if it says when it started or checkpointed else 1, GPU-seconds it loses, pods)
VictimUnit = tuple[tuple[Any, ...], str, list[PodInfo]]


class Victims:
    """The bound pods preemption may take, kept across passes and updated from
    state.bound_log: single pods in a key-ordered list per priority and team (so that
    fair sharing's order is a merge of lanes, never a walk past the pods of teams not
    over their share, such as a balloon on every node), and per bound gang its entry
    (highest priority in it, pods in it), key, members. Single pods that say when they
    started or checkpointed are kept apart, in lanes per priority, team and GPUs, the
    newest resume point (see resume_point) first (the order of what they lose, whatever
    the time); their cost is made at each
    `order(prio, now)`, as the gangs' is. `order` yields the units whose pods are all
    below prio by (cost, key). Made afresh when the state's teams change (set_teams
    sets every pod's team)."""

    def __init__(self, s: ClusterState, gangs: bool) -> None:
        self.gangs = gangs
        self.teams_gen = s.teams_gen
        # (priority, team) -> sorted "pod ns/name"
        self.singles: dict[tuple[int, str | None], list[str]] = {}
        # pod key -> (priority, group, team)
        self.where: dict[str, tuple[int, str | None, str | None]] = {}
        # single pods that say when they started or checkpointed: (priority, team,
        # GPUs) -> sorted (-resume point, "pod ns/name"), and each one's lane and entry
        self.saved: dict[tuple[int, str | None, int], list[tuple[float, str]]] = {}
        self.saved_at: dict[str, tuple[tuple[int, str | None, int], tuple[float, str]]] = {}
        self.gang: dict[str, tuple[tuple[int, int], str, list[PodInfo]]] = {}
        # per bound gang whose members say when they started or checkpointed: its
        # resume_point
        self.resume: dict[str, tuple[int, float, bool]] = {}
        self.dirty: set[str] = set()  # gangs whose entry is out of date
        s.log_bound = True  # from now on the state logs changes of bound pods
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
                at = self.saved_at.pop(f"pod {key}", None) if old[1] is None else None
                if at is not None:
                    kept = self.saved[at[0]]
                    del kept[bisect_left(kept, at[1])]
                    if not kept:
                        del self.saved[at[0]]
                elif old[1] is None:
                    lk = (old[0], old[2])
                    lane = self.singles[lk]
                    i = bisect_left(lane, f"pod {key}")
                    del lane[i]
                    if not lane:
                        del self.singles[lk]
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
                self.where[key] = (p.priority, p.group, p.team)
            else:
                point = resume_point([p])
                if point is not None:
                    lk3 = (p.priority, p.team, point[0])
                    entry = (-point[1], f"pod {key}")
                    insort(self.saved.setdefault(lk3, []), entry)
                    self.saved_at[entry[1]] = (lk3, entry)
                else:
                    insort(self.singles.setdefault((p.priority, p.team), []), f"pod {key}")
                self.where[key] = (p.priority, None, p.team)
        s.bound_log.clear()
        self.dirty.update(groups)  # their entries are made again when next asked for

    def _gangs(self, s: ClusterState) -> None:
        for g in self.dirty:
            # every bound member not terminating (preemption needs one of them bound)
            members = [m for m in s.members.get(g, {}).values() if m.node and not m.terminating]
            if members:
                top = max(m.priority for m in members)
                self.gang[g] = ((top, len(members)), f"gang {g}", members)
                point = resume_point(members)
                if point is not None:
                    self.resume[g] = point
                else:
                    self.resume.pop(g, None)
            else:
                self.gang.pop(g, None)
                self.resume.pop(g, None)
        self.dirty.clear()

    def order(self, s: ClusterState, prio: int, now: float = 0.0) -> Iterator[VictimUnit]:
        pods = s.pods
        if self.dirty:
            self._gangs(s)
        over = over_share(s)
        fair = bool(over)

        def cost(level: int, team: str | None, point: Any, n: int) -> tuple[Any, ...]:
            # (0, GPU-seconds lost) for a unit that says when it started or
            # checkpointed, else (1, 0)
            said = (0, point[0] * max(0.0, now - point[1])) if point else (1, 0.0)
            if fair:
                return (level, 0 if team in over else 1, *said, n)
            return (level, *said, n)

        def singles(level: int, team: str | None, lane: list[str]) -> Iterator[Any]:
            c = (level, 0 if team in over else 1, 1, 0.0, 1) if fair else (level, 1, 0.0, 1)
            for vk in lane:
                yield (c, vk, [pods[vk[4:]]])

        def saved(level: int, team: str | None, gpus: int, lane: list[Any]) -> Iterator[Any]:
            for neg, vk in lane:
                yield (cost(level, team, (gpus, -neg), 1), vk, [pods[vk[4:]]])

        # lanes of one priority (and team) merge by key: the order of one lane
        runs: list[Iterable[Any]] = [
            singles(level, team, lane)
            for (level, team), lane in self.singles.items()
            if level < prio
        ]
        runs.extend(
            saved(level, team, gpus, lane)
            for (level, team, gpus), lane in self.saved.items()
            if level < prio
        )
        resume = self.resume
        rest = [
            (cost(level, members[0].team, resume.get(key[5:]), n), key, members)
            for (level, n), key, members in self.gang.values()
            if level < prio
        ]
        runs.append(sorted(rest))  # keys differ: members are never compared
        return heapq.merge(*runs)


def resume_point(members: list[PodInfo]) -> tuple[int, float, bool] | None:
    """What a unit loses if evicted, as (the GPUs it holds, a pod without GPUs counting
    as one; the time its unsaved work began; whether that is a checkpoint): it loses
    GPUs x (now - that time) GPU-seconds. The time is the later of when the unit
    started (its last member's start: a gang runs once all are bound) and the
    checkpoint it resumes from (the oldest its members report). None when no member
    says either."""
    said = [m.checkpoint for m in members if m.checkpoint is not None]
    starts = [m.started for m in members if m.started is not None]
    if not said and not starts:
        return None
    gpus = sum(max(m.req[GPU], 1) for m in members)
    start = max(starts) if starts else None
    ck = min(said) if said else None
    if ck is not None and (start is None or ck >= start):
        return gpus, ck, True
    assert start is not None
    return gpus, start, False


def _work(point: tuple[int, float, bool], now: float) -> str:
    """What a unit loses, in words: '2.5 GPU-h since its checkpoint at <time>' (or
    'since it started at <time>')."""
    lost = point[0] * max(0.0, now - point[1])
    amount = f"{lost / 60:.0f} GPU-min" if lost < 3600 else f"{lost / 3600:.1f} GPU-h"
    when = datetime.fromtimestamp(point[1], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{amount} since {'its checkpoint' if point[2] else 'it started'} at {when}"


def over_share(s: ClusterState) -> set[str]:
    """Teams whose share of the GPUs teams use outside their own nodes is above their
    fair share (weight over the sum of weights)."""
    if not s.team_weights:
        return set()
    used = sum(v for v in s.team_outside.values() if v > 0)
    if not used:
        return set()
    total = sum(s.team_weights.values())
    return {t for t, v in s.team_outside.items() if v / used > s.team_weights.get(t, 0.0) / total}


@dataclass
class Trial:
    """Preemption's part of one pass."""

    on: bool = False  # inside a trial: the buckets do not follow trial moves
    only: dict[str, NodeInfo] | None = None  # best fit looks only here (see placement)
    taken: set[str] = field(default_factory=set)  # pods already chosen as victims
    complete: bool = False  # the last attempt looked at every victim
    slots: int = 0  # ...and the slots it found with all of them gone


def victim_order(ps: Pass, prio: int) -> Iterator[VictimUnit]:
    """Every unit of bound pods all below `prio`, cheapest first: (cost, key,
    members), from the victim index kept across passes."""
    vi = ps.mem.victims
    if vi is None or vi.gangs != ps.cfg.gangs or vi.teams_gen != ps.s.teams_gen:
        vi = ps.mem.victims = Victims(ps.s, ps.cfg.gangs)
    else:
        vi.sync(ps.s)
    return vi.order(ps.s, prio, ps.now)


def preempt(ps: Pass, u: Unit) -> bool:
    """Evict the cheapest set of lower-priority victims the whole unit then fits with;
    False when there is none."""
    ps.trial.on = True
    try:
        return _preempt(ps, u)
    finally:
        ps.trial.on = False


def _preempt(ps: Pass, u: Unit) -> bool:
    s = ps.s
    trial = ps.trial
    if any(p.preemption_never or p.priority_class in s.preempt_never for p in u.pods):
        return False
    # Past here every possible victim is looked at (unless some were taken by an
    # earlier preemptor in this pass): a failure then stands until room is freed
    # that was not preemptable (see memos.memo_of).
    trial.complete = not trial.taken
    prio = u.priority
    p0 = u.pods[0]
    cset = candidate_names(ps, p0)
    nodes = s.nodes
    victims = trial.taken
    free_for = ps.holds.free_for
    # Slots for its pods on the nodes free for it, from the gang index (less what
    # other holders hold), then kept current as victims come off nodes.
    _, gi = gang_index(ps, p0)
    slots = free_slots(ps, u)
    cost: dict[str, tuple[Any, ...]] = {}
    unit_of: dict[str, list[PodInfo]] = {}

    def seed(m: PodInfo) -> bool:
        """A pod through which its unit can be a victim of this preemptor."""
        if m.terminating or m.key in victims:
            return False
        n = nodes.get(m.node or "")
        return n is not None and n.name in cset and n.pods.get(m.key) is m and free_for(n, u)

    # Device claims: a claim every pod holding it is taken off for (its own pod's,
    # or one shared by victims only) gives its devices back for the trial, and takes
    # them again when one of them is put back.
    dv = s.dra
    off: set[str] = set()  # pods taken off their nodes for the trial

    def take_off(m: PodInfo, vn: NodeInfo) -> None:
        untentative(m, vn)
        off.add(m.key)
        for key in m.claims:
            held = any(
                q != m.key and q not in off and (qp := s.pods.get(q)) is not None and qp.node
                for q in s.claim_pods.get(key, ())
            )
            if not held:
                _sync(dv.trial_release(key))

    def put_on(m: PodInfo, rn: NodeInfo) -> None:
        put_back(m, rn)
        off.discard(m.key)
        for key in m.claims:
            _sync(dv.trial_restore(key))

    def _sync(node: str | None) -> None:
        if node is not None and node in nodes:
            dra.sync_node(dv, nodes[node])

    # Take victim units, cheapest first, until the whole preemptor fits.
    chosen: list[str] = []
    removed: list[PodInfo] = []
    placement: Placement | None = None
    caps: dict[str, int] = {}
    touched: dict[str, NodeInfo] = {}  # candidate nodes free for it victims came off
    need = u.need  # the pods beyond a gang's minMember evict no one
    # A gang of one kind of pod that no pod anti-affinity touches fits exactly
    # when the slots add up (its fill is greedy by capacity): then slots decide,
    # and the placement is made once, at the end.
    by_slots = (
        u.is_gang
        and not u.topo  # slots anywhere are not slots inside one domain
        and not any(p.claims for p in u.pods)  # devices are not counted in slots
        and all(p.req == p0.req and p.class_key() == p0.class_key() for p in u.pods)
        and not any(p.anti_affinity for p in u.pods)
        and not any(constrained(s, p) for p in u.pods)
        and not any(
            o.requirements_match(o.label_selector_requirements(sel), p.labels)
            for _, sel in s.anti_bound.values()
            for p in u.pods
        )
    )

    def recount(vn: NodeInfo) -> int:
        if vn.name not in cset or not free_for(vn, u):
            return 0
        c = capacity(p0, vn)
        d = c - caps.get(vn.name, gi.cap.get(vn.name, 0))
        caps[vn.name] = c
        touched[vn.name] = vn
        return d

    try:
        # Victim units, cheapest first: (highest priority in the unit, pods in it),
        # then key; a unit counts if one of its pods is a seed.
        for c, vk, members in victim_order(ps, prio):
            if not any(seed(m) for m in members):
                continue
            unit_of[vk] = members
            cost[vk] = c
            chosen.append(vk)
            for m in unit_of[vk]:
                vn = nodes.get(m.node or "")
                if vn is not None and m.key in vn.pods:
                    take_off(m, vn)
                    removed.append(m)
                    slots += recount(vn)
            if slots >= need:
                if by_slots:
                    break
                trial.only = None if u.is_gang else touched
                try:
                    placement = place(ps, u)
                finally:
                    trial.only = None
                if placement is not None:
                    break
        if not unit_of or slots < need or (placement is None and not by_slots):
            trial.slots = slots
            return False
        # Give back victims that turn out not to be needed (most expensive first);
        # bounded, since each try may be a whole placement.
        for vk in sorted(chosen, key=lambda k: (cost[k], k), reverse=True)[:32]:
            back = [m for m in unit_of[vk] if m in removed]
            for m in back:
                put_on(m, nodes[m.node or ""])
            if by_slots:
                saved = dict(caps)
                after = slots + sum(recount(nodes[m.node or ""]) for m in back)
                ok = after >= need
                if ok:
                    slots = after
                else:
                    caps = saved
            elif not u.is_gang:
                # One pod on one node: it still fits there, or it does not.
                assert placement is not None
                target = placement[0][1]
                ok = (
                    fits(p0, target)
                    and anti_ok(p0, target)
                    and (not constrained(s, p0) or Topology(s).why_not(p0, target) is None)
                )
            else:
                again = place(ps, u)
                ok = again is not None
                if ok:
                    placement = again
            if ok:
                chosen.remove(vk)
                for m in back:
                    removed.remove(m)
            else:
                for m in back:
                    take_off(m, nodes[m.node or ""])
        if by_slots:
            placement = place(ps, u)
            if placement is None:  # cannot happen: the slots add up
                return False
    finally:
        for m in removed:
            rn = nodes.get(m.node or "")
            if rn is not None and m.key not in rn.pods:
                put_on(m, rn)
    _decide(ps, u, chosen, unit_of, placement)
    return True


def _decide(
    ps: Pass,
    u: Unit,
    chosen: list[str],
    unit_of: dict[str, list[PodInfo]],
    placement: Placement | None,
) -> None:
    """The victims chosen become evictions, the preemptor's placement nominations."""
    s, d = ps.s, ps.d
    who = u.label
    prio = u.priority
    for vk in chosen:
        point = resume_point(unit_of[vk])
        for m in unit_of[vk]:
            ps.trial.taken.add(m.key)
            what = f"gang {m.group.split('/', 1)[-1]}" if m.group and ps.cfg.gangs else "pod"
            node = s.nodes.get(m.node or "")
            owner = node.labels.get(names.LABEL_TEAM) if node else None
            reason = f"preempted by {who} (priority {prio}); evicting whole {what}"
            if owner:
                reason += f"; reclaiming team {owner}'s capacity"
            if point is not None:
                reason += f"; it loses {_work(point, ps.now)}"
            d.evictions.append(Eviction(m.key, u.key, reason))
    assert placement is not None
    for p, n in placement:
        p.nominated = n.name
        s.queue_pods[p.key] = p.group  # nominated now: its unit changes lane
        d.nominations[p.key] = n.name
        ps.holds.hold(n.name, (u.key, u.priority))
    ps.holds.sums.clear()
    d.unschedulable[u.key] = (
        f"{who} preempts {sum(len(unit_of[v]) for v in chosen)} lower-priority pods "
        f"({len(chosen)} units) and waits for them to leave"
    )
