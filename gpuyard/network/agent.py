"""The node network agent (`gpuyard netd`): follows its node's pods into the kernel.

It watches only the pods bound to its node (field selector spec.nodeName=NODE), its own
Node (metadata.name=NODE: its zone and pod ranges), the one ConfigMap in which `gpuyard
controllers` publishes every zone's pod ranges (gpuyard.network.rangesmap: the destination
classes; no agent watches every Node) and the Teams (namespace -> team, for the metrics' team
label); it writes nothing to the API. Until that ConfigMap exists it classes by its own
node's ranges and the service ranges only. Every change of what it sees wakes one
reconcile, which applies the desired state (gpuyard.network.desired) to the accounting
engine in one atomic nft batch and to the uplink shaper in one tc batch. At start the state
is read back from the kernel, so a restart neither loses nor double-counts a counter.
`gpuyard up` runs this same loop once per simulated node (gpuyard.cluster.simnetd), over
a simulated kernel.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping
from typing import Any

from gpuyard.kube.errors import NotFound
from gpuyard.kube.informer import Informer
from gpuyard.kube.resources import CONFIGMAPS, NODES, PODS, TEAMS
from gpuyard.network import desired, rangesmap
from gpuyard.network.classes import Ranges
from gpuyard.network.nft import NftAccounting, PodRule
from gpuyard.network.shaping import Shaper

log = logging.getLogger("gpuyard.netd")


class NetAgent:
    """One node's agent. ``teams``: a Teams informer someone else starts and stops (the
    simulated agents of `gpuyard up` share one), else the agent watches the Teams itself.
    ``watch_nodes=False``: no watch of its Node or the ranges, no address ranges, for an engine that does
    not class traffic by address (the simulated one). ``threaded=False``: the engine's
    calls run on the event loop (an engine in memory; the kernel's go to a thread)."""

    def __init__(
        self,
        client: Any,
        node: str,
        engine: Any,
        shaper: Shaper | None = None,
        service_cidrs: tuple[str, ...] = (),
        *,
        teams: Informer | None = None,
        watch_nodes: bool = True,
        threaded: bool = True,
    ) -> None:
        self.client = client
        self.node = node
        self.engine: NftAccounting = engine
        self.shaper = shaper
        self.service_cidrs = service_cidrs
        self.threaded = threaded
        # Its watch ends after 300-600 s, at random, as client-go's reflectors do: a fleet of
        # agents started together does not come back to the API server all at once.
        self.pods = Informer(
            client,
            PODS,
            field_selector=f"spec.nodeName={node}",
            name="netd-pods",
            watch_timeout_s=random.randint(300, 600),
        )
        self.nodes: Informer | None = None  # its own Node only
        self.ranges_inf: Informer | None = None  # the published ranges' ConfigMap only
        if watch_nodes:
            self.nodes = Informer(
                client, NODES, field_selector=f"metadata.name={node}", name="netd-node"
            )
            self.ranges_inf = Informer(
                client,
                CONFIGMAPS,
                rangesmap.NAMESPACE,
                field_selector=f"metadata.name={rangesmap.NAME}",
                name="netd-ranges",
            )
        self._said_no_ranges = False
        self._said_bad_ranges = False
        self._own_teams = teams is None
        self.teams_inf = teams if teams is not None else Informer(client, TEAMS, name="netd-teams")
        self._wake = asyncio.Event()
        self._ranges: Ranges | None = None
        self.current: dict[str, PodRule] = {}
        self.reconciles = 0
        self.errors = 0
        woken = [self.pods]
        if self.nodes is not None and self.ranges_inf is not None:
            woken += [self.nodes, self.ranges_inf]
        if self._own_teams:
            woken.append(self.teams_inf)
        for inf in woken:
            inf.add_handler(
                on_add=lambda *_: self._wake.set(),
                on_update=lambda *_: self._wake.set(),
                on_delete=lambda *_: self._wake.set(),
            )

    def teams(self) -> Mapping[str, str]:
        """namespace -> team, from the Teams' spec.namespaces."""
        return desired.teams_of(self.teams_inf.list())

    def unaccounted(self) -> list[tuple[str, str, str]]:
        """The node's pods with no counters of their own (hostNetwork), for /metrics."""
        return desired.host_network_pods(self.pods.list(), self.node)

    def reconcile(self) -> dict[str, Any]:
        if self.nodes is not None:
            ranges = self.ranges()
            if ranges != self._ranges:
                self.engine.ensure(ranges)
                self._ranges = ranges
        rules, shaping = desired.pod_rules(self.pods.list(), self.node, self.current)
        changes = self.engine.sync(rules, self.current)
        self.current = {r.id: r for r in rules}
        if self.shaper is not None:
            self.shaper.sync(shaping)
        self.reconciles += 1
        return changes

    def ranges(self) -> Ranges:
        """Its node's Ranges: from the published ConfigMap and its own Node (until the
        ConfigMap exists, or while it holds what no controller wrote: its own node's
        and the services' ranges only, said once at INFO / WARNING)."""
        assert self.nodes is not None and self.ranges_inf is not None
        node = self.nodes.get(self.node) or {"metadata": {"name": self.node}}
        cm = self.ranges_inf.get(rangesmap.NAME, rangesmap.NAMESPACE)
        if cm is None:
            if not self._said_no_ranges:
                self._said_no_ranges = True
                log.info(
                    "netd %s: no %s/%s yet (`gpuyard controllers` publishes it): classing by "
                    "this node's and the service ranges only",
                    self.node,
                    rangesmap.NAMESPACE,
                    rangesmap.NAME,
                )
            return rangesmap.ranges_from(None, node, self.service_cidrs)
        self._said_no_ranges = False
        try:
            ranges = rangesmap.ranges_from(cm.get("data") or {}, node, self.service_cidrs)
        except ValueError as exc:
            if not self._said_bad_ranges:
                self._said_bad_ranges = True
                log.warning("netd %s: %s; classing by this node's ranges only", self.node, exc)
            return rangesmap.ranges_from(None, node, self.service_cidrs)
        self._said_bad_ranges = False
        return ranges

    async def _engine(self, fn: Any) -> Any:
        return await asyncio.to_thread(fn) if self.threaded else fn()

    async def run(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        # What the kernel already holds is ours from before a restart: its counters stay.
        # Kernel work runs off the event loop: pyroute2's synchronous sockets run a loop of
        # their own, which cannot start inside a running one.
        self.current = await self._engine(self.engine.owned)
        if self.shaper is not None:
            await asyncio.to_thread(self.shaper.ensure)
        synced = [self.pods]
        if self.nodes is not None and self.ranges_inf is not None:
            synced += [self.nodes, self.ranges_inf]
        watched = list(synced)
        if self._own_teams and await self._has_teams():
            watched.append(self.teams_inf)
        for inf in watched:
            inf.start()
        # One waiter for the stop, which wakes the loop (not two futures per wake-up).
        stopper = asyncio.ensure_future(stop.wait())
        stopper.add_done_callback(lambda _: self._wake.set())
        try:
            # Teams only label the metrics: a cluster without the CRD still gets accounting.
            await asyncio.gather(*(inf.wait_synced() for inf in synced))
            self._wake.set()
            while True:
                await self._wake.wait()
                if stop.is_set():
                    break
                self._wake.clear()
                await asyncio.sleep(0.05)  # coalesce a burst of events into one batch
                try:
                    changes = await self._engine(self.reconcile)
                    if any(changes.values()):
                        log.info(
                            "netd %s: +%d -%d ~%d pods",
                            self.node,
                            len(changes["added"]),
                            len(changes["removed"]),
                            len(changes["updated"]),
                        )
                except Exception as exc:  # the kernel refused: retry on the next event
                    self.errors += 1
                    log.warning("netd %s: %s", self.node, exc)
                    await asyncio.sleep(1.0)
                    self._wake.set()
                if ready is not None:
                    ready.set()
        finally:
            stopper.cancel()
            for inf in watched:
                await inf.stop()

    async def _has_teams(self) -> bool:
        """Whether the Team CRD is installed (one request): without it, no team labels,
        and no watch retrying a resource that is not there."""
        try:
            await self.client.list(TEAMS, None, limit=1)
        except NotFound:
            log.warning(
                "netd %s: no Team resource on this cluster; team labels stay empty", self.node
            )
            return False
        return True
