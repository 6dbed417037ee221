"""Team capacity inside `gpuyard up` (see gpuyard.cluster.components): starts the
admission webhook (HTTPS, its own CA under <data-dir>/teams-webhook, served from a
process of its own fed the Team informer's namespace table), installs or
updates the MutatingWebhookConfiguration with its URL and caBundle, rotates the
certificate when due, and runs the team manager."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpuyard import cliargs
from gpuyard.cliargs import Choice, Float, Option
from gpuyard.kube.errors import AlreadyExists, KubeError
from gpuyard.kube.informer import Informer
from gpuyard.kube.resources import NAMESPACES, NODES, PODS, TEAMS
from gpuyard.teams.admission import TeamInfo
from gpuyard.teams.webhook import (
    CONFIG_NAME,
    WebhookServer,
    teams_by_namespace,
    webhook_configuration,
)
from gpuyard.teams.webhook_proc import ProcessWebhook

# The `gpuyard up --set` options this component reads.
OPTIONS = cliargs.index(
    [
        Option(
            "teams_webhook_mode",
            Choice("process", "thread", "loop"),
            "process",
            "where the team webhook is served",
        ),
        Option("teams_webhook_port", cliargs.PORT, 0, "the team webhook's port"),
        Option(
            "teams_webhook_switch_interval_ms",
            Float(gt=0),
            1.0,
            "interpreter switch interval in thread mode",
        ),
    ]
)

log = logging.getLogger("gpuyard.teams")

MWC = ("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration")
ROTATE_CHECK_S = 3600.0


class TeamLookup:
    """namespace -> TeamInfo, rebuilt from a Team informer when Teams change."""

    def __init__(self, teams: Informer) -> None:
        self.teams = teams
        self._map: dict[str, TeamInfo] = {}
        self.listeners: list[Callable[[dict[str, TeamInfo]], None]] = []
        teams.add_handler(self._rebuild, lambda o, n: self._rebuild(n), self._rebuild)

    def _rebuild(self, _obj: Any = None) -> None:
        new = teams_by_namespace(self.teams.list())
        changed = new != self._map
        self._map = new
        if changed:
            for fn in self.listeners:
                fn(new)

    def __call__(self, namespace: str) -> TeamInfo | None:
        return self._map.get(namespace)


def _prompt_thread_switches(ms: float) -> None:
    """Let the webhook's thread take the interpreter lock within `ms` when the API
    server's thread is busy computing (the default, 5 ms, is added to an admission each
    time the webhook's thread waits for it; under load the median call measured several
    times slower with it). Only ever lowered; threads that are not waiting are not
    interrupted, so this costs nothing while the webhook is idle."""
    if ms > 0 and sys.getswitchinterval() > ms / 1000:
        sys.setswitchinterval(ms / 1000)


async def install_webhook(client: Any, url: str, ca_pem: bytes) -> None:
    """Create the MutatingWebhookConfiguration, or update it when URL or CA changed."""
    want = webhook_configuration(url, ca_pem)
    try:
        await client.create(want)
        return
    except AlreadyExists:
        pass
    have = await client.get(MWC, CONFIG_NAME)
    hw = (have.get("webhooks") or [{}])[0].get("clientConfig") or {}
    cc = want["webhooks"][0]["clientConfig"]
    if hw.get("url") == cc["url"] and hw.get("caBundle") == cc["caBundle"]:
        return
    want["metadata"]["resourceVersion"] = have["metadata"]["resourceVersion"]
    await client.replace(want)


async def run(ctx: Any) -> None:
    from gpuyard.kube.client import Client
    from gpuyard.teams.manager import TeamManager

    kw = getattr(ctx, "client_kw", lambda c: {"component": c})
    # The team controller runs as gpuyard-controllers, the webhook (its Team table and
    # its MutatingWebhookConfiguration) as gpuyard-teams-webhook, as `gpuyard manifests`
    # deploys them.
    client = Client.in_process(ctx.server, **kw("teams"))
    hook_client = Client.in_process(ctx.server, **kw("teams-webhook"))
    teams = Informer(hook_client, TEAMS, name="teams-webhook-teams")
    lookup = TeamLookup(teams)
    opts = ctx.options or {}
    # Where the webhook is served (option teams_webhook_mode): "process", a process of
    # its own fed the team table (default: the API server's process never shares an
    # event loop or the interpreter lock with it, as in a real deployment); "thread",
    # its own thread and event loop in this process; "loop", this event loop.
    mode = cliargs.get(opts, OPTIONS["teams_webhook_mode"])
    cert_dir = Path(ctx.data_dir) / "teams-webhook"
    port = cliargs.get(opts, OPTIONS["teams_webhook_port"])
    server: WebhookServer | ProcessWebhook
    if mode == "process":
        server = ProcessWebhook(cert_dir, port=port)
        lookup.listeners.append(server.set_teams)
    else:
        server = WebhookServer(lookup, cert_dir, port=port)
    # Nodes, pods and namespaces: views of the process's shared watches when it has
    # them (gpuyard up), else the manager's own.
    factory = getattr(ctx, "informers", None)
    views: dict[str, Informer] = {}
    if factory is not None and factory.views:
        views = {
            "nodes": factory.informer(NODES, name="teams-nodes", client=client),
            "pods": factory.informer(PODS, name="teams-pods", client=client),
            "namespaces": factory.informer(NAMESPACES, name="teams-namespaces", client=client),
        }
    manager = TeamManager(client, informers={"teams": teams, **views})
    teams.start()
    for v in views.values():
        v.start()
    try:
        await teams.wait_synced()
        lookup._rebuild()
        if isinstance(server, ProcessWebhook):
            server.set_teams(lookup._map)
            url = await server.start()
        else:
            if mode == "thread":
                ms = cliargs.get(opts, OPTIONS["teams_webhook_switch_interval_ms"])
                _prompt_thread_switches(ms)
            url = await server.start(thread=mode == "thread")
        await install_webhook(hook_client, url, server.ca_bundle)

        async def rotate() -> None:
            while not ctx.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ctx.stop.wait(), ROTATE_CHECK_S)
                if ctx.stop.is_set():
                    return
                if server.rotate(dt.datetime.now(dt.UTC), activate=False):
                    # Publish a caBundle trusting old and new CA, then switch.
                    try:
                        await install_webhook(hook_client, url, server.ca_bundle)
                    except KubeError as exc:
                        log.warning("could not update the webhook caBundle: %s", exc)
                    server.activate()

        rot = asyncio.create_task(rotate(), name="teams-cert-rotation")
        try:
            await manager.run(ctx.stop)
        finally:
            rot.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rot
    finally:
        await server.stop()
        await teams.stop()
        for v in views.values():
            await v.stop()
        await client.close()
        await hook_client.close()
