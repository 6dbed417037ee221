"""The scheduler inside `gpuyard up` (see gpuyard.cluster.components)."""

from __future__ import annotations

from typing import Any


async def run(ctx: Any) -> None:
    from gpuyard.kube.client import Client
    from gpuyard.scheduling.scheduler import Scheduler

    client = Client.in_process(ctx.server, component="scheduler")
    try:
        await Scheduler(client, leader_elect=False).run(ctx.stop)
    finally:
        await client.close()
