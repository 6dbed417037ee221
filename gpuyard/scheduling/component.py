"""The scheduler inside `gpuyard up` (see gpuyard.cluster.components)."""

from __future__ import annotations

from typing import Any


async def run(ctx: Any) -> None:
    from gpuyard.kube.client import Client
    from gpuyard.scheduling.scheduler import Scheduler

    client = Client.in_process(ctx.server, **_client_kw(ctx, "scheduler"))
    try:
        informers = getattr(ctx, "informers", None)
        await Scheduler(client, leader_elect=False, informers=informers).run(ctx.stop)
    finally:
        await client.close()


def _client_kw(ctx: Any, component: str) -> dict[str, Any]:
    """As the component's ServiceAccount when `gpuyard up` gave it one."""
    kw = getattr(ctx, "client_kw", None)
    return kw(component) if kw is not None else {"component": component}
