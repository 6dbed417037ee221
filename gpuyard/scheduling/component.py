"""The scheduler inside `gpuyard up` (see gpuyard.cluster.components)."""

from __future__ import annotations

from typing import Any

from gpuyard import cliargs
from gpuyard.cliargs import Option

# The `gpuyard up --set` options this component reads.
OPTIONS = cliargs.index(
    [
        Option(
            "scheduler_default",
            cliargs.Bool(),
            True,
            "the scheduler also binds pods with schedulerName default-scheduler "
            "(what the API server gives a pod that names none)",
        ),
    ]
)

DEFAULT_SCHEDULER = "default-scheduler"


async def run(ctx: Any) -> None:
    from gpuyard.kube.client import Client
    from gpuyard.scheduling.scheduler import Scheduler

    client = Client.in_process(ctx.server, **_client_kw(ctx, "scheduler"))
    try:
        informers = getattr(ctx, "informers", None)
        opts = getattr(ctx, "options", None) or {}
        also = (DEFAULT_SCHEDULER,) if cliargs.get(opts, OPTIONS["scheduler_default"]) else ()
        sched = Scheduler(client, leader_elect=False, informers=informers, also=also)
        await sched.run(ctx.stop)
    finally:
        await client.close()


def _client_kw(ctx: Any, component: str) -> dict[str, Any]:
    """As the component's ServiceAccount when `gpuyard up` gave it one."""
    kw = getattr(ctx, "client_kw", None)
    return kw(component) if kw is not None else {"component": component}
