"""Failure memos: when a unit that failed is sure to fail again, so a pass can skip it
(keeping its reason and putting its reservation back) instead of trying it afresh.

A memo (`Memo`) is made when a unit fails (`memo_of`) and checked on the next pass
(`still_fails`): the holds against the unit must be the same, and the room freed since
(read from the state's freed log) must not add up to the pods it lacked; a reserved
gang's memo ends at its estimated start, or when work of higher priority is bound on
its nodes (`Memory.stale`), so that its start is estimated again. Within one
pass, `FailedShapes` remembers the shapes that failed at a priority: room only shrinks
during a pass, so later units of that shape and no higher priority fail too."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gpuyard.scheduling.filters import capacity, capacity_below, capacity_empty
from gpuyard.scheduling.holds import Hold
from gpuyard.scheduling.indexes import candidate_names, gang_index

if TYPE_CHECKING:
    from gpuyard.scheduling.policy import Pass
    from gpuyard.scheduling.queue import Shape, Unit


@dataclass(eq=False)
class Memo:
    """Why a failed unit is sure to fail again while it holds (see `still_fails`).
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
    # the time from which it may fit without anything changing (a reservation that
    # holds nothing yet comes near; see reservations.py)
    expires: float = float("inf")
    # where the freed logs stood when it failed (see restore): epoch, positions
    repoch: int = -1
    rpos: dict[int, int] = field(default_factory=dict)


# What a failed unit leaves for its next pass: the memo, its reason, its reservation.
Failure = tuple[Memo, str, Hold | None]


@dataclass
class FailedShapes:
    """Shapes that failed in this pass: shape -> (priority, reason, unit)."""

    at: dict[Shape, int] = field(default_factory=dict)
    reason: dict[Shape, tuple[str, str]] = field(default_factory=dict)

    def failed(self, shape: Shape, prio: int, reason: str, unit_key: str) -> None:
        self.at[shape] = prio
        self.reason[shape] = (reason, unit_key)


def slots(ps: Pass, u: Unit) -> int:
    """Pods like the unit's first that fit now on the nodes free for it."""
    key, gi = gang_index(ps, u.pods[0])
    return gi.total - sum(hc.total for hc in ps.holds.excluding(u, key, gi))


def memo_of(ps: Pass, u: Unit) -> Memo:
    """What a unit that just failed needs to fail again, checked by `still_fails`."""
    s = ps.s
    if ps.topo_hit:
        # Inter-pod filters failed it: a pod bound anywhere may change that, and
        # nothing here follows bindings. A memo that never holds.
        return Memo("all", ps.holds.against(u), -1)
    p0 = u.pods[0]
    uniform = all(p.req == p0.req and p.class_key() == p0.class_key() for p in u.pods)
    never = not ps.cfg.preemption or any(
        p.preemption_never or p.priority_class in s.preempt_never for p in u.pods
    )
    if uniform and (never or ps.trial.complete):
        got = ps.trial.slots if not never else slots(ps, u)
        logs = s.freed_log
        pos = {q: len(log) for q, log in logs.items() if never or q >= u.priority}
        return Memo(
            "plain" if never else "hi",
            ps.holds.against(u),
            s.freed_epoch,
            pos,
            got,
            u.need,
            repoch=s.freed_epoch,
            rpos={q: len(log) for q, log in logs.items()},
        )
    return Memo(
        "all",
        ps.holds.against(u),
        s.freed_gen,
        repoch=s.freed_epoch,
        rpos={q: len(log) for q, log in s.freed_log.items()},
    )


def still_fails(ps: Pass, m: Memo, u: Unit) -> bool:
    """Whether a unit fails again for sure: the holds against it then still hold the
    same nodes (new ones only take room away), and the room
    freed since its failure (only room it could not already have preempted, after a
    complete preemption attempt) cannot make up the pods it lacked. Each check
    reads only the frees logged since the last one."""
    s = ps.s
    holds = ps.holds
    if ps.now >= m.expires:
        return False
    stale = ps.mem.stale
    if stale and u.key in stale:
        stale.discard(u.key)  # its reservation's start is estimated again
        return False
    for h, count, x in m.sig:  # holds added since only take room away
        fp = holds.fingerprint(h)
        if fp is None or fp[0] != count or fp[1] != x:
            return False
    if m.mode == "all":
        return bool(m.gen == s.freed_gen)
    if m.gen != s.freed_epoch:
        return False
    prio = u.priority
    hi = m.mode == "hi"
    held = holds.held
    was_held = {h for h, _, _ in m.sig}
    p0 = u.pods[0]
    cset: set[str] | None = None
    nodes = s.nodes
    for q, log in s.freed_log.items():
        if hi and q < prio:
            continue
        start = m.pos.get(q, 0)
        if start >= len(log):
            continue
        m.pos[q] = len(log)
        if cset is None:
            cset = candidate_names(ps, p0)
        for name in log[start:]:
            n = nodes.get(name)
            if n is None or name not in cset:
                continue
            h = held.get(name)
            if h is not None and h in was_held and not holds.free_for(n, u):
                continue  # held against it then and still (checked above)
            c = capacity_below(p0, n, prio) if hi else capacity(p0, n)
            before = m.counted.get(name, 0)
            if c > before:
                m.counted[name] = c
                m.extra += c - before
    return m.slots + m.extra < m.need


def _emptied_elsewhere(ps: Pass, u: Unit, m: Memo, hold: Hold) -> bool:
    """Whether, since the memo was made, a candidate node the reservation does not hold
    was freed and now has room for as many of the unit's pods as it holds empty
    (reading only the frees logged since the last look)."""
    s = ps.s
    if m.repoch != s.freed_epoch:
        return True
    p0 = u.pods[0]
    cset: set[str] | None = None
    for q, log in s.freed_log.items():
        start = m.rpos.get(q, 0)
        if start >= len(log):
            continue
        m.rpos[q] = len(log)
        for name in log[start:]:
            if name in hold.mapping:
                continue
            n = s.nodes.get(name)
            if n is None:
                continue
            if cset is None:
                cset = candidate_names(ps, p0)
            if name in cset and capacity(p0, n) >= capacity_empty(p0, n) > 0:
                return True
    return False


def restore(ps: Pass, u: Unit, m: Memo, hold: Hold | None) -> Hold | None:
    """Put back the reservation a unit held when it last failed (if reservations are
    still to be had in this pass); returns the reservation to keep. When room was freed
    since, the reservation is made afresh: a node that came free may start the gang
    sooner than one it held (the unit still fails: the memo said so)."""
    if hold is None or ps.reservations >= ps.cfg.max_reservations:
        return hold
    h = (u.key, u.priority)
    if _emptied_elsewhere(ps, u, m, hold):
        from gpuyard.scheduling.reservations import reserve

        s = ps.s
        m.repoch = s.freed_epoch
        m.rpos = {q: len(log) for q, log in s.freed_log.items()}
        ps.reservations += 1
        reserve(ps, u)
        held = ps.d.reservations.get(u.key)
        return Hold.of(h, held, ps.holds.soft.get(h)) if held else None
    ps.reservations += 1
    ps.holds.restore(h, hold)
    ps.d.reservations[u.key] = [n for n in hold.names if ps.holds.held.get(n) == h]
    return hold
