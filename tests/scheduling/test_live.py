"""The live scheduler in-process on a bare embedded API server (no simulated kubelets):
two replicas under leader election bind each pod once; a refused binding is placed
again; preemption evicts a victim gang whole through the Eviction API and nominates."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from gpuyard.kube.client import Client
from gpuyard.kube.errors import Conflict
from gpuyard.kube.resources import NODES, POD_GROUPS, PODS
from gpuyard.scheduling.crds import crds
from gpuyard.scheduling.scheduler import Scheduler

GPU = "nvidia.com/gpu"


def node(name: str, gpus: int = 8) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "allocatable": {"cpu": "64", "memory": "512Gi", GPU: str(gpus), "pods": "110"},
            "capacity": {"cpu": "64", "memory": "512Gi", GPU: str(gpus), "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


def pod(name: str, gpus: int, group: str | None = None, prio: int | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "namespace": "default"}
    if group:
        md["labels"] = {"scheduling.x-k8s.io/pod-group": group}
    spec: dict[str, Any] = {
        "schedulerName": "gpuyard-scheduler",
        "containers": [{"name": "w", "image": "x", "resources": {"limits": {GPU: str(gpus)}}}],
    }
    if prio is not None:
        spec["priority"] = prio
    return {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}


def podgroup(name: str, n: int) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.x-k8s.io/v1alpha1",
        "kind": "PodGroup",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"minMember": n},
    }


async def setup(k: Client, nodes: int) -> None:
    for crd in crds():
        await k.create(crd)
    for i in range(nodes):
        created = await k.create(node(f"n{i}"))
        if not (created.get("status") or {}).get("allocatable"):
            await k.patch_status(NODES, f"n{i}", {"status": node(f"n{i}")["status"]})
    # The CRD's resource is served once discovery knows it.
    deadline = time.monotonic() + 10
    while True:
        try:
            await k.list(POD_GROUPS, "default")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def until(fn: Callable[[], Any], timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = await fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.1)


async def pods_by_name(k: Client) -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in (await k.list(PODS, "default"))["items"]}


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
            await k.create(pod(f"g-{i}", 8, "g"))

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
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in [k, *clients]:
            await c.close()


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
            await k.create(pod(f"g-{i}", 8, "g"))

        async def all_bound() -> bool:
            ps = await pods_by_name(k)
            return len(ps) == 3 and all(p["spec"].get("nodeName") for p in ps.values())

        await until(all_bound)
        assert len(flaky.refused) == 1
        assert sched.metrics.binding_errors._value.get() == 1
        ps = await pods_by_name(k)
        assert len({p["spec"]["nodeName"] for p in ps.values()}) == 3
    finally:
        stop.set()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        await flaky.inner.close()
        await k.close()


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
            await k.create(pod(f"low-{i}", 8, "low", prio=0))

        async def low_bound() -> bool:
            ps = await pods_by_name(k)
            return sum(1 for p in ps.values() if p["spec"].get("nodeName")) == 2

        await until(low_bound)
        await k.create(podgroup("urgent", 2))
        for i in range(2):
            await k.create(pod(f"urgent-{i}", 8, "urgent", prio=1000))

        async def low_evicted() -> dict[str, dict[str, Any]] | None:
            ps = await pods_by_name(k)
            low = [ps[f"low-{i}"] for i in range(2)]
            urgent = [ps[f"urgent-{i}"] for i in range(2)]
            ok = all(p["metadata"].get("deletionTimestamp") for p in low) and all(
                (p.get("status") or {}).get("nominatedNodeName") for p in urgent
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
        stop.set()
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)
        await c.close()
        await k.close()
