"""Team capacity end to end on `gpuyard up` (scheduler + teams components): exact
assignment, replacement of a lost node, pods placed by the webhook, borrowing and
reclaim, refusal of another team's toleration, webhook down -> refused."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from gpuyard import names
from gpuyard.cluster.testing import ClusterProcess
from gpuyard.kube.resources import EVENTS, NAMESPACES, NODES, PODS, TEAMS
from tests.scheduling.live import until

ARGS = ["--components", "scheduler,teams"]


def team_obj(name: str, count: int, borrow: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "gpuyard.io/v1alpha1",
        "kind": "Team",
        "metadata": {"name": name},
        "spec": {"namespaces": [f"ns-{name}"], "capacity": {"gpu": count}, "borrow": borrow},
    }


def pod(name: str, ns: str, gpus: int = 8, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": dict(spec.pop("labels", {}))},
        "spec": {
            "schedulerName": names.SCHEDULER_NAME,
            "containers": [
                {"name": "w", "image": "x", "resources": {"limits": {names.RESOURCE_GPU: gpus}}}
            ],
            **spec,
        },
    }


async def setup_teams(k: Any, counts: dict[str, int], borrow: set[str]) -> None:
    for t in counts:
        await k.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": f"ns-{t}"}})
    for t, n in counts.items():
        await k.create(team_obj(t, n, t in borrow))

    async def assigned() -> bool:
        nodes = (await k.list(NODES))["items"]
        have = Counter(n["metadata"].get("labels", {}).get(names.LABEL_TEAM) for n in nodes)
        nss = (await k.list(NAMESPACES))["items"]
        labelled = {
            n["metadata"]["name"]
            for n in nss
            if names.LABEL_TEAM in n["metadata"].get("labels", {})
        }
        return all(have[t] == n for t, n in counts.items()) and labelled >= {
            f"ns-{t}" for t in counts
        }

    await until(assigned, 30)


async def team_nodes(k: Any) -> dict[str, str | None]:
    return {
        n["metadata"]["name"]: n["metadata"].get("labels", {}).get(names.LABEL_TEAM)
        for n in (await k.list(NODES))["items"]
    }


def test_pod_created_before_its_team_is_placed_on_the_teams_nodes(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    """A pod admitted before the webhook knew its namespace as a team's (created before
    the Team, or in the same apply) gets its team's toleration from the manager, so it
    runs on the team's nodes instead of waiting forever behind their taint."""
    c = make_cluster(nodes=2, args=ARGS)

    async def scenario() -> None:
        async with c.client() as k:
            await k.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns-a"}})
            # Waits for the team's nodes: no Team yet, so the webhook does not see it.
            early = pod("early", "ns-a", nodeSelector={names.LABEL_TEAM: "a"})
            await k.create(early)
            got = await k.get(PODS, "early", "ns-a")
            assert not any(
                t.get("key") == names.TAINT_TEAM for t in got["spec"].get("tolerations") or []
            )
            await k.create(team_obj("a", 2))

            async def bound() -> dict[str, Any] | None:
                p = await k.get(PODS, "early", "ns-a")
                return p if p["spec"].get("nodeName") else None

            p = await until(bound, 30)
            node = await k.get(NODES, p["spec"]["nodeName"])
            assert node["metadata"]["labels"][names.LABEL_TEAM] == "a"
            assert {"key": names.TAINT_TEAM, "value": "a", "effect": "NoSchedule"} in [
                {k2: t.get(k2) for k2 in ("key", "value", "effect")} for t in node["spec"]["taints"]
            ]
            assert {
                "key": names.TAINT_TEAM,
                "operator": "Equal",
                "value": "a",
                "effect": "NoSchedule",
            } in p["spec"]["tolerations"]
            events = (await k.list(EVENTS, namespace="ns-a"))["items"]
            assert any(
                e["reason"] == "TeamPlacement" and e["involvedObject"]["name"] == "early"
                for e in events
            ), events

    asyncio.run(scenario())


def test_assignment_exact_and_lost_node_replaced(
    make_cluster: Callable[..., ClusterProcess],
) -> None:
    c = make_cluster(nodes=14, args=ARGS)

    async def scenario() -> None:
        async with c.client() as k:
            await setup_teams(k, {"a": 6, "b": 4, "c": 2}, set())
            owner = await team_nodes(k)
            nodes = {n["metadata"]["name"]: n for n in (await k.list(NODES))["items"]}
            for name, team in owner.items():
                taints = [
                    t
                    for t in nodes[name]["spec"].get("taints") or []
                    if t["key"] == names.TAINT_TEAM
                ]
                assert taints == (
                    [{"key": names.TAINT_TEAM, "value": team, "effect": "NoSchedule"}]
                    if team
                    else []
                )
            assert Counter(owner.values())[None] == 2
            lost = sorted(n for n, t in owner.items() if t == "b")[0]
            c.fault("node-down", lost)

            async def replaced() -> dict[str, str | None] | None:
                now = await team_nodes(k)
                if now[lost] is None and Counter(now.values())["b"] == 4:
                    return now
                return None

            now = await until(replaced, 40)
            # Only b changed: one node from the shared pool, the lost one released.
            moved = {n for n in owner if owner[n] != now[n]}
            assert len(moved) == 2 and lost in moved
            team_b = await k.get(TEAMS, "b")

            async def status_healthy() -> bool:
                st = (await k.get(TEAMS, "b")).get("status") or {}
                return st.get("healthy") == 4 and st.get("shortfall") == 0

            await until(status_healthy, 10)
            evs = (await k.list(EVENTS, "default"))["items"]
            msgs = [
                e["message"]
                for e in evs
                if e["involvedObject"].get("name") == "b" and e["reason"] == "NodesAssigned"
            ]
            assert any(f"released 1 nodes ({lost})" in m for m in msgs), msgs
            assert team_b["metadata"]["name"] == "b"

    asyncio.run(scenario())
    out = c.kubectl("get", "teams").stdout
    assert "SHORTFALL" in out and "b " in out


@pytest.mark.parametrize(
    "scale", [pytest.param(1, id="12-nodes"), pytest.param(10, id="120-nodes-60-40-20")]
)
def test_webhook_places_refuses_borrows_and_reclaims(
    make_cluster: Callable[..., ClusterProcess], scale: int
) -> None:
    """Three teams split the cluster 6/4/2 (x scale): a's sweep borrows b's idle nodes
    and is evicted when b's gang needs them."""
    na, nb, nc = 6 * scale, 4 * scale, 2 * scale
    c = make_cluster(nodes=na + nb + nc, args=ARGS)

    async def scenario() -> None:
        async with c.client() as k:
            await setup_teams(k, {"a": na, "b": nb, "c": nc}, {"a"})
            owner = await team_nodes(k)

            # Normal pods of team c: only c's nodes (the shared pool is empty here).
            for i in range(nc):
                await k.create(pod(f"c-{i}", "ns-c"))

            async def c_bound() -> list[dict[str, Any]] | None:
                pods = (await k.list(PODS, "ns-c"))["items"]
                ok = len(pods) == nc and all(p["spec"].get("nodeName") for p in pods)
                return pods if ok else None

            for p in await until(c_bound, 30):
                assert owner[p["spec"]["nodeName"]] == "c"
                assert p["spec"]["priorityClassName"] == names.PRIORITY_NORMAL

            # Team a's low-priority sweep borrows every idle node, b's included.
            for i in range(na + nb):
                await k.create(pod(f"sweep-{i}", "ns-a", priorityClassName=names.PRIORITY_LOW))

            async def sweep_bound() -> list[dict[str, Any]] | None:
                pods = (await k.list(PODS, "ns-a"))["items"]
                ok = len(pods) == na + nb and all(p["spec"].get("nodeName") for p in pods)
                return pods if ok else None

            sweep = await until(sweep_bound, 30)
            assert {owner[p["spec"]["nodeName"]] for p in sweep} == {"a", "b"}

            async def lent() -> bool:
                st = (await k.get(TEAMS, "b")).get("status") or {}
                return st.get("lentOut") == nb

            await until(lent, 10)

            # Team b's gang needs its 4 nodes back: the borrowed sweep pods are evicted.
            t0 = time.monotonic()
            await k.create(
                {
                    "apiVersion": names.PODGROUP_API_VERSION,
                    "kind": "PodGroup",
                    "metadata": {"name": "train", "namespace": "ns-b"},
                    "spec": {"minMember": nb},
                }
            )
            for i in range(nb):
                await k.create(pod(f"train-{i}", "ns-b", labels={names.POD_GROUP_LABEL: "train"}))

            async def gang_bound() -> list[dict[str, Any]] | None:
                pods = (await k.list(PODS, "ns-b"))["items"]
                ok = len(pods) == nb and all(p["spec"].get("nodeName") for p in pods)
                return pods if ok else None

            gang = await until(gang_bound, 30)
            took = time.monotonic() - t0
            assert took < 20, took
            assert {owner[p["spec"]["nodeName"]] for p in gang} == {"b"}
            evs = (await k.list(EVENTS, "ns-a"))["items"]
            assert any(
                e["reason"] == "Preempted" and "reclaiming team b's capacity" in e["message"]
                for e in evs
            ), [e["message"] for e in evs]

    asyncio.run(scenario())

    # kubectl: a pod of team a carrying team b's toleration is refused, with the reason.
    bad = """
apiVersion: v1
kind: Pod
metadata: {name: sneaky, namespace: ns-a}
spec:
  schedulerName: gpuyard-scheduler
  tolerations: [{key: gpuyard.io/team, operator: Equal, value: b, effect: NoSchedule}]
  containers: [{name: w, image: x}]
"""
    r = c.kubectl("apply", "-f", "-", input=bad, check=False)
    assert r.returncode != 0
    assert "team b's toleration" in r.stderr, r.stderr
    assert "sneaky" not in c.kubectl("get", "pods", "-n", "ns-a").stdout

    # Webhook down (its URL points at a closed port): team pods are refused, others not.
    c.kubectl(
        "patch",
        "mutatingwebhookconfiguration",
        "gpuyard-teams",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/webhooks/0/clientConfig/url",'
        '"value":"https://127.0.0.1:1/mutate-pods"}]',
    )
    plain = "apiVersion: v1\nkind: Pod\nmetadata: {name: later, namespace: NS}\n"
    plain += "spec: {containers: [{name: w, image: x}]}\n"
    r = c.kubectl("apply", "-f", "-", input=plain.replace("NS", "ns-b"), check=False)
    assert r.returncode != 0 and "webhook" in r.stderr, r.stderr
    c.kubectl("apply", "-f", "-", input=plain.replace("NS", "default"))
