"""Topology: where a gang may go in the cluster's network, one model for every dialect.

Levels are node label keys, broadest first, kept in the snapshot
(`ClusterState.topology_levels`; by default zone, block, rack, NVLink clique, host).
A domain of a level is the nodes that agree on that level's label and on every
broader level's (a rack named alike in two zones is two racks); a node without the
level's label is in no domain of it. A key that is not one of the levels makes
domains of its own label alone.

A `Request` says what a gang needs, whichever API said it (gpuyard.scheduling.dialects
reads the upstream PodGroup's `schedulingConstraints`, Kueue's, KAI's and Volcano's
into it):

- required: level keys; every pod of the gang goes inside one domain of each, or the
  gang waits (`why`: the reason names the level and its largest free domain). A gang
  with members running stays in their domain: its replacements go there or wait;
- preferred: a level key; the gang spans as few domains of it as it can (one that
  holds it whole, the smallest such, else the largest first);
- slice (key, size): each run of `size` pods, in the pods' index order, inside one
  domain of that key (the last run may be shorter).

Placement (`place`) picks the required domain that fits the gang most tightly, then
arranges its nodes for the preferred level and slices, and fills them as any gang is
filled (placement.fill). Gangs without a request are packed softly as before
(placement._gang_order): fewest zones and racks.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpuyard import names

if TYPE_CHECKING:
    from gpuyard.scheduling.affinity import Topology
    from gpuyard.scheduling.policy import Pass
    from gpuyard.scheduling.queue import Unit
    from gpuyard.scheduling.state import NodeInfo, PodInfo

DEFAULT_LEVELS: tuple[str, ...] = (
    names.LABEL_ZONE,
    names.LABEL_BLOCK,
    names.LABEL_RACK,
    names.LABEL_CLIQUE,
    names.LABEL_HOSTNAME,
)

# NVIDIA Topograph's node labels, broadest first: a cluster labelled by it runs the
# scheduler with these levels (`gpuyard scheduler --topology-levels`); as keys outside
# the levels they work as they are, each label's values being its domains
TOPOGRAPH_LEVELS: tuple[str, ...] = (
    "network.topology.nvidia.com/datacenter",
    "network.topology.nvidia.com/spine",
    "network.topology.nvidia.com/block",
    "network.topology.nvidia.com/accelerator",
    names.LABEL_HOSTNAME,
)

# pod labels that give a pod's index in its gang (slices are runs in index order)
INDEX_LABELS = (
    "batch.kubernetes.io/job-completion-index",
    "gpuyard.io/replica-index",
    "training.kubeflow.org/replica-index",
    "leaderworkerset.sigs.k8s.io/worker-index",
)

Domain = tuple[str, ...]

_LABEL_KEY = re.compile(
    r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
)


def is_label_key(key: str) -> bool:
    """Whether `key` is a label key ([prefix/]name) a level or a request can name."""
    prefix, _, name = key.rpartition("/")
    return len(prefix) <= 253 and len(name) <= 63 and bool(_LABEL_KEY.fullmatch(key))


Placement = list[tuple["PodInfo", "NodeInfo"]]


@dataclass(frozen=True)
class Request:
    """What a gang needs of the topology (see the module docstring). `error` says why
    what was asked cannot be read; such a gang waits with it as its reason."""

    required: tuple[str, ...] = ()
    preferred: str | None = None
    slice_key: str | None = None
    slice_size: int = 0
    error: str | None = None

    def __bool__(self) -> bool:
        return bool(self.required or self.preferred or self.slice_key or self.error)

    def merged(self, other: Request | None) -> Request:
        """This request with what `other` adds (another dialect on the same gang)."""
        if not other:
            return self
        return Request(
            tuple(dict.fromkeys((*self.required, *other.required))),
            self.preferred or other.preferred,
            self.slice_key or other.slice_key,
            self.slice_size or other.slice_size,
            self.error or other.error,
        )


def domain_of(levels: tuple[str, ...], key: str, labels: Mapping[str, str]) -> Domain | None:
    """The node's domain of level `key` (None: it carries no such label)."""
    v = labels.get(key)
    if not v:
        return None
    try:
        i = levels.index(key)
    except ValueError:
        return (v,)
    return tuple(labels.get(k, "") for k in levels[:i]) + (v,)


def domain_of_all(
    levels: tuple[str, ...], keys: tuple[str, ...], labels: Mapping[str, str]
) -> Domain | None:
    """The node's domain of every key in `keys` together (None: it lacks one)."""
    parts: list[str] = []
    for k in keys:
        d = domain_of(levels, k, labels)
        if d is None:
            return None
        parts.extend(d)
    return tuple(parts)


def domains(ps: Pass, keys: tuple[str, ...]) -> dict[str, Domain]:
    """node -> its domain of every key in `keys` together (nodes in none left out),
    made once while the nodes stay as they are (kept in the policy's memory)."""
    cache = ps.mem.domains
    got = cache.get(keys)
    if got is None:
        levels = ps.s.topology_levels
        got = {}
        for n in ps.s.nodes.values():
            d = domain_of_all(levels, keys, n.labels)
            if d is not None:
                got[n.name] = d
        cache[keys] = got
    return got


def name_of(d: Domain) -> str:
    return d[-1] if d else ""


def pod_order(pods: list[PodInfo]) -> list[PodInfo]:
    """The gang's pods in index order (index labels, then creation)."""

    def key(p: PodInfo) -> tuple[int, int]:
        for label in INDEX_LABELS:
            v = p.labels.get(label)
            if v is not None and v.isdigit():
                return int(v), p.seq
        return 1 << 30, p.seq

    return sorted(pods, key=key)


# ------------------------------------------------------------------ placement


def _room(ps: Pass, p0: PodInfo, uniform: bool) -> Any:
    """node -> how many more pods like `p0` it takes now: from the gang index (kept
    current across passes) for a gang of one kind outside a preemption trial, else
    counted on the node."""
    from gpuyard.scheduling.filters import capacity

    if uniform and not ps.trial.on:
        from gpuyard.scheduling.indexes import gang_index

        cap = gang_index(ps, p0)[1].cap
        return lambda n: cap.get(n.name, 0)
    return lambda n: capacity(p0, n)


def place(
    ps: Pass,
    u: Unit,
    req: Request,
    nodes: list[NodeInfo],
    arrange: Any,
    fill: Any,
    topo: Topology | None,
) -> Placement | None:
    """The gang's pods on `nodes` (its candidates free for it, in its usual fill order
    by `arrange(nodes)`) as the request says, or None; the state is left unchanged.
    `fill(order, pods, placed, topo)` puts pods on nodes tentatively (placement.fill)."""
    if req.error:
        return None
    pods = pod_order(u.pods)
    p0 = pods[0]
    uniform = all(p.req == p0.req and p.class_key() == p0.class_key() for p in pods)
    room = _room(ps, p0, uniform)
    if req.required:
        doms = domains(ps, req.required)
        groups: defaultdict[Domain, list[NodeInfo]] = defaultdict(list)
        for n in nodes:
            d = doms.get(n.name)
            if d is not None:
                groups[d].append(n)
        home = _home(ps, u, doms)
        if home is not None:
            # Members run: the rest goes where they are, or waits.
            tries = [home] if home in groups else []
        else:
            cap = {d: sum(map(room, ns)) for d, ns in groups.items()}
            need = u.need
            # Most tightly fitting domain first (whole domains stay free for larger
            # gangs); with pods of several kinds the count is only a guide.
            tries = sorted(
                (d for d in groups if cap[d] >= need or not uniform), key=lambda d: (cap[d], d)
            )
        for d in tries:
            got = _place_in(ps, u, req, pods, arrange(groups[d]), fill, topo, room)
            if got is not None:
                return got
        return None
    return _place_in(ps, u, req, pods, arrange(nodes), fill, topo, room)


def _home(ps: Pass, u: Unit, doms: Mapping[str, Domain]) -> Domain | None:
    """The domain where most of the gang's running members are (None: none runs)."""
    if not u.bound:
        return None
    seen: Counter[Domain] = Counter()
    for m in ps.s.members.get(u.group or "", {}).values():
        if m.node and not m.terminating:
            d = doms.get(m.node)
            if d is not None:
                seen[d] += 1
    return min(seen, key=lambda d: (-seen[d], d)) if seen else None


def _place_in(
    ps: Pass,
    u: Unit,
    req: Request,
    pods: list[PodInfo],
    order: list[NodeInfo],
    fill: Any,
    topo: Topology | None,
    room: Any,
) -> Placement | None:
    """The pods on these nodes (in this order), with slices and the preferred level;
    `room(node)`: how many of the pods it takes before any is placed."""
    from gpuyard.scheduling.filters import capacity  # filters reads the state, which reads this

    placed: Placement = []
    try:
        if req.preferred:
            order = _fewest(ps, req.preferred, pods, order, room)
        if req.slice_key and req.slice_size > 0:
            doms = domains(ps, (req.slice_key,))
            by: dict[Domain, list[NodeInfo]] = {}
            for n in order:
                d = doms.get(n.name)
                if d is not None:
                    by.setdefault(d, []).append(n)
            size = req.slice_size
            # each domain's room for the slices' pods (all alike: the first's), kept as
            # slices are put in; its rank in fill order breaks ties
            cap = {d: sum(map(room, ns)) for d, ns in by.items()}
            rank = {d: j for j, d in enumerate(by)}
            for i in range(0, len(pods), size):
                chunk = pods[i : i + size]
                # the slice domain that holds the chunk most tightly
                fitting = sorted((c, rank[d], d) for d, c in cap.items() if c >= len(chunk))
                for _, _, d in fitting:
                    mark = len(placed)
                    ok = fill(by[d], chunk, placed, topo)
                    if not ok:
                        _undo(placed, mark)
                    cap[d] = sum(capacity(pods[0], n) for n in by[d])
                    if ok:
                        break
                else:
                    return None
            return list(placed)
        return list(placed) if fill(order, pods, placed, topo) else None
    finally:
        _undo(placed, 0)


def _undo(placed: Placement, mark: int) -> None:
    from gpuyard.scheduling.filters import untentative

    while len(placed) > mark:
        p, n = placed.pop()
        untentative(p, n)


def _fewest(
    ps: Pass, key: str, pods: list[PodInfo], order: list[NodeInfo], room: Any
) -> list[NodeInfo]:
    """The nodes in an order that spans as few domains of `key` as it can: a domain
    that holds every pod (the smallest), else the largest first; nodes outside any
    domain last. Within a domain, the order given."""
    doms = domains(ps, (key,))
    need = len(pods)
    cap: Counter[Domain] = Counter()
    for n in order:
        d = doms.get(n.name)
        if d is not None:
            cap[d] += room(n)
    whole = [d for d, c in cap.items() if c >= need]
    first = min(whole, key=lambda d: (cap[d], d)) if whole else None
    rank = {d: (d != first, -c, d) for d, c in cap.items()}
    last = (True, 1, ())
    return sorted(order, key=lambda n: rank.get(doms.get(n.name) or (), last))


def near_members(ps: Pass, u: Unit, order: list[NodeInfo]) -> list[NodeInfo]:
    """A gang with members running: its other pods go first to the narrowest domain
    they share with the running members (same clique, then rack, block, zone)."""
    levels = [k for k in ps.s.topology_levels if k != names.LABEL_HOSTNAME]
    if not levels:
        return order
    nodes = ps.s.nodes
    seen: list[set[Domain]] = [set() for _ in levels]
    for m in ps.s.members.get(u.group or "", {}).values():
        n = nodes.get(m.node or "")
        if n is not None and not m.terminating:
            for i, k in enumerate(levels):
                d = domain_of(ps.s.topology_levels, k, n.labels)
                if d is not None:
                    seen[i].add(d)
    if not any(seen):
        return order
    all_levels = ps.s.topology_levels

    def key(n: NodeInfo) -> tuple[bool, ...]:
        # narrowest level first
        return tuple(
            domain_of(all_levels, k, n.labels) not in seen[i]
            for i, k in reversed(list(enumerate(levels)))
        )

    return sorted(order, key=key)


# ------------------------------------------------------------------ reasons, reservations


def why(ps: Pass, u: Unit, req: Request) -> str | None:
    """The topology part of a waiting gang's reason: the level it must fit inside and
    the largest free domain of it (None: the request asks nothing required)."""
    if req.error:
        return req.error
    if not req.required:
        return None
    from gpuyard.scheduling.filters import capacity
    from gpuyard.scheduling.indexes import candidates

    p0 = u.pods[0]
    doms = domains(ps, req.required)
    cap: Counter[Domain] = Counter()
    free_for = ps.holds.free_for
    labelled = False
    for n in candidates(ps, p0):
        d = doms.get(n.name)
        if d is not None:
            labelled = True
            if free_for(n, u) and (c := capacity(p0, n)):
                cap[d] += c
    level = " and ".join(req.required)
    home = _home(ps, u, doms)
    if home is not None:
        return (
            f"its running members are in {level} {name_of(home)}, where "
            f"{cap.get(home, 0)} {_of(u)} fit"
        )
    if not labelled:
        return f"must fit inside one {level}, and no node it may use carries {level}"
    if not cap:
        return f"must fit inside one {level}: no {level} has room for any of its pods"
    best = min(cap, key=lambda d: (-cap[d], d))
    return (
        f"must fit inside one {level}: the largest free {level}, {name_of(best)}, "
        f"holds {cap[best]} {_of(u)}"
    )


def _of(u: Unit) -> str:
    n = u.need
    pods = "pod" if n == 1 else "pods"
    return f"of its {n} {pods}" if n == len(u.pods) else f"of the {n} {pods} it needs together"


def reserve_rows(
    ps: Pass, u: Unit, req: Request, rows: list[tuple[Any, ...]], name_at: int, k_at: int
) -> list[tuple[Any, ...]]:
    """Of a reservation's candidate rows (sorted by when each node is free), those of
    the one required domain where the gang can start first (all of them when nothing
    is required)."""
    if not req.required:
        return rows
    doms = domains(ps, req.required)
    need = u.need
    home = _home(ps, u, doms)
    by: defaultdict[Domain, list[tuple[Any, ...]]] = defaultdict(list)
    for r in rows:
        d = doms.get(r[name_at])
        if d is not None and (home is None or d == home):
            by[d].append(r)
    best: tuple[Any, ...] | None = None
    best_rows: list[tuple[Any, ...]] = []
    for d, rs in by.items():
        left = need
        for r in rs:
            left -= r[k_at]
            if left <= 0:
                if best is None or (r[0], d) < best:
                    best, best_rows = (r[0], d), rs
                break
    return best_rows
