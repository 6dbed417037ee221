"""Running a health component (controller, preflight, periodic) as the leader of its
Lease in the gpuyard-health namespace: only the holder acts, its client's writes are
fenced by the Lease (`gpuyard.kube.leader`), and it stops when the Lease is lost."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from gpuyard.kube.leader import LeaderElector, LeaseTimings, run_leading


async def run_component(
    client: Any,
    name: str,
    body: Callable[[asyncio.Event], Awaitable[Any]],
    stop: asyncio.Event,
    *,
    leader: bool,
    timings: LeaseTimings | None = None,
    identity: str | None = None,
) -> bool:
    """Run `body(stop)`, with `leader` only while holding the Lease `name`. False when
    the Lease was lost (the body has stopped)."""
    if not leader:
        await body(stop)
        return True
    from gpuyard.health.controller import NAMESPACE
    from gpuyard.health.kubeio import ensure_namespace

    await ensure_namespace(client, NAMESPACE)
    elector = LeaderElector(
        client,
        name,
        NAMESPACE,
        identity or f"{socket.gethostname()}-{os.getpid()}",
        timings=timings or LeaseTimings(),
    )
    return await run_leading(elector, body, stop)
