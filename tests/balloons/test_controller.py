"""The balloon controller against the in-process API server: it creates a pool's
balloons, reports them in the BalloonPool's status and metrics, puts an evicted one back
(Pending), and its pods go when the BalloonPool is deleted."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from gpuyard import names
from gpuyard.apiserver.server import APIServer
from gpuyard.balloons.controller import BalloonController
from gpuyard.crds import crd_objects
from gpuyard.kube.client import Client
from gpuyard.kube.resources import BALLOON_POOLS, NODES, PODS


def node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"gpuyard.io/pool": "gpu"}},
        "status": {
            "capacity": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8", "pods": "110"},
            "allocatable": {"cpu": "96", "memory": "1Ti", "nvidia.com/gpu": "8", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }


async def until(fn: Callable[[], Any], timeout: float = 10) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        v = await fn()
        if v:
            return v
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out; last {v!r}")
        await asyncio.sleep(0.05)


async def test_controller_keeps_balloons_and_counts_evictions(apiserver_inproc: APIServer) -> None:
    c = Client.in_process(apiserver_inproc, component="test")
    for crd in crd_objects():
        await c.create(crd)
    for i in range(3):
        n = await c.create(node(f"n{i}"))
        await c.patch_status(NODES, f"n{i}", {"status": node(f"n{i}")["status"]})
        _ = n
    await c.create(
        {
            "apiVersion": "gpuyard.io/v1alpha1",
            "kind": "BalloonPool",
            "metadata": {"name": "gpu"},
            "spec": {"pool": "gpu"},  # no replicas, no autoscaler: one per node
        }
    )
    ctl = BalloonController(c)
    stop = asyncio.Event()
    task = asyncio.create_task(ctl.run(stop))

    async def refused() -> str | None:
        st = (await c.get(BALLOON_POOLS, "gpu")).get("status") or {}
        return st.get("message")

    # Without the gpuyard-balloon PriorityClass the API server refuses the pods, and
    # the pool's status says why.
    assert "no PriorityClass with name gpuyard-balloon" in await until(refused)
    for name, value in names.PRIORITY_CLASSES.items():
        await c.create(
            {
                "apiVersion": "scheduling.k8s.io/v1",
                "kind": "PriorityClass",
                "metadata": {"name": name},
                "value": value,
            }
        )
    stop.set()
    await asyncio.wait_for(task, 5)
    ctl = BalloonController(c)
    stop = asyncio.Event()
    task = asyncio.create_task(ctl.run(stop))
    try:

        async def balloons() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = (
                await c.list(PODS, "gpuyard-system", label_selector="gpuyard.io/balloon=gpu")
            )["items"]
            return items

        pods = await until(lambda: _n(balloons, 3))
        assert sorted(p["metadata"]["name"] for p in pods) == [
            "balloon-gpu-0",
            "balloon-gpu-1",
            "balloon-gpu-2",
        ]
        assert pods[0]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] == "8"
        # What the scheduler and kubelet would do: bind and run them.
        for i, p in enumerate(pods):
            await c.bind(p, f"n{i}")
            await c.patch_status(
                PODS, p["metadata"]["name"], {"status": {"phase": "Running"}}, "gpuyard-system"
            )

        async def status() -> dict[str, Any] | None:
            st = (await c.get(BALLOON_POOLS, "gpu")).get("status") or {}
            return st if st.get("running") == 3 else None

        st = await until(status)
        assert st["nodesHeld"] == 3 and st["pending"] == 0 and st["evictions"] == 0
        reg = ctl.metrics.registry
        assert reg.get_sample_value("gpuyard_balloons_running", {"pool": "gpu"}) == 3
        assert reg.get_sample_value("gpuyard_balloons_nodes_held", {"pool": "gpu"}) == 3

        # Evicted (as the scheduler's preemption does): it comes back, Pending.
        await c.evict("balloon-gpu-1", "gpuyard-system")

        async def back() -> dict[str, Any] | None:
            p = await c.get_or_none(PODS, "balloon-gpu-1", "gpuyard-system")
            return p if p and not p["spec"].get("nodeName") else None

        await until(back)

        async def counted() -> dict[str, Any] | None:
            st = (await c.get(BALLOON_POOLS, "gpu")).get("status") or {}
            return st if st.get("evictions") == 1 and st.get("pending") == 1 else None

        st = await until(counted)
        assert st["running"] == 2
        assert reg.get_sample_value("gpuyard_balloons_evictions_total", {"pool": "gpu"}) == 1

        # Deleting the pool deletes its balloons (owner references).
        await c.delete(BALLOON_POOLS, "gpu")
        await until(lambda: _n(balloons, 0))
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        await c.close()


async def _n(fn: Callable[[], Any], n: int) -> Any:
    items = await fn()
    if len(items) != n:
        return None
    return items or True
