"""The live scheduler in-process on a bare embedded API server (no simulated kubelets):
two replicas under leader election bind each pod once; a refused binding is placed
again; preemption evicts a victim gang whole through the Eviction API and nominates."""

from __future__ import annotations

import asyncio
from typing import Any

from gpuyard.kube.client import Client
from gpuyard.kube.errors import Conflict
from gpuyard.kube.resources import POD_GROUPS, PODS
from gpuyard.scheduling.scheduler import Scheduler
from tests.scheduling.live import pod, podgroup, pods_by_name, setup, stop_all, until


async def test_two_replicas_under_leader_election_bind_each_pod_once(
    apiserver_inproc: Any,
) -> None:
    k = Client.in_process(apiserver_inproc)
    clients = [Client.in_process(apiserver_inproc) for _ in range(2)]
    stop = asyncio.Event()
    scheds = [Scheduler(c, identity=f"replica-{i}", debounce=0.01) for i, c in enumerate(clients)]
    tasks: list[asyncio.Task[None]] = []
    try:
        await setup(k, 4)
        tasks = [asyncio.create_task(s.run(stop)) for s in scheds]
        await k.create(podgroup("g", 4))
        for i in range(4):
            await k.create(pod(f"g-{i}", "g", gpus=8))

        async def all_bound() -> bool:
            ps = await pods_by_name(k)
            return len(ps) == 4 and all(p["spec"].get("nodeName") for p in ps.values())

        await until(all_bound)
        ps = await pods_by_name(k)
        assert len({p["spec"]["nodeName"] for p in ps.values()}) == 4
        # Exactly one replica did the binding, with no refused (double) bindings.
        assert sorted(s.bound for s in scheds) == [0, 4]
        assert all(s.metrics.binding_errors._value.get() == 0 for s in scheds)

        async def group_scheduled() -> bool:
            pg = await k.get(POD_GROUPS, "g", "default")
            st = pg.get("status") or {}
            return st.get("phase") == "Scheduled" and st.get("scheduled") == 4

        await until(group_scheduled)
    finally:
        await stop_all(stop, tasks, [k, *clients])


class FlakyBinds:
    """A client whose first binding is refused, as if another scheduler got there."""

    def __init__(self, inner: Client) -> None:
        self.inner = inner
        self.refused: list[tuple[str, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def bind(self, pod: Any, node: str, namespace: str | None = None) -> Any:
        if not self.refused:
            self.refused.append((str(pod), node))
            raise Conflict(409, "Conflict", "binding refused for the test")
        return await self.inner.bind(pod, node, namespace)


async def test_a_refused_binding_is_placed_again_beside_its_gang(apiserver_inproc: Any) -> None:
    k = Client.in_process(apiserver_inproc)
    flaky = FlakyBinds(Client.in_process(apiserver_inproc))
    stop = asyncio.Event()
    sched = Scheduler(flaky, leader_elect=False, debounce=0.01)
    task = None
    try:
        await setup(k, 4)
        task = asyncio.create_task(sched.run(stop))
        await k.create(podgroup("g", 3))
        for i in range(3):
            await k.create(pod(f"g-{i}", "g", gpus=8))

        async def all_bound() -> bool:
            ps = await pods_by_name(k)
            return len(ps) == 3 and all(p["spec"].get("nodeName") for p in ps.values())

        await until(all_bound)
        assert len(flaky.refused) == 1
        assert sched.metrics.binding_errors._value.get() == 1
        ps = await pods_by_name(k)
        assert len({p["spec"]["nodeName"] for p in ps.values()}) == 3
    finally:
        await stop_all(stop, [task], [flaky.inner, k])


async def test_preemption_evicts_the_low_priority_gang_whole_and_nominates(
    apiserver_inproc: Any,
) -> None:
    k = Client.in_process(apiserver_inproc)
    c = Client.in_process(apiserver_inproc)
    stop = asyncio.Event()
    sched = Scheduler(c, leader_elect=False, debounce=0.01)
    task = None
    try:
        await setup(k, 2)
        task = asyncio.create_task(sched.run(stop))
        await k.create(podgroup("low", 2))
        for i in range(2):
            await k.create(pod(f"low-{i}", "low", gpus=8, priority=0))

        async def low_bound() -> bool:
            ps = await pods_by_name(k)
            return sum(1 for p in ps.values() if p["spec"].get("nodeName")) == 2

        await until(low_bound)
        await k.create(podgroup("urgent", 2))
        for i in range(2):
            await k.create(pod(f"urgent-{i}", "urgent", gpus=8, priority=1000))

        async def low_evicted() -> dict[str, dict[str, Any]] | None:
            ps = await pods_by_name(k)
            low = [ps[f"low-{i}"] for i in range(2)]
            urgent = [ps[f"urgent-{i}"] for i in range(2)]
            # The nomination and the PodScheduled condition are separate writes.
            ok = all(p["metadata"].get("deletionTimestamp") for p in low) and all(
                (p.get("status") or {}).get("nominatedNodeName")
                and (p.get("status") or {}).get("conditions")
                for p in urgent
            )
            return ps if ok else None

        # Both members of the low gang are evicted (there is no kubelet here, so they
        # stay terminating) and the urgent pods are nominated to the nodes they free.
        ps = await until(low_evicted)
        assert {ps[f"urgent-{i}"]["status"]["nominatedNodeName"] for i in range(2)} == {
            "n0",
            "n1",
        }
        assert not any(ps[f"urgent-{i}"]["spec"].get("nodeName") for i in range(2))
        msg = ps["urgent-0"]["status"]["conditions"][0]["message"]
        assert "2 are freeing (pods terminating)" in msg, msg
        # The kubelet's part: the evicted pods finish; then the urgent gang is bound.
        for i in range(2):
            await k.delete(PODS, f"low-{i}", "default", grace_period_seconds=0)

        async def urgent_bound() -> bool:
            ps = await pods_by_name(k)
            return all(ps[f"urgent-{i}"]["spec"].get("nodeName") for i in range(2))

        await until(urgent_bound)
        assert (
            sched.metrics.registry.get_sample_value(
                "gpuyard_scheduler_preemptions_total", {"cause": "priority"}
            )
            == 2
        )
    finally:
        await stop_all(stop, [task], [c, k])
