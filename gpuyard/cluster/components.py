"""The components `gpuyard up` runs in its process, beside the API server and the
simulated nodes.

Each entry names a coroutine `run(ctx: Context)` by import path. `gpuyard up` starts
every default component whose module imports, restarts one that fails (with backoff),
and says which ones it could not start. `--components a,b` picks a set; `none` runs
only the API server and the nodes.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuyard import crds

log = logging.getLogger("gpuyard.up")

# name -> "module:function"; the order is the start order.
COMPONENTS: dict[str, str] = {
    "scheduler": "gpuyard.scheduling.component:run",
    "jobs": "gpuyard.jobs.component:run",
    "teams": "gpuyard.teams.component:run",
    "balloons": "gpuyard.balloons.component:run",
    "health": "gpuyard.health.component:run",
    "workloads": "gpuyard.cluster.workloads.component:run",
}

# The CustomResourceDefinitions `gpuyard up` installs: gpuyard.crds.
CRD_MODULES = crds.CRD_MODULES
crd_objects = crds.crd_objects


@dataclass
class Context:
    """What a component gets: the in-process client (admin), the API server, the data
    directory, the stop event, the options given to `gpuyard up`, the simulated
    cluster, and the identity it makes its own clients with (`client_kw`)."""

    client: Any
    server: Any
    data_dir: Path
    stop: asyncio.Event
    options: dict[str, Any] = field(default_factory=dict)
    sim: Any = None
    # the process's watches (a gpuyard.kube.informer.InformerFactory with views): one
    # pods and one nodes watch for every component here
    informers: Any = None
    # component -> the token file of the ServiceAccount it runs as (gpuyard.cluster.
    # identities); a component not named uses the admin token.
    token_files: dict[str, str] = field(default_factory=dict)

    def client_kw(self, component: str) -> dict[str, Any]:
        """Keyword arguments of `Client.in_process` for a component: its name and,
        when it has one, its ServiceAccount's token file."""
        kw: dict[str, Any] = {"component": component}
        if component in self.token_files:
            kw["token_file"] = self.token_files[component]
        return kw


def resolve(name: str) -> Callable[[Context], Awaitable[None]] | None:
    """The component's run function, or None when its package is not there."""
    target = COMPONENTS[name]
    modname, _, func = target.partition(":")
    try:
        mod = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name and (modname == exc.name or modname.startswith(exc.name + ".")):
            return None
        raise
    fn: Callable[[Context], Awaitable[None]] = getattr(mod, func)
    return fn


async def supervise(name: str, fn: Callable[[Context], Awaitable[None]], ctx: Context) -> None:
    """Run a component until stop, restarting it with backoff if it fails."""
    backoff = 1.0
    while not ctx.stop.is_set():
        try:
            await fn(ctx)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("component %s failed; restarting in %.0fs", name, backoff)
            try:
                await asyncio.wait_for(ctx.stop.wait(), backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, 30.0)


def declared_options() -> dict[str, Any]:
    """The `--set` options (gpuyard.cliargs.Option by key) that the available
    components declare in their modules' OPTIONS."""
    out: dict[str, Any] = {}
    for target in COMPONENTS.values():
        modname = target.partition(":")[0]
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name and (modname == exc.name or modname.startswith(exc.name + ".")):
                continue
            raise
        out.update(getattr(mod, "OPTIONS", {}))
    return out
