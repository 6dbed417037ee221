"""The scheduler inside `gpuyard up` (see gpuyard.cluster.components)."""

from __future__ import annotations

from typing import Any

from gpuyard import cliargs
from gpuyard.cliargs import Option


class Levels(cliargs.Value):
    """Topology levels: node label keys, broadest first, comma-separated."""

    expected = "node label keys, comma-separated"

    def check(self, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = value.split(",")
        if not isinstance(value, list | tuple) or not value:
            raise ValueError(f"{value!r} is not {self.expected}")
        keys = tuple(str(k).strip() for k in value)
        from gpuyard.scheduling.topology import is_label_key

        for k in keys:
            if not is_label_key(k):
                raise ValueError(f"{k!r} is not a node label key")
        if len(set(keys)) != len(keys):
            raise ValueError("a level is given twice")
        return keys


LEVELS = Levels()

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
        Option(
            "scheduler_topology_levels",
            LEVELS,
            None,
            "the topology's levels, broadest first (default: topology.kubernetes.io/zone,"
            "gpuyard.io/block,gpuyard.io/rack,nvidia.com/gpu.clique,kubernetes.io/hostname; "
            "a cluster labelled by NVIDIA Topograph: network.topology.nvidia.com/datacenter,"
            "network.topology.nvidia.com/spine,network.topology.nvidia.com/block,"
            "network.topology.nvidia.com/accelerator,kubernetes.io/hostname)",
        ),
    ]
)

DEFAULT_SCHEDULER = "default-scheduler"

# The scheduler's metrics in the process's default registry (served on the one metrics
# address of `gpuyard up`), made once: a restarted scheduler keeps counting in them.
_process_metrics: Any = None


def process_metrics() -> Any:
    global _process_metrics
    if _process_metrics is None:
        from prometheus_client import REGISTRY

        from gpuyard.scheduling.scheduler import Metrics

        _process_metrics = Metrics(REGISTRY)
    return _process_metrics


async def run(ctx: Any) -> None:
    from gpuyard.kube.client import Client
    from gpuyard.scheduling.scheduler import Scheduler

    client = Client.in_process(ctx.server, **_client_kw(ctx, "scheduler"))
    try:
        informers = getattr(ctx, "informers", None)
        opts = getattr(ctx, "options", None) or {}
        also = (DEFAULT_SCHEDULER,) if cliargs.get(opts, OPTIONS["scheduler_default"]) else ()
        sched = Scheduler(
            client,
            leader_elect=False,
            informers=informers,
            also=also,
            metrics=process_metrics(),
            topology_levels=cliargs.get(opts, OPTIONS["scheduler_topology_levels"]),
        )
        await sched.run(ctx.stop)
    finally:
        await client.close()


def _client_kw(ctx: Any, component: str) -> dict[str, Any]:
    """As the component's ServiceAccount when `gpuyard up` gave it one."""
    kw = getattr(ctx, "client_kw", None)
    return kw(component) if kw is not None else {"component": component}
