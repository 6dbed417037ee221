"""Node health inside `gpuyard up` (the embedded cluster's component registry).

`run(ctx)` runs, in the `gpuyard up` process and on its in-process client:
- the agents of every simulated node as ONE task over DATA/hosts/<node>/ (check
  interval grows with the cluster: max(2 s, 1.5 ms x nodes), so 7,500 nodes are swept
  every ~11 s at well under a tenth of a core);
- the health controller (conditions -> taints, with the 5% brake);
- the preflight gate (idle unless nodes register with the preflight taint and label);
- periodic active tests, only when the option `health_periodic` is true (they take idle
  nodes away for a while, which a demo cluster may not want).

Options read from ctx.options (a dict or an object), all optional: health_interval_s,
health_quiet_s (recovery quiet period; 15 s here, 300 s on real clusters),
health_max_share, health_window_s, health_preflight_concurrency,
health_preflight_timeout_s, health_periodic, health_evict_no_execute (default true:
the embedded cluster has no NoExecute taint manager, so the health controller deletes
the pods that do not tolerate its NoExecute taints).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from gpuyard import cliargs
from gpuyard.cliargs import Bool, Option

log = logging.getLogger("gpuyard.health")

# The `gpuyard up --set` options this component reads.
OPTIONS = cliargs.index(
    [
        Option(
            "health_interval_s",
            cliargs.SECONDS,
            None,
            "seconds between checks (max(2, 0.0015 x nodes))",
        ),
        Option("health_quiet_s", cliargs.SECONDS_OR_OFF, 15.0, "recovery quiet period"),
        Option(
            "health_max_share",
            cliargs.SHARE,
            0.05,
            "largest share of nodes the brake lets be tainted",
        ),
        Option("health_window_s", cliargs.SECONDS, 3600.0, "brake window"),
        Option("health_preflight_concurrency", cliargs.COUNT, 10, "preflight tests at once"),
        Option("health_preflight_timeout_s", cliargs.SECONDS, 120.0, "preflight test timeout"),
        Option("health_periodic", Bool(), False, "run periodic active tests"),
        Option(
            "health_evict_no_execute",
            Bool(),
            True,
            "delete pods that do not tolerate NoExecute taints",
        ),
    ]
)


async def supervise(name: str, factory: Any, stop: asyncio.Event) -> None:
    """Run factory() until stop; restart it (with backoff) if it fails."""
    backoff = 1.0
    while not stop.is_set():
        try:
            await factory()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("health: %s failed; restarting in %.0fs", name, backoff)
            try:
                await asyncio.wait_for(stop.wait(), backoff)
            except TimeoutError:
                pass
            backoff = min(backoff * 2, 30.0)


def _opt(ctx: Any, name: str, default: Any) -> Any:
    """The option, checked against its declaration in OPTIONS; default when not given."""
    value = cliargs.get(getattr(ctx, "options", None) or {}, OPTIONS[name])
    return default if value is None else value


async def run(ctx: Any) -> None:
    from gpuyard.health import kubeio
    from gpuyard.health.agent import AgentConfig, SimAgents
    from gpuyard.health.brake import BrakeConfig
    from gpuyard.health.controller import run_controller
    from gpuyard.health.kubeio import KubeWriter
    from gpuyard.health.periodic import PeriodicConfig, run_periodic
    from gpuyard.health.preflight import PreflightConfig, run_preflight
    from gpuyard.health.verdict import VerdictConfig
    from gpuyard.kube.informer import InformerFactory
    from gpuyard.kube.resources import NODES

    stop: asyncio.Event = ctx.stop
    own_client = None
    if getattr(ctx, "server", None) is not None:
        # Our own in-process client, so the API server and our log can tell health's
        # requests from other components' (DESIGN principle 4).
        from gpuyard.kube.client import Client

        # As the ServiceAccount `gpuyard manifests` gives health, when `gpuyard up`
        # made one (ctx.client_kw).
        kw = getattr(ctx, "client_kw", None)
        own_client = Client.in_process(
            ctx.server, **(kw("health") if kw is not None else {"component": "health"})
        )
    client = own_client or ctx.client
    hosts = Path(ctx.data_dir) / "hosts"
    quiet = float(_opt(ctx, "health_quiet_s", 15.0))
    # Evict for our NoExecute taints here too, with our cause in the message (the
    # embedded cluster's taint manager, gpuyard.cluster.taints, evicts for every
    # NoExecute taint, tolerationSeconds included).
    evict = bool(_opt(ctx, "health_evict_no_execute", True))

    async def seed() -> dict[str, dict[str, Any]]:
        items = (await client.list(NODES))["items"]
        return {n["metadata"]["name"]: n for n in items}

    n_hosts = sum(1 for _ in hosts.iterdir()) if hosts.is_dir() else 0
    interval = float(_opt(ctx, "health_interval_s", max(2.0, 0.0015 * n_hosts)))
    cfg = AgentConfig(interval_s=interval, verdict=VerdictConfig(quiet_s=quiet))
    # one watch per kind of object for every part of health (controller, agents,
    # preflight, periodic tests): views of the process's watches in gpuyard up
    shared = getattr(ctx, "informers", None)
    informers = shared if shared is not None else InformerFactory(client)
    nodes = kubeio.Cache(client, NODES, factory=informers)
    nodes.start()
    # The agents write as the agent DaemonSet's ServiceAccount (its own role: node
    # conditions and Events), the rest of health as the controllers'.
    agent_client = client
    if getattr(ctx, "server", None) is not None and getattr(ctx, "token_files", None):
        from gpuyard.kube.client import Client

        agent_client = Client.in_process(ctx.server, **ctx.client_kw("health-agent"))
    agents = SimAgents(
        hosts, KubeWriter(agent_client), cfg, seed=seed, node_view=lambda n: nodes.items.get(n)
    )
    brake = BrakeConfig(
        max_share=float(_opt(ctx, "health_max_share", 0.05)),
        window_s=float(_opt(ctx, "health_window_s", 3600.0)),
    )
    pre = PreflightConfig(
        max_concurrent=int(_opt(ctx, "health_preflight_concurrency", 10)),
        timeout_s=float(_opt(ctx, "health_preflight_timeout_s", 120.0)),
    )
    parts: dict[str, Any] = {
        "agents": lambda: agents.run(stop),
        "controller": lambda: run_controller(
            client,
            stop,
            brake,
            informer=nodes,
            evict_no_execute=evict,
            evict_client=getattr(ctx, "client", None),
        ),
        "preflight": lambda: run_preflight(client, stop, pre, informers=informers),
    }
    if _opt(ctx, "health_periodic", False):
        parts["periodic"] = lambda: run_periodic(
            client, stop, PeriodicConfig(), informers=informers
        )
    parts["report"] = lambda: _report_requests(client, stop, lambda: len(agents.checkers))
    tasks = [
        asyncio.create_task(supervise(name, f, stop), name=f"health-{name}")
        for name, f in parts.items()
    ]
    log.info(
        "health: agents for %d simulated hosts every %.1fs; controller (brake %.0f%%), %s",
        n_hosts,
        interval,
        brake.max_share * 100,
        ", ".join(parts),
    )
    try:
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if shared is None:
            await informers.stop()
        if own_client is not None:
            await own_client.close()
        if agent_client is not client:
            await agent_client.close()


async def _report_requests(
    client: Any, stop: asyncio.Event, n_nodes: Any, every_s: float = 300.0
) -> None:
    """Log health's API requests per node per minute now and then."""
    import time

    counter = getattr(client, "requests", None)
    if counter is None:
        return
    last_t, last = time.monotonic(), dict(counter.snapshot()["by_verb"])
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), every_s)
        except TimeoutError:
            pass
        now, cur = time.monotonic(), dict(counter.snapshot()["by_verb"])
        minutes = max(now - last_t, 1.0) / 60
        nodes = max(int(n_nodes()), 1)
        rates = {v: (cur.get(v, 0) - last.get(v, 0)) / minutes / nodes for v in cur}
        log.info(
            "health: API requests per node per minute: %s",
            ", ".join(f"{v} {r:.4f}" for v, r in sorted(rates.items())) or "none",
        )
        last_t, last = now, cur
