"""The TrainingJob controller inside `gpuyard up` (see gpuyard.cluster.components)."""

from __future__ import annotations

from typing import Any


async def run(ctx: Any) -> None:
    from gpuyard.jobs.controller import JobController
    from gpuyard.kube.client import Client

    client = Client.in_process(ctx.server, component="jobs")
    try:
        await JobController(client).run(ctx.stop)
    finally:
        await client.close()
