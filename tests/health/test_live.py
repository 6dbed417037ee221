"""The agent's writer and the health controller against the embedded API server
(in process): conditions written without losing Ready, taints applied and removed,
the brake tripping at 20% and being reset by a person."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gpuyard.health import kubeio
from gpuyard.health.brake import BrakeConfig
from gpuyard.health.controller import BRAKE_CONFIGMAP, NAMESPACE, run_controller
from gpuyard.health.verdict import Condition
from gpuyard.kube.client import Client
from gpuyard.kube.resources import CONFIGMAPS, EVENTS, NODES


def _node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {},
        "status": {"capacity": {"nvidia.com/gpu": "8"}},
    }


async def _ready(c: Client, name: str) -> None:
    await c.create(_node(name), res=NODES)
    await c.patch_status(
        NODES,
        name,
        {
            "status": {
                "conditions": [
                    {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}
                ]
            }
        },
    )


async def _until(pred: Any, timeout: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await pred()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


@pytest.fixture
async def client(apiserver_inproc: Any) -> AsyncIterator[Client]:
    # Over HTTP (the in-process transport is the kube layer's to prove).
    c = Client.from_kubeconfig(apiserver_inproc.kubeconfig_path, component="health-test")
    try:
        yield c
    finally:
        await c.close()


@contextlib.asynccontextmanager
async def controller(c: Client, cfg: BrakeConfig) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_controller(c, stop, cfg, period_s=0.05))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def _taints(node: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (t["key"], t.get("value", ""), t["effect"])
        for t in (node.get("spec") or {}).get("taints") or []
    ]


async def test_writer_keeps_ready_and_controller_taints(client: Client) -> None:
    for i in range(4):
        await _ready(client, f"n{i}")
    w = kubeio.KubeWriter(client)
    async with controller(client, BrakeConfig(max_share=0.5)):
        await w.write_conditions(
            "n1",
            [
                Condition("GPUHealthy", "False", "Xid79", "fatal: Xid 79 on 0000:3b:00"),
                Condition("DiskHealthy", "True", "Healthy", "all checks passed"),
            ],
        )
        node = await client.get(NODES, "n1")
        types = {c["type"]: c["status"] for c in node["status"]["conditions"]}
        assert types == {"Ready": "True", "GPUHealthy": "False", "DiskHealthy": "True"}

        async def tainted() -> Any:
            n = await client.get(NODES, "n1")
            return _taints(n) == [("gpuyard.io/unhealthy", "Xid79", "NoExecute")] and n

        n1 = await _until(tainted)
        assert "gpuyard.io/unhealthy-since" in n1["metadata"]["annotations"]
        await w.write_conditions("n1", [Condition("GPUHealthy", "True", "Healthy", "ok")])

        async def clean() -> bool:
            return _taints(await client.get(NODES, "n1")) == []

        await _until(clean)
    evs = (await client.list(EVENTS, "default"))["items"]
    assert {"NodeTainted", "NodeUntainted"} <= {e["reason"] for e in evs}


async def test_brake_trips_at_twenty_percent_and_person_resets(client: Client) -> None:
    for i in range(20):
        await _ready(client, f"n{i:02d}")
    w = kubeio.KubeWriter(client)
    cfg = BrakeConfig(max_share=0.05, window_s=3600)  # 5% of 20 -> 1 node
    async with controller(client, cfg):
        for i in range(4):  # 20% of nodes go bad at once
            await w.write_conditions(
                f"n{i:02d}", [Condition("DiskHealthy", "False", "DiskFull", "/ full")]
            )

        async def tripped() -> Any:
            cm = await kubeio.get_configmap(client, NAMESPACE, BRAKE_CONFIGMAP)
            return cm if cm and cm["data"].get("state") == "tripped" else None

        cm = await _until(tripped)
        assert "limit 1" in cm["data"]["message"]
        await asyncio.sleep(0.5)
        nodes = (await client.list(NODES))["items"]
        assert sum(1 for n in nodes if _taints(n)) == 1
        evs = (await client.list(EVENTS, NAMESPACE))["items"]
        assert any(e["reason"] == "HealthBrakeTripped" for e in evs)
        # A person resets the brake: one more node may be tainted in the new window.
        await client.patch(CONFIGMAPS, BRAKE_CONFIGMAP, {"data": {"state": "ok"}}, NAMESPACE)

        async def two() -> bool:
            ns = (await client.list(NODES))["items"]
            return sum(1 for n in ns if _taints(n)) == 2

        await _until(two)
        await _until(tripped)  # and it trips again on the remaining ones
