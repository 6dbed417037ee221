"""The workload controllers inside `gpuyard up` (see gpuyard.cluster.components)."""

from __future__ import annotations

import asyncio
from typing import Any

from gpuyard import cliargs
from gpuyard.cliargs import Float, Option

# The `gpuyard up --set` options this component reads.
OPTIONS = cliargs.index(
    [
        Option(
            "workloads_job_pod_seconds",
            Float(gt=0),
            1.0,
            "how long a Job's simulated pod runs before it succeeds, when its template "
            "has no gpuyard.io/sim-duration annotation",
        ),
    ]
)


async def run(ctx: Any) -> None:
    from gpuyard.cluster.workloads.cronjobs import CronJobController
    from gpuyard.cluster.workloads.daemonsets import DaemonSetController
    from gpuyard.cluster.workloads.deployments import DeploymentController
    from gpuyard.cluster.workloads.disruption import DisruptionController
    from gpuyard.cluster.workloads.endpointslices import EndpointSliceController
    from gpuyard.cluster.workloads.jobs import JobController
    from gpuyard.cluster.workloads.replicasets import (
        ReplicaSetController,
        ReplicationControllerController,
    )
    from gpuyard.cluster.workloads.resourceclaims import ResourceClaimController
    from gpuyard.cluster.workloads.statefulsets import StatefulSetController
    from gpuyard.kube.client import Client

    kw = getattr(ctx, "client_kw", None)
    client = Client.in_process(
        ctx.server, **(kw("workloads") if kw is not None else {"component": "workloads"})
    )
    informers = getattr(ctx, "informers", None)
    seconds = cliargs.get(getattr(ctx, "options", None) or {}, OPTIONS["workloads_job_pod_seconds"])
    try:
        await asyncio.gather(
            ReplicaSetController(client, informers).run(ctx.stop),
            ReplicationControllerController(client, informers).run(ctx.stop),
            DeploymentController(client, informers).run(ctx.stop),
            JobController(client, informers, pod_seconds=seconds).run(ctx.stop),
            DaemonSetController(client, informers).run(ctx.stop),
            StatefulSetController(client, informers).run(ctx.stop),
            CronJobController(client, informers).run(ctx.stop),
            DisruptionController(client, informers).run(ctx.stop),
            ResourceClaimController(client, informers).run(ctx.stop),
            EndpointSliceController(client, informers).run(ctx.stop),
        )
    finally:
        await client.close()
