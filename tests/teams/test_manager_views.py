"""The team manager's cached node views: pods bound to no node start no round (unless
they lack their team's toleration: then it is added), and a round still sees every
change that matters (a pod bound to or gone from a team node, a
node turning unhealthy), against an in-memory API server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gpuyard import names
from gpuyard.kube.client import Client
from gpuyard.kube.resources import NODES, PODS, TEAMS
from gpuyard.teams.crds import crds
from gpuyard.teams.manager import TeamManager


def node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                names.LABEL_HOSTNAME: name,
                names.LABEL_POOL: "gpu",
                names.LABEL_RACK: f"r{name[-1]}",
                names.LABEL_ZONE: "z1",
            },
        },
        "status": {
            "allocatable": {names.RESOURCE_GPU: "8", "cpu": "96", "memory": "1Ti", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


TOLERATION = {"key": names.TAINT_TEAM, "operator": "Equal", "value": "a", "effect": "NoSchedule"}


def pod(name: str, node_name: str | None = None, team: bool = True) -> dict[str, Any]:
    # team: as the webhook admits a team namespace's pod, with the team's toleration
    spec: dict[str, Any] = {"containers": [{"name": "w", "image": "x"}]}
    if team:
        spec["tolerations"] = [dict(TOLERATION)]
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "ns-a"},
        "spec": spec,
    }


async def until(pred: Callable[[], Any], timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while True:
        got = pred()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return
        assert time.monotonic() - t0 < timeout, "condition not reached"
        await asyncio.sleep(0.05)


async def test_views_follow_bound_pods_and_nodes_and_ignore_unbound_pods(
    apiserver_inproc: Any,
) -> None:
    async with Client.in_process(apiserver_inproc) as k:
        for crd in crds():
            await k.create(crd)
        await asyncio.sleep(0.2)
        for i in range(6):
            await k.create(node(f"n{i}"))
        await k.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns-a"}})
        await k.create(
            {
                "apiVersion": names.API_VERSION,
                "kind": "Team",
                "metadata": {"name": "a"},
                "spec": {"namespaces": ["ns-a"], "capacity": {"gpu": 2}},
            }
        )
        mgr = TeamManager(k, debounce_s=0.02, pod_debounce_s=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(mgr.run(stop))
        try:

            async def status() -> dict[str, Any]:
                return (await k.get(TEAMS, "a")).get("status") or {}

            await until(lambda: mgr.idle.is_set() and mgr.nodes.list())
            await until(lambda: len(mgr.last_plan.changes) == 0 if mgr.last_plan else False)
            await until(lambda: mgr.idle.is_set())
            mine = sorted(n for n, t in (mgr.last_plan.owner if mgr.last_plan else {}).items() if t)
            assert len(mine) == 2
            assert (await status())["inUse"] == 0

            # A pod bound to no node: nothing to replan.
            rounds = mgr.rounds
            await k.create(pod("pending"))
            await asyncio.sleep(0.4)
            assert mgr.rounds == rounds

            # One the webhook never saw as the team's (no team toleration): the manager
            # adds the toleration, once.
            await k.create(pod("unplaced", team=False))

            async def tolerates() -> bool:
                p = await k.get(PODS, "unplaced", "ns-a")
                return TOLERATION in (p["spec"].get("tolerations") or [])

            await until(tolerates)
            writes = mgr.pod_writes
            await asyncio.sleep(0.3)
            assert mgr.pod_writes == writes == 1

            # Bound to a team node: the node is in use.
            await k.create(pod("running", mine[0]))

            async def in_use(n: int) -> bool:
                return bool((await status()).get("inUse") == n)

            await until(lambda: in_use(1))
            await k.delete(PODS, "running", "ns-a", grace_period_seconds=0)
            await until(lambda: in_use(0))

            # A team node turns unhealthy: replaced from the shared pool.
            await k.patch_status(
                NODES,
                mine[1],
                {"status": {"conditions": [{"type": "Ready", "status": "False"}]}},
                patch_type="strategic",
            )

            def replaced() -> bool:
                owner = mgr.last_plan.owner if mgr.last_plan else {}
                now = sorted(n for n, t in owner.items() if t == "a")
                return len(now) == 2 and mine[1] not in now and mine[0] in now

            await until(replaced)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
