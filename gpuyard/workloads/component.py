"""The workload controllers inside `gpuyard up` (see gpuyard.cluster.components)."""

from __future__ import annotations

import asyncio
from typing import Any


async def run(ctx: Any) -> None:
    from gpuyard.kube.client import Client
    from gpuyard.workloads.deployments import DeploymentController
    from gpuyard.workloads.replicasets import ReplicaSetController

    kw = getattr(ctx, "client_kw", None)
    client = Client.in_process(
        ctx.server, **(kw("workloads") if kw is not None else {"component": "workloads"})
    )
    informers = getattr(ctx, "informers", None)
    try:
        await asyncio.gather(
            ReplicaSetController(client, informers).run(ctx.stop),
            DeploymentController(client, informers).run(ctx.stop),
        )
    finally:
        await client.close()
