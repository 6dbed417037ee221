"""The node network agent on every simulated node of `gpuyard up`.

One `gpuyard netd` loop (gpuyard.network.agent.NetAgent) per Node labelled
gpuyard.io/simulated, each an asyncio task with its own list and watch of its own
node's pods (field selector spec.nodeName=NODE, as the DaemonSet's agent asks: a
request of its own to the API server, not a share of the process's pods watch), as the
netd ServiceAccount, writing nothing to the API. The kernel is simulated
(gpuyard.network.simtraffic.SimAccounting: the pods' gpuyard.io/sim-traffic), so the
agents watch no nodes (their ranges only class real packets by address) and share one
Teams watch (the team label, read at scrape time). Agents come and go with the Nodes;
all their counters are served together on the cluster's metrics address, where
`gpuyard network top` reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gpuyard.kube.informer import Informer
from gpuyard.network import simtraffic
from gpuyard.network.agent import NetAgent

log = logging.getLogger("gpuyard.cluster.simnetd")
SIM_LABEL = "gpuyard.io/simulated"


class SimNetd:
    def __init__(self, client: Any, nodes: Informer, teams: Informer, stop: asyncio.Event):
        self.client = client  # the agents' (as gpuyard-netd)
        self.nodes = nodes  # the process's nodes, to follow the simulated ones
        self.teams = teams
        self.stop_event = stop
        self.agents: dict[str, NetAgent] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        simtraffic.attach(lambda: list(self.agents.values()), self.teams.list)
        self.nodes.add_handler(
            on_add=self._on_node,
            on_update=lambda old, new: self._on_node(new),
            on_delete=self._on_gone,
        )

    def _on_node(self, node: dict[str, Any]) -> None:
        md = node.get("metadata") or {}
        name = md.get("name", "")
        if not name or name in self.agents or SIM_LABEL not in (md.get("labels") or {}):
            return
        engine = simtraffic.SimAccounting()
        agent = NetAgent(
            self.client, name, engine, teams=self.teams, watch_nodes=False, threaded=False
        )
        engine.pods = agent.pods
        self.agents[name] = agent
        self._tasks[name] = asyncio.create_task(agent.run(self.stop_event), name=f"netd-{name}")

    def _on_gone(self, node: dict[str, Any]) -> None:
        name = (node.get("metadata") or {}).get("name", "")
        self.agents.pop(name, None)
        task = self._tasks.pop(name, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        simtraffic.attach(None)
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self.agents.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
