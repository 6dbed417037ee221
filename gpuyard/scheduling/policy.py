"""The scheduling policy's pass driver: from a `ClusterState` to `Decisions`. Pure: no
I/O, no clock.

    memory = Memory()                      # kept beside the state, across passes
    decisions = schedule(state, now, PolicyConfig(), memory)

A pass, as it reads below (`Pass.run`):

1. The memory follows what changed in the state (node indexes, the queue, the victim
   index); units that left the queue forget their failure memos.
2. Nominated pods hold their nodes against lower-ranked work.
3. The queue's lanes are merged by their heads: higher priority first, then older.
   A unit of the loose lane is taken on its own (`_step`); the head of a lane of one
   shape and priority decides for the lane (`_lane_step`): when it fails, every unit
   behind it fails alike and gets the same reason under its own name.
4. A unit whose failure memo says it fails again keeps its reason and reservation;
   one of a shape that already failed in this pass fails too; others are attempted
   (`_attempt`): placed and bound; or they preempt; or they get a reason, and the
   first gangs that fail reserve nodes.

`schedule` records the bindings it returns in the state (as if they succeeded); the
driver calls `state.unbind(key)` for a binding the API refused. Evictions are not
applied: the victims leave the state when the driver sees them deleted.

`PolicyConfig(gangs=False)` is plain FIFO (gang labels ignored, pods bound one by one);
`PolicyConfig(reservations=False)` is gangs without reservations. The digital twin
runs those through this same code for its comparisons.
"""

from __future__ import annotations

import heapq
import math
import weakref
from typing import Any

from gpuyard.scheduling import dra
from gpuyard.scheduling.config import Decisions, Eviction, PolicyConfig, Sink, deliver
from gpuyard.scheduling.holds import Hold, Holds
from gpuyard.scheduling.memory import Memory
from gpuyard.scheduling.memos import FailedShapes, Failure, memo_of, restore, still_fails
from gpuyard.scheduling.placement import place
from gpuyard.scheduling.preemption import Trial, preempt
from gpuyard.scheduling.queue import LOOSE, Entry, LaneId, Queue, Shape, Unit, shape_of
from gpuyard.scheduling.reasons import explain, relabel
from gpuyard.scheduling.reservations import reserve
from gpuyard.scheduling.state import NRES, RESOURCES, ClusterState

__all__ = [
    "ClusterState",
    "Decisions",
    "Eviction",
    "Memory",
    "PolicyConfig",
    "Sink",
    "deliver",
    "schedule",
]


class Pass:
    """One scheduling pass over the queue."""

    def __init__(self, state: ClusterState, now: float, cfg: PolicyConfig, mem: Memory) -> None:
        self.s = state
        self.now = now
        self.cfg = cfg
        self.mem = mem  # what the policy keeps across passes
        self.d = Decisions()  # what this pass decides
        self.holds = Holds()  # nodes held for units (reservations, nominations)
        self.holds.now = now
        self.trial = Trial()  # preemption's part of the pass
        self.failed = FailedShapes()  # shapes that failed in this pass
        self.reservations = 0  # reservations made (or restored) in this pass
        # the unit being attempted took the slower path (affinity.Topology): where it
        # fits can grow as others bind, so its failure says nothing of its shape
        self.topo_hit = False
        # when the last reservation attempt that held nothing would hold (reservations.py)
        self.look_again = math.inf

    def run(self) -> Decisions:
        s, mem = self.s, self.mem
        # 1. follow the state
        mem.follow(s)
        q = mem.queue
        if q is None or q.gangs != self.cfg.gangs or q.teams_gen != s.teams_gen:
            q = mem.queue = Queue(s, self.cfg.gangs)
            mem.blocked.clear()
            mem.lane_blocked.clear()
            mem.committed.clear()
            mem.stale.clear()
        else:
            for key in q.sync(s):
                mem.blocked.pop(key, None)
                mem.committed.pop(key, None)
                mem.stale.discard(key)
        if mem.victims is not None and s.bound_log:
            mem.victims.sync(s)  # keeps the log short even when nothing preempts
        for lid in [k for k in mem.lane_blocked if k not in q.lanes]:
            del mem.lane_blocked[lid]
        # 2. nominated pods hold their nodes (they are all in the loose lane: a
        # nominated pod has no shape)
        for e in q.lanes.get(LOOSE, ()):
            u = q.units[e[2]]
            for p in u.pods:
                if p.nominated and p.nominated in s.nodes and p.nominated not in self.holds.held:
                    self.holds.hold(p.nominated, (u.key, p.priority))
        # 3. the lanes, merged by their heads: higher priority first, then (with fair
        # sharing) the team with the fewest GPUs outside its own nodes for its weight,
        # then older. A team's share only grows in a pass: a head whose share grew
        # since it was queued is queued again with its share now.
        units = q.units
        fair = s.team_weights
        outside = s.team_outside

        def share(e: Entry) -> float:
            team = units[e[2]].pods[0].team
            return outside.get(team, 0) / fair[team] if team is not None else 0.0

        def order_key(e: Entry) -> tuple[Any, ...]:
            return (e[0], share(e) if fair else 0.0, e[1], e[2])

        heap = [(order_key(lane[0]), i, lid) for i, (lid, lane) in enumerate(q.lanes.items())]
        heapq.heapify(heap)
        cursor: dict[Any, int] = {}
        while heap:
            head, i, lid = heapq.heappop(heap)
            lane = q.lanes[lid]
            c = cursor.get(lid, 0)
            if fair:
                now_key = order_key(lane[c])
                if now_key > head:
                    heapq.heappush(heap, (now_key, i, lid))
                    continue
            u = units[head[3]]
            if lid == LOOSE:
                self._step(u)
                go_on = True
            else:
                go_on = self._lane_step(u, lid, lane, c)
            if go_on and c + 1 < len(lane):
                cursor[lid] = c + 1
                heapq.heappush(heap, (order_key(lane[c + 1]), i, lid))
        return self.d

    def _step(self, u: Unit) -> None:
        """One unit of the loose lane, on its own."""
        if u.group is not None and not self.gang_ready(u):
            return
        blocked = self.mem.blocked
        last = blocked.get(u.key)
        if last is not None and still_fails(self, last[0], u):
            # Nothing it could use was freed since it last failed: keep reason and hold.
            self.d.unschedulable[u.key] = last[1]
            kept = restore(self, u, last[0], last[2])
            if kept is not last[2]:
                blocked[u.key] = (last[0], last[1], kept)
            return
        shape = shape_of(u)
        failed_at = self.failed.at.get(shape) if shape is not None else None
        if (
            shape is not None
            and failed_at is not None
            and failed_at >= u.priority
            and not self._opens(u, failed_at)
        ):
            # A unit of the same shape and no lower priority failed earlier in this
            # pass; room has only shrunk since, so this one cannot fit either.
            self.d.unschedulable[u.key] = relabel(*self.failed.reason[shape], u.key)
            return
        failure = self._attempt(u, shape)
        if failure is None:
            blocked.pop(u.key, None)
        else:
            blocked[u.key] = failure

    def _lane_step(self, u: Unit, lid: LaneId, lane: list[Entry], c: int) -> bool:
        """The head of a lane of one shape and priority. False: the rest of the lane
        fails with it (given reasons in one run)."""
        shape, prio = lid
        lane_blocked = self.mem.lane_blocked
        failed = self.failed
        memo = lane_blocked.get(lid)
        if memo is not None and memo[3] == u.key and still_fails(self, memo[0], u):
            reason = memo[1]
            self.d.unschedulable[u.key] = reason
            kept = restore(self, u, memo[0], memo[2])
            if kept is not memo[2]:
                lane_blocked[lid] = (memo[0], memo[1], kept, memo[3])
        elif (
            (failed_at := failed.at.get(shape)) is not None
            and failed_at >= prio
            and not self._opens(u, failed_at)
        ):
            reason = relabel(*failed.reason[shape], u.key)
            self.d.unschedulable[u.key] = reason
        else:
            m = self._attempt(u, shape)
            if m is None:
                lane_blocked.pop(lid, None)
                return True
            if self.topo_hit:
                # Failed on inter-pod filters: the units behind it (other labels,
                # say) are tried on their own.
                lane_blocked.pop(lid, None)
                return True
            lane_blocked[lid] = (*m, u.key)
            reason = m[1]
        if failed.at.get(shape, prio - 1) < prio:
            failed.failed(shape, prio, reason, u.key)
        rest = lane[c + 1 :]
        if self.holds.soft and rest:
            rest = self._backfill(u, rest, reason)
        self.d.unschedulable.add_run(rest, reason, u.key)
        return False

    def _opens(self, u: Unit, failed_at: int) -> bool:
        """Whether a reservation's nodes are open to the unit but were closed to a unit
        of its shape that failed at priority `failed_at` (then room is not only
        smaller for it, and it must be tried)."""
        r = u.runtime
        for (_, hp), start in self.holds.soft.items():
            if hp == failed_at and (u.priority < hp or (r is not None and self.now + r <= start)):
                return True
        return False

    def _backfill(self, head: Unit, rest: list[Entry], reason: str) -> list[Entry]:
        """Behind a lane's failed head: the units sure to end before a reservation's
        start that the head was not sure to (EASY backfill) are placed if they fit
        (without preempting); returns the entries left to fail with the head."""
        now, holds = self.now, self.holds
        latest = max(
            (
                start
                for h, start in holds.soft.items()
                if h[1] == head.priority and holds.blocks(h, head)
            ),
            default=-math.inf,
        )
        if latest == -math.inf:
            return rest
        left: list[Entry] = []
        units = self.mem.queue.units  # type: ignore[union-attr]
        for i, e in enumerate(rest):
            if i >= self.cfg.backfill_scan:
                left.extend(rest[i:])
                break
            v = units[e[2]]
            if v.runtime is None or now + v.runtime > latest:
                left.append(e)
                continue
            placed = place(self, v)
            if placed is None:
                left.append(e)
            else:
                self._bind(v, placed)
        return left

    def _bind(self, u: Unit, placed: list[Any]) -> None:
        if any(p.claims for p, _ in placed) and not self._allocate(u, placed):
            return
        committed = self.mem.committed
        for p, n in placed:
            self.s.bind(p.key, n.name)
            p.started = self.now
            self.d.bindings.append((p.key, n.name))
            self.mem.moved(n)
            if n.name in self.holds.held:
                self.holds.sums.clear()  # a held node's capacity changed
            if committed:
                self._outdate(u, n.name)
        self.holds.release(u.key)
        self.mem.blocked.pop(u.key, None)

    def _outdate(self, u: Unit, node: str) -> None:
        """A unit of higher priority than a committed gang was bound on a node that
        gang holds (as it may: reservations.py): the gang's estimated start, made from
        the work on its nodes, is out of date and is made again when it is next
        tried (memos.still_fails)."""
        units = self.mem.queue.units  # type: ignore[union-attr]
        for key, (_, held) in self.mem.committed.items():
            if node in held and key not in self.mem.stale:
                g = units.get(key)
                if g is not None and u.priority > g.priority:
                    self.mem.stale.add(key)

    def _allocate(self, u: Unit, placed: list[Any]) -> bool:
        """Allocate the device claims of every pod placed, all or none (dra.commit)."""
        dv = self.s.dra
        done: list[tuple[Any, Any, int, list[tuple[str, Any, Any]]]] = []
        for p, n in placed:
            if not p.claims:
                continue
            before = [
                (k, dv.claims[k].node, dv.claims[k].results) for k in p.claims if k in dv.claims
            ]
            demand = p.dra_demand
            got = dra.commit(p, n)
            if got is None:
                # cannot happen after a placement that held the devices; undo the rest
                for q, m, dem, prev in reversed(done):
                    for k, node, results in prev:
                        dv.forget(k, (node, results))
                    dra.sync_node(dv, m)
                    q.req[2] += dem
                    q.dra_demand = dem
                self.d.unschedulable[u.key] = f"{u.label}: {dra.CANNOT_ALLOCATE}"
                return False
            done.append((p, n, demand, before))
            for key, results in got:
                # (request, driver, pool, device): a device's id is the last three
                self.d.allocations[key] = (n.name, [(r, *d.id) for r, d in results])
            for key in p.claims:
                self.d.consumers.setdefault(key, []).append(p.key)
        return True

    def _attempt(self, u: Unit, shape: Shape | None) -> Failure | None:
        """Place the unit, or preempt for it, or give its reason (and maybe reserve).
        Returns the failure to remember, None when it was placed or preempts."""
        self.topo_hit = False
        placed = place(self, u)
        if placed is not None:
            self._bind(u, placed)
            return None
        self.trial.complete = False
        if self.cfg.preemption and preempt(self, u):
            return None
        memo = memo_of(self, u)
        reason = self.d.unschedulable[u.key] = (
            explain(self, u) if self.cfg.explain else "does not fit"
        )
        if shape is not None and not self.topo_hit:
            self.failed.failed(shape, u.priority, reason, u.key)
        if u.is_gang and self.cfg.reservations and self.reservations < self.cfg.max_reservations:
            self.reservations += 1
            self.look_again = math.inf
            reserve(self, u)
            memo.expires = self.look_again
            start = self.holds.soft.get((u.key, u.priority))
            if start is not None and self.now < start < memo.expires:
                # At its estimated start it is tried afresh: if it still does not
                # fit, the estimate was wrong (work ran longer, or higher-priority
                # work came), and a start in the past would close its nodes to
                # every backfill.
                memo.expires = start
        held = self.d.reservations.get(u.key)
        h = (u.key, u.priority)
        return memo, reason, Hold.of(h, held, self.holds.soft.get(h)) if held else None

    def gang_ready(self, u: Unit) -> bool:
        """Whether a gang may be tried now: its PodGroup exists, minMember pods exist,
        it is not backing off after a timeout (nor timing out now), and minResources
        are free in the cluster. Otherwise it is given the reason."""
        assert u.group is not None
        s = self.s
        g = s.groups.get(u.group)
        name = u.group.split("/", 1)[-1]
        if g is None:
            self.d.unschedulable[u.key] = f"gang {name}: PodGroup {u.group} not found"
            return False
        if g.wait:
            self.d.unschedulable[u.key] = f"gang {name}: {g.wait}"
            return False
        have = len(u.pods) + u.bound
        if have < g.min_member:
            self.d.unschedulable[u.key] = (
                f"gang {name} waits for members: {have} of minMember {g.min_member} exist"
            )
            return False
        until = s.backoff_until.get(u.group)
        if until is not None and self.now < until:
            self.d.unschedulable[u.key] = (
                f"gang {name} timed out after {g.timeout:g}s and backs off for "
                f"{until - self.now:.0f}s more"
            )
            return False
        first = s.group_first_seen.get(u.group)
        if first is None:
            first = g.created
        if g.timeout and u.bound == 0 and self.now - first > g.timeout:
            # Past its timeout: drop any hold, back off, and start the clock again.
            s.backoff_until[u.group] = self.now + self.cfg.timeout_backoff
            s.group_first_seen[u.group] = self.now + self.cfg.timeout_backoff
            self.d.timed_out.append(u.group)
            self.holds.release(u.key)
            self.mem.committed.pop(u.key, None)
            self.d.unschedulable[u.key] = (
                f"gang {name} did not fit within scheduleTimeoutSeconds={g.timeout:g}; backing off"
            )
            return False
        if g.min_resources is not None:
            free = [0] * NRES
            for n in s.nodes.values():
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


# The memory of states whose callers keep none of their own (scripts, tests): one per
# state, for as long as the state lives.
_memories: weakref.WeakKeyDictionary[ClusterState, Memory] = weakref.WeakKeyDictionary()


def memory_of(state: ClusterState) -> Memory:
    mem = _memories.get(state)
    if mem is None:
        mem = _memories[state] = Memory()
    return mem


def schedule(
    state: ClusterState,
    now: float,
    config: PolicyConfig | None = None,
    memory: Memory | None = None,
) -> Decisions:
    """One scheduling pass. See the module docstring. `memory` is what the policy kept
    from earlier passes over this state (without it, the state's own, kept here)."""
    mem = memory if memory is not None else memory_of(state)
    return Pass(state, now, config or PolicyConfig(), mem).run()
