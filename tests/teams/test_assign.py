"""Team node assignment policy: exact counts, spread, replacement, never moving busy
nodes, shortfall, idempotence."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest

from gpuyard import names
from gpuyard.teams.assign import (
    NodeView,
    Pool,
    TeamSpec,
    TeamSpecError,
    node_patch,
    node_view,
    parse_team,
    plan,
)


def cluster(n: int, racks_of: int = 4, zones: int = 3) -> list[NodeView]:
    out = []
    for i in range(n):
        rack = i // racks_of
        out.append(
            NodeView(
                name=f"n{i:03d}",
                labels={
                    names.LABEL_POOL: "gpu",
                    names.LABEL_RACK: f"rack-{rack}",
                    names.LABEL_ZONE: f"zone-{rack % zones}",
                },
                healthy=True,
                team_label=None,
                team_taint=None,
            )
        )
    return out


def team(name: str, count: int, ns: tuple[str, ...] = (), borrow: bool = False) -> TeamSpec:
    return TeamSpec(name, (Pool("gpu", count),), ns or (name,), borrow)


def applied(nodes: list[NodeView], changes: dict[str, str | None]) -> list[NodeView]:
    return [
        replace(n, team_label=changes[n.name], team_taint=changes[n.name])
        if n.name in changes
        else n
        for n in nodes
    ]


def owners(nodes: list[NodeView]) -> Counter[str | None]:
    return Counter(n.team_label for n in nodes)


def test_three_teams_get_exact_counts_and_rest_is_shared() -> None:
    nodes = cluster(120)
    teams = [team("a", 60), team("b", 40), team("c", 10)]
    p = plan(teams, nodes)
    assert len(p.changes) == 110  # one write per node assigned, none for the shared pool
    after = applied(nodes, p.changes)
    assert owners(after) == {"a": 60, "b": 40, "c": 10, None: 10}
    for t in ("a", "b", "c"):
        assert p.status[t].shortfall == 0 and p.status[t].assigned == p.status[t].wanted
    # Planning again after the writes changes nothing.
    again = plan(teams, after)
    assert again.changes == {}
    assert again.owner == p.owner


def test_spread_even_across_zones_and_racks() -> None:
    nodes = cluster(120)
    p = plan([team("a", 30)], nodes)
    mine = [n for n in nodes if p.owner[n.name] == "a"]
    zones = Counter(n.zone for n in mine)
    racks = Counter(n.rack for n in mine)
    assert sorted(zones.values()) == [10, 10, 10]
    assert max(racks.values()) - min(racks.values()) <= 1
    assert len(racks) == 30  # 30 racks of 4: one node from each


def test_unhealthy_and_vanished_nodes_are_replaced_from_the_pool() -> None:
    nodes = cluster(40)
    teams = [team("a", 10), team("b", 10)]
    after = applied(nodes, plan(teams, nodes).changes)
    a_nodes = [n.name for n in after if n.team_label == "a"]
    sick, gone = a_nodes[0], a_nodes[1]
    after = [replace(n, healthy=False) if n.name == sick else n for n in after if n.name != gone]
    p = plan(teams, after)
    healed = applied(after, p.changes)
    healthy_a = [n for n in healed if n.team_label == "a" and n.healthy]
    assert len(healthy_a) == 10
    assert p.changes[sick] is None  # the idle unhealthy node is released to the pool
    assert sum(1 for n in healed if n.team_label == "b") == 10  # b untouched
    assert all(p.owner[n.name] == "b" for n in after if n.team_label == "b")
    assert p.status["a"].shortfall == 0


def test_unhealthy_node_running_owner_work_stays_but_is_not_counted() -> None:
    nodes = cluster(12)
    teams = [team("a", 4)]
    after = applied(nodes, plan(teams, nodes).changes)
    victim = next(n.name for n in after if n.team_label == "a")
    after = [
        replace(n, healthy=False, pod_teams=frozenset({"a"})) if n.name == victim else n
        for n in after
    ]
    p = plan(teams, after)
    assert victim not in p.changes and p.owner[victim] == "a"
    healed = applied(after, p.changes)
    assert sum(1 for n in healed if n.team_label == "a" and n.healthy) == 4


def test_shrinking_a_team_never_moves_nodes_running_its_work() -> None:
    nodes = cluster(20)
    after = applied(nodes, plan([team("a", 10)], nodes).changes)
    a_nodes = sorted(n.name for n in after if n.team_label == "a")
    busy = set(a_nodes[-3:])
    after = [replace(n, pod_teams=frozenset({"a"})) if n.name in busy else n for n in after]
    p = plan([team("a", 2)], after)
    kept = {n for n, t in p.owner.items() if t == "a"}
    assert busy <= kept  # busy nodes stay even beyond the count
    assert len(kept) == 3
    assert all(p.changes[n] is None for n in set(a_nodes) - busy)


def test_shortfall_instead_of_over_assignment() -> None:
    nodes = cluster(20)
    p = plan([team("a", 12), team("b", 12)], nodes)
    after = applied(nodes, p.changes)
    counts = owners(after)
    assert counts["a"] + counts["b"] == 20
    assert counts["a"] <= 12 and counts["b"] <= 12
    short = [t for t in ("a", "b") if p.status[t].shortfall]
    assert short == ["b"]
    assert p.status["b"].shortfall == 4
    assert "pool gpu: 12 nodes wanted, 8" in p.status["b"].reason


def test_deleted_team_returns_its_idle_nodes_to_the_shared_pool() -> None:
    nodes = cluster(20)
    after = applied(nodes, plan([team("a", 5), team("b", 5)], nodes).changes)
    p = plan([team("a", 5)], after)
    assert all(t is None for t in p.changes.values())
    assert len(p.changes) == 5
    assert owners(applied(after, p.changes))["b"] == 0


def test_pool_selector_and_named_pools() -> None:
    nodes = cluster(12)
    nodes += [NodeView(f"cpu{i}", {names.LABEL_POOL: "cpu"}, True, None, None) for i in range(4)]
    spec = parse_team(
        {
            "metadata": {"name": "a"},
            "spec": {
                "namespaces": ["ns-a"],
                "capacity": {
                    "gpu": 3,
                    "cpu": 2,
                    "fast": {"selector": {"matchLabels": {names.LABEL_RACK: "rack-2"}}, "count": 2},
                },
            },
        }
    )
    p = plan([spec], nodes)
    mine = {n for n, t in p.owner.items() if t == "a"}
    assert len(mine) == 7
    assert len([n for n in mine if n.startswith("cpu")]) == 2
    rack2 = {n.name for n in nodes if n.labels.get(names.LABEL_RACK) == "rack-2"}
    assert len(mine & rack2) >= 2
    assert p.status["a"].pools["fast"]["assigned"] == 2


def test_usage_figures() -> None:
    nodes = cluster(8)
    teams = [team("a", 2), team("b", 2)]
    after = applied(nodes, plan(teams, nodes).changes)
    a = [n.name for n in after if n.team_label == "a"]
    b = [n.name for n in after if n.team_label == "b"]
    use = {a[0]: {"a"}, a[1]: {"b"}, b[0]: {"b"}}
    after = [replace(n, pod_teams=frozenset(use.get(n.name, set()))) for n in after]
    st = plan(teams, after).status
    assert (st["a"].in_use, st["a"].lent_out, st["a"].borrowed_in) == (1, 1, 0)
    assert (st["b"].in_use, st["b"].lent_out, st["b"].borrowed_in) == (1, 0, 1)


def test_usage_figures_in_gpus() -> None:
    # 8-GPU nodes: a's node runs 6 of a's GPUs and 2 of b's (lent); b's node runs b's 8;
    # b's pods also use 4 on a's second node (borrowed); c wants 3 nodes of a pool of
    # 2 more 8-GPU nodes: one short, 8 GPUs
    def node(i: int, team: str | None) -> dict[str, Any]:
        labels = {names.LABEL_POOL: "gpu", **({names.LABEL_TEAM: team} if team else {})}
        taints = [{"key": names.TAINT_TEAM, "value": team, "effect": "NoSchedule"}] if team else []
        return {
            "metadata": {"name": f"n{i}", "labels": labels},
            "spec": {"taints": taints},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "allocatable": {names.RESOURCE_GPU: "8"},
            },
        }

    def pod(ns: str, gpus: int, phase: str = "Running") -> dict[str, Any]:
        limits = {names.RESOURCE_GPU: str(gpus)}
        return {
            "metadata": {"namespace": ns},
            "spec": {"containers": [{"name": "c", "resources": {"limits": limits}}]},
            "status": {"phase": phase},
        }

    ns = {"ns-a": "a", "ns-b": "b"}
    on = {
        "n0": [pod("ns-a", 6), pod("ns-b", 2), pod("ns-a", 8, "Succeeded")],
        "n1": [pod("ns-b", 4)],
        "n2": [pod("ns-b", 8)],
    }
    owner = {"n0": "a", "n1": "a", "n2": "b", "n3": "c", "n4": "c"}
    views = [node_view(node(i, owner[f"n{i}"]), on.get(f"n{i}", []), ns) for i in range(5)]
    teams = [team("a", 2, ("ns-a",)), team("b", 1, ("ns-b",)), team("c", 3, ("ns-c",))]
    st = {t: s.gpus.as_dict() for t, s in plan(teams, views).status.items()}
    assert st["a"] == {"assigned": 16, "inUse": 6, "lentOut": 6, "borrowedIn": 0, "shortfall": 0}
    assert st["b"] == {"assigned": 8, "inUse": 8, "lentOut": 0, "borrowedIn": 6, "shortfall": 0}
    assert st["c"] == {"assigned": 16, "inUse": 0, "lentOut": 0, "borrowedIn": 0, "shortfall": 8}
    assert plan(teams, views).status["c"].shortfall == 1  # the same shortfall, in nodes


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"capacity": {"gpu": "ten"}}, "spec.capacity.gpu"),
        ({"capacity": {"gpu": -1}}, "spec.capacity.gpu"),
        ({"capacity": {"gpu": {"count": "x"}}}, "spec.capacity.gpu.count"),
        ({"capacity": {"gpu": 1}, "namespaces": "a"}, "spec.namespaces"),
        ({"capacity": {"gpu": 1}, "borrow": "yes"}, "spec.borrow"),
        ({"capacity": {"gpu": 1}, "internetEgressBandwidth": "fast"}, "spec.internetEgress"),
        ({"capacity": {"gpu": 1}, "internetEgressBandwidth": "1bit"}, "spec.internetEgress"),
    ],
)
def test_bad_team_specs_name_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(TeamSpecError, match=field.replace(".", r"\.")):
        parse_team({"metadata": {"name": "a"}, "spec": spec})


def test_node_view_and_patch() -> None:
    node: dict[str, Any] = {
        "metadata": {"name": "n1", "resourceVersion": "7", "labels": {names.LABEL_POOL: "gpu"}},
        "spec": {"taints": [{"key": names.TAINT_TESTING, "effect": "NoSchedule"}]},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    pods = [
        {"metadata": {"namespace": "ns-a"}, "status": {"phase": "Running"}},
        {"metadata": {"namespace": "ns-b"}, "status": {"phase": "Succeeded"}},
    ]
    v = node_view(node, pods, {"ns-a": "a", "ns-b": "b"})
    assert v.healthy and v.pod_teams == {"a"} and v.team_label is None
    patch = node_patch(node, "a")
    assert patch["metadata"] == {"resourceVersion": "7", "labels": {names.LABEL_TEAM: "a"}}
    assert {"key": names.TAINT_TEAM, "value": "a", "effect": "NoSchedule"} in patch["spec"][
        "taints"
    ]
    assert {"key": names.TAINT_TESTING, "effect": "NoSchedule"} in patch["spec"]["taints"]
    node["spec"]["taints"] = patch["spec"]["taints"]
    back = node_patch(node, None)
    assert back["metadata"]["labels"] == {names.LABEL_TEAM: None}
    assert back["spec"]["taints"] == [{"key": names.TAINT_TESTING, "effect": "NoSchedule"}]
    node["spec"]["taints"].append({"key": names.TAINT_UNHEALTHY, "effect": "NoSchedule"})
    assert not node_view(node, [], {}).healthy


def test_idle_shared_nodes_are_picked_before_busy_ones() -> None:
    nodes = cluster(8, racks_of=8, zones=1)
    busy = {"n000", "n001", "n002"}
    nodes = [replace(n, pod_teams=frozenset({"b"})) if n.name in busy else n for n in nodes]
    p = plan([team("a", 5)], nodes)
    assert {n for n, t in p.owner.items() if t == "a"} == {f"n{i:03d}" for i in range(3, 8)}


def test_capacity_names_its_unit_nodes_and_old_spellings_keep_their_meaning() -> None:
    def pools(cap: object) -> list[tuple[str, int]]:
        t = parse_team({"metadata": {"name": "a"}, "spec": {"capacity": cap}})
        return [(p.name, p.count) for p in t.pools]

    assert pools({"gpu": {"nodes": 4}}) == [("gpu", 4)]
    # A bare number and count: were node counts before; they still are.
    assert pools({"gpu": 4}) == pools({"gpu": {"count": 4}}) == [("gpu", 4)]
    sel = {"selector": {"matchLabels": {"fast": "yes"}}, "nodes": 2}
    assert pools({"fast": sel}) == [("fast", 2)]


@pytest.mark.parametrize(
    ("cap", "says"),
    [
        ({"gpu": {"gpus": 32}}, r"spec\.capacity\.gpu\.gpus: capacity is counted in whole nodes"),
        ({"gpu": {"nodes": 2, "count": 2}}, r"spec\.capacity\.gpu: nodes and count say the same"),
        ({"gpu": {"node": 2}}, r"spec\.capacity\.gpu\.node: unknown field"),
        ({"gpu": {"nodes": "2"}}, r"spec\.capacity\.gpu\.nodes: must be an integer"),
    ],
)
def test_capacity_in_gpus_or_unknown_fields_is_refused(cap: object, says: str) -> None:
    with pytest.raises(TeamSpecError, match=says):
        parse_team({"metadata": {"name": "a"}, "spec": {"capacity": cap}})
