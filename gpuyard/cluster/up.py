"""`EmbeddedCluster`: the API server, simulated nodes, node lifecycle, fault injection
and gpuyard's components in one asyncio loop — what `gpuyard up` runs.

    cluster = EmbeddedCluster(UpOptions(nodes=16, data_dir="/tmp/y", port=0))
    await cluster.start()          # cluster.url, cluster.kubeconfig
    ...
    await cluster.stop()

It resumes from its data directory: nodes already registered are adopted, not
duplicated, and the store keeps every object and its resourceVersion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpuyard import cliargs, names
from gpuyard.cliargs import Option
from gpuyard.cluster import components, identities
from gpuyard.cluster.autoscaler import Autoscaler, AutoscalerConfig, parse_groups
from gpuyard.cluster.faults import FaultApplier
from gpuyard.cluster.lifecycle import LEASE_NS, NodeLifecycle
from gpuyard.cluster.shapes import NODES_PER_RACK, NodeShape, default_shapes, lay_out, load_shapes
from gpuyard.cluster.sim import SimCluster, SimConfig
from gpuyard.cluster.taints import TaintManager
from gpuyard.kube.errors import AlreadyExists
from gpuyard.kube.informer import Informer, InformerFactory
from gpuyard.kube.resources import LEASES, NODES, TEAMS

log = logging.getLogger("gpuyard.up")

STATE_FILE = "up.json"


@dataclass
class UpOptions:
    nodes: int = 8
    cpu_nodes: int = 0
    shapes: str | None = None
    data_dir: str = ".gpuyard"
    host: str = "127.0.0.1"
    port: int = 6443
    in_memory: bool = False
    lease_seconds: float = 10.0
    node_grace: float = 40.0
    default_toleration_seconds: int = 300  # of pods for not-ready / unreachable nodes
    start_delay: float = 0.5
    preflight: bool = False
    autoscale: str | None = None  # node groups, such as "gpu=0:64,cpu=0:8"
    join_rate: float = 0.0  # nodes joining per second; 0: all at once
    rack_size: int = NODES_PER_RACK  # nodes per rack (racks dealt round robin over zones)
    mig: bool = False  # GPUs published as MIG partitionable devices (simdevices)
    components: list[str] | None = None  # None: all defaults
    options: dict[str, Any] = field(default_factory=dict)
    flow: Any = None  # gpuyard.apiserver.flow.FlowLimits; None: its defaults
    # every component's Prometheus metrics on one address (host:metrics_port/metrics);
    # 0: a free port, None: not served
    metrics_port: int | None = 0
    # the live web dashboard (host:dashboard_port); 0: a free port, None: not served
    dashboard_port: int | None = 0
    # `gpuyard netd` on every simulated node (served on the metrics address: needs it)
    netd: bool = True


def build_shapes(opts: UpOptions) -> list[NodeShape]:
    if opts.shapes:
        shapes = load_shapes(opts.shapes)
        if opts.cpu_nodes:
            shapes += default_shapes(0, opts.cpu_nodes)
        return shapes
    shapes = default_shapes(opts.nodes, opts.cpu_nodes)
    for s in shapes:
        s.rack = ""
    lay_out(shapes, opts.rack_size)
    return shapes


# `--set` keys for the simulated autoscaler: the AutoscalerConfig field each sets, and
# its default in the embedded cluster (shorter than the real cluster-autoscaler's, so
# that a demo shows them in minutes).
AUTOSCALER_OPTIONS = {
    "autoscaler_scan_s": (
        "scan_interval",
        Option("autoscaler_scan_s", cliargs.SECONDS, 2.0, "scan interval"),
    ),
    "autoscaler_unneeded_s": (
        "scale_down_unneeded_time",
        Option(
            "autoscaler_unneeded_s", cliargs.SECONDS_OR_OFF, 60.0, "unneeded time before scale-down"
        ),
    ),
    "autoscaler_delay_after_add_s": (
        "scale_down_delay_after_add",
        Option(
            "autoscaler_delay_after_add_s",
            cliargs.SECONDS_OR_OFF,
            60.0,
            "scale-down delay after a scale-up",
        ),
    ),
    "autoscaler_unready_s": (
        "scale_down_unready_time",
        Option(
            "autoscaler_unready_s", cliargs.SECONDS_OR_OFF, 120.0, "unready time before removal"
        ),
    ),
    "autoscaler_remediate_s": (
        "remediate_after",
        Option(
            "autoscaler_remediate_s",
            cliargs.SECONDS_OR_OFF,
            10.0,
            "time before an unhealthy node is replaced",
        ),
    ),
    "autoscaler_utilization": (
        "scale_down_utilization_threshold",
        Option("autoscaler_utilization", cliargs.SHARE, 0.5, "scale-down utilization threshold"),
    ),
    "autoscaler_preflight": (
        "preflight",
        Option(
            "autoscaler_preflight",
            cliargs.Bool(),
            True,
            "new nodes register with the preflight taint",
        ),
    ),
}


def known_options() -> dict[str, Option]:
    """Every `--set` key: the autoscaler's and those of each available component."""
    return {
        **{key: opt for key, (_, opt) in AUTOSCALER_OPTIONS.items()},
        **components.declared_options(),
    }


def autoscaler_config(opts: UpOptions) -> AutoscalerConfig:
    cfg = AutoscalerConfig(join_rate=opts.join_rate)
    for attr, opt in AUTOSCALER_OPTIONS.values():
        setattr(cfg, attr, cliargs.get(opts.options, opt))
    return cfg


class EmbeddedCluster:
    def __init__(self, opts: UpOptions) -> None:
        self.opts = opts
        self.data_dir = Path(opts.data_dir).resolve()
        self.stop_event = asyncio.Event()
        self.server: Any = None
        self.client: Any = None
        self.sim: SimCluster | None = None
        self.faults: FaultApplier | None = None
        self.autoscaler: Autoscaler | None = None
        self.taint_manager: TaintManager | None = None
        self.informers: InformerFactory | None = None
        self.started: list[str] = []
        self.missing: list[str] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._informers: list[Informer] = []
        self._kubelets: dict[str, Any] = {}
        self.url = ""
        self.metrics_url = ""
        self._metrics_server: Any = None
        self.dashboard_url = ""
        # SimCluster.progress of the nodes' registration (the CLI's progress bar)
        self.node_progress: Callable[[int, int], None] | None = None
        self._dashboard: Any = None
        self.token_files: dict[str, str] = {}
        self._netd: Any = None  # the simulated nodes' network agents (SimNetd)

    @property
    def kubeconfig(self) -> str:
        return str(self.data_dir / "kubeconfig")

    async def start(self) -> None:
        from gpuyard.apiserver.server import APIServer
        from gpuyard.kube.client import Client

        # Bad options or a bad shapes file fail here, before anything starts.
        self.opts.options = cliargs.check_settings(self.opts.options, known_options())
        shapes = build_shapes(self.opts)
        groups = parse_groups(self.opts.autoscale, shapes) if self.opts.autoscale else None
        cliargs.private_dir(str(self.data_dir))
        self.server = APIServer(
            str(self.data_dir),
            host=self.opts.host,
            port=self.opts.port,
            persist=not self.opts.in_memory,
            flow=self.opts.flow,
            default_toleration_seconds=self.opts.default_toleration_seconds,
        )
        self.url = await self.server.start()
        if self.opts.metrics_port is not None:
            from gpuyard.kube import metrics

            self._metrics_server, mport = metrics.serve(self.opts.metrics_port, self.opts.host)
            host = self.opts.host if ":" not in self.opts.host else f"[{self.opts.host}]"
            self.metrics_url = f"http://{host}:{mport}/metrics"
        self.client = Client.in_process(self.server, component="cluster")
        await self.install_defaults()
        register_taints = []
        register_labels = {}
        if self.opts.preflight:
            register_taints = [{"key": names.TAINT_PREFLIGHT, "effect": "NoSchedule"}]
            register_labels = {names.LABEL_PREFLIGHT: "pending"}
        # One pods and one nodes watch (and one of each other kind) for everything in
        # this process: the kubelets, node lifecycle, taint manager and components get
        # views of them.
        self.informers = InformerFactory(self.client, views=True)
        self.sim = SimCluster(
            self.client,
            self.data_dir,
            shapes,
            SimConfig(
                lease_seconds=self.opts.lease_seconds,
                start_delay=self.opts.start_delay,
                register_taints=register_taints,
                register_labels=register_labels,
                rack_size=self.opts.rack_size,
                mig=self.opts.mig,
            ),
            informers=self.informers,
        )
        self.sim.kubelet = self._kubelet_client
        self.sim.progress = self.node_progress
        await self.sim.start()
        from gpuyard.cluster.simmetrics import SimMetrics

        # metrics.k8s.io (`kubectl top`) from the simulated kubelets' usage
        self.server.set_metrics_provider(SimMetrics(self.sim))
        nodes = self.sim.node_informer  # the kubelets' watch of the nodes, shared
        # the node Leases, from the process's one watch of Leases
        leases = self.informers.informer(LEASES, LEASE_NS, name="node-lifecycle-leases")
        leases.start()
        self._informers.append(leases)
        lifecycle = NodeLifecycle(
            self.client,
            nodes,
            self.sim.pods,
            leases,
            grace=self.opts.node_grace,
            kubelet_ready=self.sim.post_ready,
            pod_gc_after=min(40.0, self.opts.node_grace),
        )
        self._tasks.append(asyncio.create_task(lifecycle.run(self.stop_event), name="lifecycle"))
        self.taint_manager = TaintManager(self.client, nodes, self.sim.pods)
        self._tasks.append(
            asyncio.create_task(self.taint_manager.run(self.stop_event), name="taint-manager")
        )
        if groups:
            self.sim.node_groups = groups
            self.autoscaler = Autoscaler(
                self.client, self.sim, groups, nodes, self.sim.pods, autoscaler_config(self.opts)
            )
            self._tasks.append(
                asyncio.create_task(self.autoscaler.run(self.stop_event), name="autoscaler")
            )
        self.faults = FaultApplier(self.client, self.sim)
        await self.faults.start()
        await self.start_components()
        if self._metrics_server is not None and self.opts.netd:
            await self.start_netd()
        if self.opts.dashboard_port is not None:
            await self.start_dashboard(self.opts.dashboard_port)
        self.write_state()

    async def start_netd(self) -> None:
        """`gpuyard netd` on every simulated node (gpuyard.cluster.simnetd), as the netd
        ServiceAccount; its counters (from the pods' gpuyard.io/sim-traffic) on the
        cluster's /metrics, each namespace's team from the Teams (their CRD is
        installed above)."""
        from gpuyard.cluster.simnetd import SimNetd
        from gpuyard.kube.client import Client

        assert self.informers is not None and self.sim is not None
        client = Client.in_process(self.server, component="netd", **self._token("netd"))
        teams = self.informers.informer(TEAMS, name="netd-teams", client=client)
        for inf in (teams, teams.source):
            if inf is not None:
                inf.start()
        self._informers.append(teams)
        self._netd = SimNetd(client, self.sim.node_informer, teams, self.stop_event)
        self._netd.start()

    async def start_dashboard(self, port: int) -> None:
        """The web dashboard on the process's shared watches; browsers sign in with the
        admin token (the banner's link carries it) or any token the API server knows."""
        from gpuyard.dashboard.auth import Authority
        from gpuyard.dashboard.hub import Hub
        from gpuyard.dashboard.network import NetworkRates
        from gpuyard.dashboard.server import Dashboard
        from gpuyard.kube.client import Client

        net = NetworkRates([self.metrics_url]) if self.metrics_url else None
        # as the install's dashboard ServiceAccount: it reads what it shows and asks who
        # a browser is, nothing more
        client = Client.in_process(self.server, component="dashboard", **self._token("dashboard"))
        here = asyncio.get_running_loop()
        hub = Hub(client, self.informers, network=net, client_loop=here)
        # served, and its rows kept, on a loop of its own: this one is busy with the
        # simulated kubelets (it only hands the watches' events over)
        self._dashboard = Dashboard(
            hub,
            Authority(client, client_loop=here),
            self.opts.host,
            port,
            own_loop=True,
            start_hub=True,
        )
        self.dashboard_url = await self._dashboard.start()

    def _token(self, component: str) -> dict[str, str]:
        path = self.token_files.get(component)
        return {"token_file": path} if path else {}

    def viewer_token(self) -> str:
        """A token of the read-only gpuyard-viewer ServiceAccount (the banner's
        dashboard link signs in with it), or '' when there is none."""
        path = self.token_files.get("viewer")
        if not path:
            return ""
        try:
            return Path(path).read_text().strip()
        except OSError:
            return ""

    def _kubelet_client(self, node: str) -> Any:
        """A simulated node's kubelet acts as system:node:NAME, in group system:nodes,
        within the Node authorizer's limits (its own Node, Lease and pods)."""
        from gpuyard.apiserver.authn import AUTHENTICATED, NODE_PREFIX, NODES_GROUP, UserInfo
        from gpuyard.kube.client import Client

        c = self._kubelets.get(node)
        if c is None:
            user = UserInfo(NODE_PREFIX + node, (NODES_GROUP, AUTHENTICATED))
            c = Client.in_process(self.server, component="kubelet", user=user)
            self._kubelets[node] = c
        return c

    async def install_defaults(self) -> None:
        """PriorityClasses and the CRDs of the components that ship them."""
        from gpuyard.manifests import priority_classes

        for pc in priority_classes():
            with contextlib.suppress(AlreadyExists):
                await self.client.create(pc)
        for crd in components.crd_objects():
            with contextlib.suppress(AlreadyExists):
                await self.client.create(crd)

    async def start_components(self) -> None:
        wanted = self.opts.components
        names_ = list(components.COMPONENTS) if wanted is None else wanted
        # Each component runs as the ServiceAccount `gpuyard manifests` gives it.
        await identities.install(self.client)
        token_files = await identities.issue_tokens(self.client, self.data_dir)
        self.token_files = token_files
        self._tasks.append(
            asyncio.create_task(
                identities.renew(self.client, self.data_dir, self.stop_event),
                name="identities-renew",
            )
        )
        ctx = components.Context(
            client=self.client,
            server=self.server,
            data_dir=self.data_dir,
            stop=self.stop_event,
            options=dict(self.opts.options),
            sim=self.sim,
            token_files=token_files,
            # reads of pods, nodes and the like go through the process's shared watches
            # (made as the cluster's own client); writes stay each component's own
            informers=self.informers,
        )
        for name in names_:
            if name not in components.COMPONENTS:
                raise ValueError(
                    f"unknown component {name!r}; known: {', '.join(components.COMPONENTS)}"
                )
            fn = components.resolve(name)
            if fn is None:
                self.missing.append(name)
                continue
            self.started.append(name)
            self._tasks.append(
                asyncio.create_task(components.supervise(name, fn, ctx), name=f"component-{name}")
            )

    def write_state(self) -> None:
        state = {
            "url": self.url,
            "metrics": self.metrics_url,
            "dashboard": self.dashboard_url,
            "pid": os.getpid(),
            "kubeconfig": self.kubeconfig,
            "nodes": len(self.sim.nodes) if self.sim else 0,
            "components": self.started,
            "started": time.time(),
        }
        (self.data_dir / STATE_FILE).write_text(json.dumps(state, indent=1))

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until every simulated node reports Ready."""
        from gpuyard.kube.objects import is_node_ready

        deadline = time.monotonic() + timeout
        assert self.sim is not None
        want = set(self.sim.nodes)
        while time.monotonic() < deadline:
            items = (await self.client.list(NODES, label_selector="gpuyard.io/simulated"))["items"]
            if want <= {n["metadata"]["name"] for n in items if is_node_ready(n)}:
                return
            await asyncio.sleep(0.2)
        raise TimeoutError("nodes did not all become Ready")

    async def stop(self) -> None:
        self.stop_event.set()
        if self._dashboard is not None:
            await self._dashboard.stop()  # and its hub
            self._dashboard = None
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 5)
        if self._netd is not None:
            await self._netd.stop()
            await self._netd.client.close()
            self._netd = None
        if self.faults:
            await self.faults.stop()
        if self.sim:
            await self.sim.stop()
        for inf in self._informers:
            await inf.stop()
        if self.informers is not None:
            await self.informers.stop()
        if self.client:
            await self.client.close()
        if self.server:
            await self.server.stop()
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.shutdown)
            self._metrics_server.server_close()
            self._metrics_server = None
        with contextlib.suppress(OSError):
            (self.data_dir / STATE_FILE).unlink()
