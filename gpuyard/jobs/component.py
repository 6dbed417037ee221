"""The TrainingJob controller inside `gpuyard up` (see gpuyard.cluster.components)."""

from __future__ import annotations

from typing import Any


async def run(ctx: Any) -> None:
    from gpuyard.jobs.controller import JobController
    from gpuyard.kube.client import Client

    client = Client.in_process(ctx.server, **_client_kw(ctx, "jobs"))
    try:
        await JobController(client, informers=getattr(ctx, "informers", None)).run(ctx.stop)
    finally:
        await client.close()


def _client_kw(ctx: Any, component: str) -> dict[str, Any]:
    """As the component's ServiceAccount when `gpuyard up` gave it one."""
    kw = getattr(ctx, "client_kw", None)
    return kw(component) if kw is not None else {"component": component}
