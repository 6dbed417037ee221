"""Team node assignment as a pure function: teams + a snapshot of nodes and the work on
them -> which node belongs to which team, the writes that make it so, and each team's
status.

Rules (issue 6):
- each team gets exactly its count of healthy nodes per pool, by label
  gpuyard.io/team=<team> plus taint gpuyard.io/team=<team>:NoSchedule;
- new nodes are picked evenly across zones, then racks (fewest of the team's nodes first);
- a team node that turns unhealthy or disappears is replaced from the unassigned pool;
  the unhealthy node is released, unless it still runs the owner's work;
- a node that runs its owner's work is never moved (when a team's count shrinks, idle
  nodes go first; busy ones stay until they are idle);
- when the pool is too small the team gets what there is and a shortfall with a reason,
  never more than its count;
- nodes no team holds form the shared pool (no team label, no team taint).

No I/O, no clock: the caller builds `NodeView`s from its informers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuyard import names
from gpuyard.kube.objects import (
    is_node_ready,
    is_pod_terminal,
    labels_of,
    pod_requests,
    quantity_to_int,
    selector_matches,
)
from gpuyard.network import bandwidth

# Taints that make a node unfit to count as team capacity.
UNHEALTHY_TAINTS = (
    names.TAINT_UNHEALTHY,
    names.TAINT_PREFLIGHT,
    names.TAINT_UNREACHABLE,
    names.TAINT_NOT_READY,
)


class TeamSpecError(ValueError):
    """A Team whose spec cannot be used (the message names the field)."""


@dataclass(frozen=True)
class Pool:
    name: str
    count: int
    selector: Mapping[str, Any] | None = None  # None: nodes labelled gpuyard.io/pool=<name>

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.selector is None:
            return labels.get(names.LABEL_POOL) == self.name
        return selector_matches(self.selector, labels)


@dataclass(frozen=True)
class TeamSpec:
    name: str
    pools: tuple[Pool, ...]
    namespaces: tuple[str, ...] = ()
    borrow: bool = False
    # its weight in dividing the shared pool and borrowed nodes (fair share: weight
    # over the sum of the weights)
    weight: float = 1.0

    @property
    def wanted(self) -> int:
        return sum(p.count for p in self.pools)


def parse_team(obj: Mapping[str, Any]) -> TeamSpec:
    """A Team object -> TeamSpec; TeamSpecError naming the field when it is malformed."""
    md = obj.get("metadata") or {}
    name = md.get("name")
    if not isinstance(name, str) or not name:
        raise TeamSpecError("metadata.name: required")
    spec = obj.get("spec") or {}
    if not isinstance(spec, Mapping):
        raise TeamSpecError("spec: must be an object")
    cap = spec.get("capacity") or {}
    if not isinstance(cap, Mapping):
        raise TeamSpecError("spec.capacity: must be an object")
    pools: list[Pool] = []
    for pname in sorted(cap):
        val = cap[pname]
        where = f"spec.capacity.{pname}"
        shape = "{nodes: N} or {selector, nodes: N} (capacity is whole nodes)"
        if isinstance(val, bool):
            raise TeamSpecError(f"{where}: must be {shape}")
        selector: Any = None
        if isinstance(val, int):
            count = val  # the older spelling: a bare number is a node count
        elif isinstance(val, Mapping):
            for wrong in ("gpus", "gpu", "GPUs"):
                if wrong in val:
                    raise TeamSpecError(
                        f"{where}.{wrong}: capacity is counted in whole nodes, not GPUs: "
                        f"write nodes: N (on 8-GPU nodes, 32 GPUs are nodes: 4)"
                    )
            unknown = sorted(set(val) - {"nodes", "count", "selector"})
            if unknown:
                raise TeamSpecError(f"{where}.{unknown[0]}: unknown field; want {shape}")
            if "nodes" in val and "count" in val:
                raise TeamSpecError(f"{where}: nodes and count say the same; give only nodes")
            key = "nodes" if "nodes" in val else "count"
            raw = val.get(key)
            selector = val.get("selector")
            if not isinstance(raw, int) or isinstance(raw, bool):
                raise TeamSpecError(f"{where}.{key}: must be an integer (a number of nodes)")
            count = raw
            if selector is not None and not isinstance(selector, Mapping):
                raise TeamSpecError(f"{where}.selector: must be a label selector object")
        else:
            raise TeamSpecError(f"{where}: must be {shape}")
        if count < 0:
            raise TeamSpecError(f"{where}: must not be negative")
        pools.append(Pool(str(pname), count, selector))
    nss = spec.get("namespaces") or []
    if not isinstance(nss, list) or not all(isinstance(n, str) for n in nss):
        raise TeamSpecError("spec.namespaces: must be a list of names")
    borrow = spec.get("borrow", False)
    if not isinstance(borrow, bool):
        raise TeamSpecError("spec.borrow: must be true or false")
    egress = spec.get("internetEgressBandwidth")
    if egress is not None:
        try:
            bandwidth.parse(egress)
        except ValueError as e:
            raise TeamSpecError(f"spec.internetEgressBandwidth: {e}") from None
    weight = spec.get("weight", 1)
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not 0 < weight <= MAX_WEIGHT
    ):
        raise TeamSpecError(f"spec.weight: must be a number above 0 and at most {MAX_WEIGHT}")
    return TeamSpec(name, tuple(pools), tuple(nss), borrow, float(weight))


MAX_WEIGHT = 1_000_000


@dataclass(frozen=True)
class NodeView:
    """What assignment needs to know about one node."""

    name: str
    labels: Mapping[str, str]
    healthy: bool
    team_label: str | None  # value of label gpuyard.io/team
    team_taint: str | None  # value of taint gpuyard.io/team (NoSchedule)
    pod_teams: frozenset[str] = frozenset()  # teams with live pods on the node
    gpus: int = 0  # allocatable nvidia.com/gpu
    team_gpus: Mapping[str, int] = field(default_factory=dict)  # GPUs its pods request, by team

    @property
    def zone(self) -> str:
        return self.labels.get(names.LABEL_ZONE, "")

    @property
    def rack(self) -> str:
        return self.labels.get(names.LABEL_RACK, "")


def node_healthy(node: Mapping[str, Any]) -> bool:
    if not is_node_ready(node):
        return False
    spec = node.get("spec") or {}
    if spec.get("unschedulable"):
        return False
    return not any(t.get("key") in UNHEALTHY_TAINTS for t in spec.get("taints") or [])


def team_taint_of(node: Mapping[str, Any]) -> str | None:
    for t in (node.get("spec") or {}).get("taints") or []:
        if t.get("key") == names.TAINT_TEAM and t.get("effect") == "NoSchedule":
            return str(t.get("value") or "")
    return None


def node_view(
    node: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], team_of_ns: Mapping[str, str]
) -> NodeView:
    """Build a NodeView from a Node and the pods bound to it."""
    labels = labels_of(node)
    teams: set[str] = set()
    team_gpus: dict[str, int] = {}
    for p in pods:
        if is_pod_terminal(p):
            continue
        t = team_of_ns.get((p.get("metadata") or {}).get("namespace") or "")
        if t:
            teams.add(t)
            g = pod_requests(p).get(names.RESOURCE_GPU, 0)
            if g:
                team_gpus[t] = team_gpus.get(t, 0) + int(g)
    alloc = ((node.get("status") or {}).get("allocatable") or {}).get(names.RESOURCE_GPU)
    return NodeView(
        name=node["metadata"]["name"],
        labels=labels,
        healthy=node_healthy(node),
        team_label=labels.get(names.LABEL_TEAM),
        team_taint=team_taint_of(node),
        pod_teams=frozenset(teams),
        gpus=quantity_to_int(alloc) if alloc else 0,
        team_gpus=team_gpus,
    )


@dataclass
class Gpus:
    """A team's figures in GPUs (allocatable nvidia.com/gpu of nodes, requests of live
    pods): what its nodes hold, what its own pods use there, what other teams' pods use
    there (lent), what its pods use on other teams' nodes (borrowed), and its shortfall
    of nodes in the GPUs such a node of that pool holds."""

    assigned: int = 0
    in_use: int = 0
    lent_out: int = 0
    borrowed_in: int = 0
    shortfall: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "assigned": self.assigned,
            "inUse": self.in_use,
            "lentOut": self.lent_out,
            "borrowedIn": self.borrowed_in,
            "shortfall": self.shortfall,
        }


@dataclass
class TeamStatus:
    wanted: int = 0
    assigned: int = 0
    healthy: int = 0
    in_use: int = 0
    lent_out: int = 0
    borrowed_in: int = 0
    shortfall: int = 0
    reason: str = ""
    # nodes of the shared pool and borrowed nodes its pods run on, as a share of all
    # teams' (share), and what its weight entitles it to (fairShare)
    share: float = 0.0
    fair_share: float = 0.0
    pools: dict[str, dict[str, int]] = field(default_factory=dict)
    # the same figures in GPUs (see Gpus)
    gpus: Gpus = field(default_factory=lambda: Gpus())

    def as_dict(self) -> dict[str, Any]:
        return {
            "wanted": self.wanted,
            "assigned": self.assigned,
            "healthy": self.healthy,
            "inUse": self.in_use,
            "lentOut": self.lent_out,
            "borrowedIn": self.borrowed_in,
            "shortfall": self.shortfall,
            "share": self.share,
            "fairShare": self.fair_share,
            "reason": self.reason,
            "pools": self.pools,
            "gpus": self.gpus.as_dict(),
        }


@dataclass
class Plan:
    owner: dict[str, str | None]  # node -> team after the plan (None: shared pool)
    changes: dict[str, str | None]  # nodes whose label/taint must be written -> team
    status: dict[str, TeamStatus]


def _spread_pick(cands: list[NodeView], need: int, have: Iterable[NodeView]) -> list[NodeView]:
    """Pick `need` nodes from cands, evening out the team's count per zone then rack."""
    zone_n: dict[str, int] = defaultdict(int)
    rack_n: dict[str, int] = defaultdict(int)
    for n in have:
        zone_n[n.zone] += 1
        rack_n[n.rack] += 1
    by_zone: dict[str, dict[str, list[NodeView]]] = defaultdict(lambda: defaultdict(list))
    # pop() yields idle nodes first, then by name
    for n in sorted(cands, key=lambda v: (bool(v.pod_teams), v.name), reverse=True):
        by_zone[n.zone][n.rack].append(n)
    out: list[NodeView] = []
    while len(out) < need and by_zone:
        zone = min(by_zone, key=lambda z: (zone_n[z], z))
        racks = by_zone[zone]
        rack = min(racks, key=lambda r: (rack_n[r], -len(racks[r]), r))
        node = racks[rack].pop()
        if not racks[rack]:
            del racks[rack]
        if not racks:
            del by_zone[zone]
        out.append(node)
        zone_n[zone] += 1
        rack_n[rack] += 1
    return out


def _node_gpus(pool: Pool, nodes: Iterable[NodeView]) -> int:
    """The GPUs a node of `pool` holds: the most common figure among its nodes, healthy
    or not (0 where the cluster has none)."""
    counts: dict[int, int] = defaultdict(int)
    for n in nodes:
        if pool.matches(n.labels):
            counts[n.gpus] += 1
    return max(counts, key=lambda g: (counts[g], g)) if counts else 0


def plan(teams: Iterable[TeamSpec], nodes: Iterable[NodeView]) -> Plan:
    """The assignment for this snapshot. Deterministic; applying its changes and planning
    again gives no changes."""
    team_list = sorted(teams, key=lambda t: t.name)
    views = {n.name: n for n in nodes}
    owner: dict[str, str | None] = {}
    status: dict[str, TeamStatus] = {}

    # 1. What each team keeps: its healthy labelled nodes (up to its count, busy first),
    #    plus unhealthy or surplus ones that still run its work (kept, not counted).
    kept: dict[tuple[str, str], list[NodeView]] = {}
    labelled: dict[str, list[NodeView]] = defaultdict(list)
    for n in views.values():
        if n.team_label:
            labelled[n.team_label].append(n)
    for team in team_list:
        st = status[team.name] = TeamStatus(wanted=team.wanted)
        mine = sorted(
            labelled.get(team.name, ()),
            key=lambda n: (team.name not in n.pod_teams, n.name),
        )
        claimed: set[str] = set()
        for pool in team.pools:
            keep: list[NodeView] = []
            for n in mine:
                if n.name in claimed or not n.healthy or not pool.matches(n.labels):
                    continue
                if len(keep) < pool.count:
                    keep.append(n)
                    claimed.add(n.name)
            kept[(team.name, pool.name)] = keep
            for n in keep:
                owner[n.name] = team.name
        for n in mine:
            if n.name not in claimed and team.name in n.pod_teams:
                owner[n.name] = team.name  # never move a node running its owner's work
                claimed.add(n.name)

    # 2. Fill the gaps from the shared pool.
    free = [n for n in views.values() if n.name not in owner and n.healthy]
    for team in team_list:
        st = status[team.name]
        reasons: list[str] = []
        for pool in team.pools:
            keep = kept[(team.name, pool.name)]
            need = pool.count - len(keep)
            got: list[NodeView] = []
            if need > 0:
                cands = [n for n in free if n.name not in owner and pool.matches(n.labels)]
                got = _spread_pick(cands, need, keep)
                for n in got:
                    owner[n.name] = team.name
                if len(got) < need:
                    reasons.append(
                        f"pool {pool.name}: {pool.count} nodes wanted, {len(keep) + len(got)} "
                        f"healthy nodes available ({len(keep)} held, {len(got)} free)"
                    )
            st.pools[pool.name] = {
                "wanted": pool.count,
                "assigned": len(keep) + len(got),
                "healthy": len(keep) + len(got),
            }
            missing = pool.count - len(keep) - len(got)
            if missing > 0:
                st.gpus.shortfall += missing * _node_gpus(pool, views.values())
        st.healthy = sum(p["healthy"] for p in st.pools.values())
        st.shortfall = max(0, st.wanted - st.healthy)
        st.reason = "; ".join(reasons)

    # 3. Everything else is shared; work out the writes and the usage figures.
    changes: dict[str, str | None] = {}
    outside: dict[str, int] = {}  # team -> shared or borrowed nodes its pods run on
    for n in views.values():
        want = owner.get(n.name)
        if want is None:
            owner[n.name] = None
        if n.team_label != want or n.team_taint != want:
            changes[n.name] = want
        if want is not None:
            st = status[want]
            st.assigned += 1
            st.gpus.assigned += n.gpus
            if want in n.pod_teams:
                st.in_use += 1
                st.gpus.in_use += n.team_gpus.get(want, 0)
            if n.pod_teams - {want}:
                st.lent_out += 1
                st.gpus.lent_out += sum(g for t, g in n.team_gpus.items() if t != want)
        for t in n.pod_teams:
            if t in status and want is not None and want != t:
                status[t].borrowed_in += 1
                status[t].gpus.borrowed_in += n.team_gpus.get(t, 0)
            if t in status and want != t:
                outside[t] = outside.get(t, 0) + 1
    # Shares of what teams share: the shared pool and borrowed nodes.
    used = sum(outside.values())
    weights = {t.name: t.weight for t in team_list if t.name in status}
    total_weight = sum(weights.values())
    for t, st in status.items():
        st.share = round(outside.get(t, 0) / used, 4) if used else 0.0
        st.fair_share = round(weights.get(t, 0.0) / total_weight, 4) if total_weight else 0.0
    return Plan(owner=owner, changes=changes, status=status)


def node_patch(node: Mapping[str, Any], team: str | None) -> dict[str, Any]:
    """A merge patch that gives `node` to `team` (None: to the shared pool), guarded by
    the node's resourceVersion so a concurrent taint change is not lost."""
    md = node.get("metadata") or {}
    taints = [
        dict(t)
        for t in (node.get("spec") or {}).get("taints") or []
        if not (t.get("key") == names.TAINT_TEAM and t.get("effect") == "NoSchedule")
    ]
    if team is not None:
        taints.append({"key": names.TAINT_TEAM, "value": team, "effect": "NoSchedule"})
    return {
        "metadata": {
            "resourceVersion": md.get("resourceVersion"),
            "labels": {names.LABEL_TEAM: team},
        },
        "spec": {"taints": taints or None},
    }
