"""Reservations: the first gang that does not fit estimates when it can start and,
when that is near, holds the nodes it will start on, so that nothing that would
delay it lands there.

The estimate. Each candidate node is free for the gang at the latest end of the work
on it that the gang may not evict (its own priority or higher): a pod ends at its
start plus its runtime (the shorter of spec.activeDeadlineSeconds and the
`gpuyard.io/expected-runtime` annotation, e.g. `2h`; a TrainingJob's
activeDeadlineSeconds reaches its workers as that annotation); a pod past its runtime
ends now; a pod that says nothing makes the node's time unknown. Nodes are taken in
the order they are free (then, for a gang that holds already, the nodes it held in
the last pass: a hold does not wander off nodes that are draining for it; then most
free GPUs, capacity, rack, name) until every member
has room once their occupants leave: the last one's time is the gang's estimated
start, as EASY backfill computes its shadow time. A gang that must fit inside one
topology domain takes its nodes from the domain where it can start first (where its
running members are, if some run).

The hold. A gang holds nodes (a soft hold, holds.Holds.soft) once its start is near
(within `PolicyConfig.hold_ahead`) or once it has waited `PolicyConfig.starve_after`
since its first pod was seen; from then on it holds in every pass until it runs (or
times out). Before that it holds nothing: every node stays open to everyone. On held
nodes may run: work of higher priority; work of lower priority (preemptible: when
the gang is ready, preemption evicts it, whole units at a time, in the same pass,
and the twin restarts it from its last checkpoint); work of the gang's priority that
is sure to end before the estimated start (its runtime is known and now + runtime
is not later). With an unknown start, only the first two. The estimate is made again
when the gang has not started by it (work ran past its runtime, or work of higher
priority came onto its nodes: a start left in the past would close the held nodes
to all backfill) and as soon as work of higher priority is bound on a node it holds. A gang whose pods are
nominated (it preempted and waits for its victims) holds strictly, as nominations do.

What bounds a large gang's wait. Work ahead of it in queue order (higher priority, or
older) goes first, as always. Let T0 be the later of: when it has waited
`starve_after` since it was first seen, and when every unit ahead of it has started.
If it is the first gang in queue order that does not fit (only that one reserves,
`max_reservations`) and no higher-priority work arrives, from T0 on it holds nodes in
every pass and nothing of its priority or lower that would still run at its start
lands on them; a hold moves only to nodes free no later. So it waits at most until
the work of its priority or higher running on the nodes it holds at T0 ends: with
every runtime at most R (known or not), it starts by T0 + R. (Work of unknown runtime
runs as long as it runs.) tests/scheduling/test_reservations.py checks the bound on
random streams, with and without known runtimes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gpuyard.scheduling.filters import capacity
from gpuyard.scheduling.indexes import alloc_caps
from gpuyard.scheduling.state import GPU, NodeInfo
from gpuyard.scheduling.topology import reserve_rows

if TYPE_CHECKING:
    from gpuyard.scheduling.policy import Pass
    from gpuyard.scheduling.queue import Unit

INF = math.inf


def free_at(n: NodeInfo, prio: int, now: float) -> float:
    """When the work on the node that a unit of `prio` may not evict has ended (inf:
    some of it does not say how long it runs)."""
    t = now
    for q in n.pods.values():
        if q.priority < prio or q.terminating:
            continue
        r = q.runtime
        if r is None:
            return INF
        end = (now if q.started is None else q.started) + r
        if end > t:
            t = end
    return t


def estimate(ps: Pass, u: Unit) -> tuple[float, list[str]] | None:
    """The gang's estimated start and the nodes it would start on, or None when it
    could not fit even on an empty cluster (holding nodes would help no one)."""
    p0 = u.pods[0]
    ks = alloc_caps(ps, p0)
    holds = ps.holds
    taken = holds.held
    h = (u.key, u.priority)
    nodes = ps.s.nodes
    now = ps.now
    prio = u.priority
    got = ps.mem.committed.get(u.key)
    before = got[1] if got is not None else frozenset()
    rows = []
    total = 0
    for name, k in ks.items():
        n = nodes.get(name)
        if n is None or taken.get(name, h) != h:
            continue  # another unit's hold (a nomination) is not taken over
        c = capacity(p0, n)
        t = now if c >= k else free_at(n, prio, now)
        rows.append((t, name not in before, n.used[GPU] - n.alloc[GPU], -c, n.rack, name, k))
        total += k
    need = u.need
    if total < need:
        return None
    rows.sort()
    if u.topo:
        # the one required domain where it can start first
        rows = reserve_rows(ps, u, u.topo, rows, name_at=5, k_at=6)
        if not rows:
            return None
    held: list[str] = []
    start = now
    for t, _, _, _, _, name, k in rows:
        if need <= 0:
            break
        held.append(name)
        start = t
        need -= k
    return start, held


def reserve(ps: Pass, u: Unit) -> None:
    """Hold, for the gang, the nodes it will start on, if its start is near or it has
    waited long enough (see the module docstring); otherwise say, in `ps.look_again`,
    when that changes with nothing else changing."""
    got = estimate(ps, u)
    if got is None:
        return
    start, held = got
    cfg, now = ps.cfg, ps.now
    committed = ps.mem.committed
    if u.key not in committed:
        first = ps.s.group_first_seen.get(u.group or "", u.pods[0].created)
        if start - now > cfg.hold_ahead and now - first < cfg.starve_after:
            ps.look_again = min(start - cfg.hold_ahead, first + cfg.starve_after)
            return
    committed[u.key] = (committed[u.key][0] if u.key in committed else now, frozenset(held))
    h = (u.key, u.priority)
    holds = ps.holds
    nominated = h in holds.fp  # it holds nominated nodes: its hold stays strict
    for name in held:
        holds.hold(name, h)
    if not nominated:
        holds.set_soft(h, start)
    holds.sums.clear()
    if held:
        ps.d.reservations[u.key] = held
