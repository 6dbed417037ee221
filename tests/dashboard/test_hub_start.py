"""The hub is ready when `start()` returns: its rows are built from the synced watches,
so a browser (or anything) asking at once sees the whole cluster, not an empty map."""

from __future__ import annotations

from typing import Any

from gpuyard.dashboard.hub import Hub
from gpuyard.kube.client import Client


async def test_rows_are_built_when_start_returns(apiserver_inproc: Any) -> None:
    client = Client.in_process(apiserver_inproc, component="test")
    for i in range(5):
        await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"n{i}"}})
    hub = Hub(client, coalesce_s=0.5)  # a slow first flush: start() must still wait for it
    try:
        await hub.start(sync_timeout=20)
        assert sorted(n["name"] for n in hub.snapshot()["nodes"]) == [f"n{i}" for i in range(5)]
    finally:
        await hub.stop()
        await client.close()
