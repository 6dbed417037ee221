"""Balloons inside `gpuyard up` (see gpuyard.cluster.components): runs the balloon
controller; with `gpuyard up --balloons` it also creates a BalloonPool for each node
pool the embedded cluster has (gpu, cpu), unless one exists."""

from __future__ import annotations

import contextlib
from typing import Any

from gpuyard import cliargs, names
from gpuyard.balloons.crds import KIND

# The `gpuyard up --set` options this component reads (`--balloons` sets the first).
OPTIONS = cliargs.index(
    [cliargs.Option("balloons", cliargs.Bool(), False, "a BalloonPool for each node pool")]
)


def default_pools(sim: Any) -> list[str]:
    if sim is None:
        return []
    pools = {n.shape.pool for n in sim.nodes.values()}
    pools |= {g.pool for g in sim.node_groups.values()}
    return sorted(pools)


async def run(ctx: Any) -> None:
    from gpuyard.balloons.controller import BalloonController, process_metrics
    from gpuyard.kube.client import Client
    from gpuyard.kube.errors import AlreadyExists

    client = Client.in_process(ctx.server, **_client_kw(ctx, "balloons"))
    try:
        if cliargs.get(ctx.options or {}, OPTIONS["balloons"]):
            for pool in default_pools(ctx.sim):
                with contextlib.suppress(AlreadyExists):
                    # Installing the demo's pools is the admin's doing (ctx.client), not
                    # the controller's: its role only reads pools and writes their status.
                    await (ctx.client or client).create(
                        {
                            "apiVersion": names.API_VERSION,
                            "kind": KIND,
                            "metadata": {"name": pool},
                            "spec": {"pool": pool},
                        }
                    )
        informers = getattr(ctx, "informers", None)
        await BalloonController(client, informers=informers, metrics=process_metrics()).run(
            ctx.stop
        )
    finally:
        await client.close()


def _client_kw(ctx: Any, component: str) -> dict[str, Any]:
    """As the component's ServiceAccount when `gpuyard up` gave it one."""
    kw = getattr(ctx, "client_kw", None)
    return kw(component) if kw is not None else {"component": component}
