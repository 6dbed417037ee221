"""The team admission decision: tolerations, affinity, default priority, borrowing,
refusal of another team's toleration."""

from __future__ import annotations

from typing import Any

from gpuyard import names
from gpuyard.kube.objects import node_matches_pod, tolerates
from gpuyard.teams.admission import TeamInfo, apply_json_patch, mutate_pod

A = TeamInfo("a", borrow=True)
B = TeamInfo("b", borrow=False)


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"containers": [{"name": "c", "image": "x"}], **spec},
    }


def node(team: str | None, **labels: str) -> dict[str, Any]:
    lab = dict(labels)
    taints = []
    if team:
        lab[names.LABEL_TEAM] = team
        taints.append({"key": names.TAINT_TEAM, "value": team, "effect": "NoSchedule"})
    return {"metadata": {"name": "n", "labels": lab}, "spec": {"taints": taints}}


def fits(p: dict[str, Any], n: dict[str, Any]) -> bool:
    taints = n["spec"]["taints"]
    return node_matches_pod(p, n) and all(
        tolerates(p["spec"].get("tolerations"), t) for t in taints
    )


def admit(p: dict[str, Any], team: TeamInfo | None) -> dict[str, Any]:
    d = mutate_pod(p, team, "ns")
    assert d.allowed, d.message
    return apply_json_patch(p, d.patch)


def test_normal_pod_lands_on_own_nodes_or_shared_pool_only() -> None:
    out = admit(pod(), B)
    assert out["spec"]["priorityClassName"] == names.PRIORITY_NORMAL
    assert fits(out, node("b"))
    assert fits(out, node(None))
    assert not fits(out, node("a"))
    assert not fits(out, node("c"))


def test_explicit_priority_kept_and_existing_affinity_anded() -> None:
    p = pod(
        priorityClassName=names.PRIORITY_HIGH,
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}
                    ]
                }
            }
        },
        tolerations=[{"key": "other", "operator": "Exists"}],
    )
    out = admit(p, B)
    assert out["spec"]["priorityClassName"] == names.PRIORITY_HIGH
    assert {"key": "other", "operator": "Exists"} in out["spec"]["tolerations"]
    assert fits(out, node("b", zone="z1"))
    assert fits(out, node(None, zone="z1"))
    assert not fits(out, node("b", zone="z2"))
    assert not fits(out, node("a", zone="z1"))


def test_low_priority_pod_of_borrowing_team_may_use_any_team() -> None:
    out = admit(pod(priorityClassName=names.PRIORITY_LOW), A)
    for n in (node("a"), node("b"), node("c"), node(None)):
        assert fits(out, n)


def test_low_priority_pod_of_non_borrowing_team_stays_home() -> None:
    out = admit(pod(priorityClassName=names.PRIORITY_LOW), B)
    assert fits(out, node("b")) and fits(out, node(None))
    assert not fits(out, node("a"))


def test_another_teams_toleration_is_refused_with_a_clear_message() -> None:
    p = pod(tolerations=[{"key": names.TAINT_TEAM, "value": "b", "effect": "NoSchedule"}])
    d = mutate_pod(p, A, "ns")
    assert not d.allowed
    assert "team b's toleration" in d.message and "team a" in d.message


def test_any_team_toleration_refused_unless_borrowing() -> None:
    any_tol = [{"key": names.TAINT_TEAM, "operator": "Exists"}]
    assert not mutate_pod(pod(tolerations=any_tol), A, "ns").allowed  # normal priority
    d = mutate_pod(pod(tolerations=any_tol, priorityClassName=names.PRIORITY_LOW), B, "ns")
    assert not d.allowed and "borrow=false" in d.message
    assert mutate_pod(
        pod(tolerations=any_tol, priorityClassName=names.PRIORITY_LOW), A, "ns"
    ).allowed
    wildcard = [{"operator": "Exists"}]
    assert not mutate_pod(pod(tolerations=wildcard), B, "ns").allowed


def test_own_toleration_allowed_and_mutation_is_idempotent() -> None:
    once = admit(pod(), B)
    twice = mutate_pod(once, B, "ns")
    assert twice.allowed and twice.patch == []


def test_pod_outside_team_namespaces_is_untouched() -> None:
    d = mutate_pod(pod(), None, "default")
    assert d.allowed and d.patch == []


def test_team_default_egress_limit_stamped_on_pods_without_one() -> None:
    from gpuyard.network import bandwidth, desired

    team = TeamInfo("a", egress="500Mbit")
    p = admit(pod(), team)
    assert p["metadata"]["annotations"] == {bandwidth.ANNOTATION: "500Mbit"}
    assert desired.limit_of(p) == 500_000_000  # what the node agent shapes it to
    # Other annotations are kept; a pod's own limit wins over the team's default.
    p = pod()
    p["metadata"]["annotations"] = {"x/y": "1"}
    assert admit(p, team)["metadata"]["annotations"] == {
        "x/y": "1",
        bandwidth.ANNOTATION: "500Mbit",
    }
    p["metadata"]["annotations"] = {bandwidth.ANNOTATION: "2Gbit"}
    assert admit(p, team)["metadata"]["annotations"] == {bandwidth.ANNOTATION: "2Gbit"}
    # Without a team default, or outside a team namespace, nothing is added.
    assert "annotations" not in admit(pod(), A)["metadata"]
    assert "annotations" not in admit(pod(), None)["metadata"]


def test_team_default_egress_from_the_team_object() -> None:
    from gpuyard.teams.webhook import teams_by_namespace

    table = teams_by_namespace(
        [
            {
                "metadata": {"name": "a"},
                "spec": {"namespaces": ["ns-a"], "internetEgressBandwidth": "1Gbit"},
            },
            {
                "metadata": {"name": "b"},
                "spec": {"namespaces": ["ns-b"], "internetEgressBandwidth": "1bit"},
            },
        ]
    )
    assert table["ns-a"].egress == "1Gbit"
    assert table["ns-b"].egress == ""  # out of range: the team manager reports it, no pod gets it
