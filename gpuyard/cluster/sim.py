"""Simulated GPU nodes and their kubelets, acting only through the Kubernetes API.

Like KWOK, `SimCluster` plays every kubelet of the embedded cluster from one place:

- it registers one Node per shape (capacity, labels, pod CIDR, addresses, optional
  register-with-taints) and one Lease per node in kube-node-lease;
- one timer loop renews the leases: every second it renews the nodes whose turn it is
  (node index modulo the lease period), so renewals are spread evenly, and nothing per
  node runs in between;
- one pod informer drives the kubelet state machine: a pod bound to a simulated node
  goes Pending -> Running after the start delay, or Failed when the kubelet's admission
  refuses it (gpuyard.cluster.admission: OutOf<resource> for any resource it requests,
  NodeAffinity, NodeName, NodePorts, TaintToleration for NoExecute taints, against the
  Node object as it is now and the pods admitted before), whoever bound it; it runs
  until deleted or for
  `gpuyard.io/sim-duration` seconds and ends Succeeded/Failed with
  `gpuyard.io/sim-exit-code` (one code, or codes by container: "main=42,sidecar=0"),
  each container terminated with its exit code as a kubelet reports it; a running pod
  that is deleted stops as a kubelet stops it: each container exits on SIGTERM after
  `gpuyard.io/sim-stop-seconds` (0 by default; by container as for the exit code;
  "never" ignores SIGTERM) with `gpuyard.io/sim-sigterm-exit-code` (143 by default;
  "0" for a program that handles SIGTERM and exits cleanly), or 137 when the grace
  period ends first, its terminated state and the pod's phase (Succeeded when every
  container exited 0, else Failed) are written, then the pod is removed; a pod with a
  deletionTimestamp that is not running is removed at once;
  a pod whose container runs `gpuyard gpu-test` ends with the report its host's
  injected faults imply (from gpuyard.health.gputest.simulate_report), marked simulated;
  a start whose status write is refused or lost is tried again, backing off;
- each kubelet reports Events as a kubelet does (source kubelet on its node): Pulled,
  Created and Started for each container it starts, Killing when a running pod is
  deleted, and a Warning with the admission's reason when it refuses a pod
  (SimConfig.events; rate limited per pod by gpuyard.kube.events); all kubelets share
  one bounded event queue written at most `events_qps` a second, so a burst of starts
  (a DaemonSet on 7,500 nodes) drops what does not fit instead of leaving minutes of
  Event writes behind it;
- node status (the kubelet's conditions, Ready=True) is posted again every
  `status_seconds` (300 s, like kubelet's report frequency), spread the same way, and at
  once when the node lifecycle controller finds a live lease on a node it had marked
  Unknown; conditions of other owners are kept (strategic merge by condition type);
- a downed node (fault node-down) stops renewing its lease and stops acting on its
  pods, exactly as a dead kubelet would; node-up resumes both.

Each node also has a simulated host directory (gpuyard.cluster.simhost) that fault
injection writes and the health agent reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from gpuyard import names
from gpuyard.apiserver.schemas import KUBERNETES_VERSION
from gpuyard.cluster import simdevices
from gpuyard.cluster.admission import Refusal, admit, pod_ports
from gpuyard.cluster.shapes import NODES_PER_RACK, NodeShape, locate, rack_size_of
from gpuyard.cluster.simhost import SimHost
from gpuyard.kube import objects as o
from gpuyard.kube.errors import AlreadyExists, ApiError, Conflict, NotFound
from gpuyard.kube.events import EventQueue, EventRecorder, involved_object
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.resources import DEVICE_CLASSES, LEASES, NODES, PODS, RESOURCE_SLICES

log = logging.getLogger("gpuyard.cluster")

LEASE_NS = "kube-node-lease"
SIM_LABEL = "gpuyard.io/simulated"
# The simulated kubelets are of the release the API server follows (no version skew).
KUBELET_VERSION = f"v{KUBERNETES_VERSION}.0-gpuyard"
RESOURCES = ("cpu", "memory", names.RESOURCE_GPU, "pods")
REMOVED_MARKER = "removed"
START_RETRY_MAX_S = 30.0  # the longest pause between tries of a refused start


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class SimConfig:
    lease_seconds: float = 10.0
    status_seconds: float = 300.0
    start_delay: float = 0.5
    gpu_test_seconds: float = 2.0
    register_taints: list[dict[str, Any]] = field(default_factory=list)
    register_labels: dict[str, str] = field(default_factory=dict)
    concurrency: int = 64
    rack_size: int = NODES_PER_RACK  # for nodes added later (the autoscaler's)
    # publish each GPU node's devices in a ResourceSlice (gpuyard.cluster.simdevices)
    dra: bool = True
    # GPUs that can be partitioned published as MIG partitionable devices on every
    # node (a node shape's `mig: true` does it for its nodes alone)
    mig: bool = False
    events: bool = True  # kubelet Events (Pulled, Created, Started, Killing, refusals)
    # every simulated kubelet's Events together: at most this many queued (more are
    # dropped and counted), written at most events_qps a second after a burst
    events_queued: int = 1000
    events_qps: float = 200.0
    events_burst: int = 500


@dataclass
class SimNode:
    index: int
    shape: NodeShape
    host: SimHost
    allocatable: dict[str, int]
    lease: dict[str, Any] | None = None
    down: bool = False
    used: dict[str, int] = field(default_factory=dict)
    pods: set[str] = field(default_factory=set)
    next_ip: int = 1
    # One lease write at a time per node: the join and the lease loop both renew, and
    # two creates of one Lease race each other into a 409.
    lease_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def name(self) -> str:
        return self.shape.name

    @property
    def node_ip(self) -> str:
        return f"172.{16 + self.index // 65536}.{self.index // 256 % 256}.{self.index % 256}"

    def pod_ip(self) -> str:
        ip = f"10.{64 + self.index // 256}.{self.index % 256}.{self.next_ip}"
        self.next_ip = self.next_ip % 253 + 1
        return ip


def node_object(n: SimNode, cfg: SimConfig) -> dict[str, Any]:
    s = n.shape
    labels = {
        names.LABEL_HOSTNAME: s.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        names.LABEL_POOL: s.pool,
        **s.topology_labels(),
        SIM_LABEL: "true",
        **cfg.register_labels,
        **s.labels,
    }
    capacity = {
        "cpu": o.format_quantity(s.cpu_milli, "cpu"),
        "memory": o.format_quantity(s.memory_bytes),
        "pods": "110",
        "ephemeral-storage": "500Gi",
    }
    if s.gpus:
        labels[names.LABEL_GPU_PRODUCT] = s.gpu_product
        labels[names.LABEL_GPU_PRESENT] = "true"  # as GPU Feature Discovery labels it
        capacity[names.RESOURCE_GPU] = str(s.gpus)
    taints = [dict(t) for t in s.taints] + [dict(t) for t in cfg.register_taints]
    cidr = f"10.{64 + n.index // 256}.{n.index % 256}.0/24"
    now = o.now_rfc3339()
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": s.name, "labels": labels},
        "spec": {"podCIDR": cidr, "podCIDRs": [cidr], **({"taints": taints} if taints else {})},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": ready_conditions(now),
            "addresses": [
                {"type": "InternalIP", "address": n.node_ip},
                {"type": "Hostname", "address": s.name},
            ],
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": KUBELET_VERSION,
                "containerRuntimeVersion": "simulated://1.0",
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "gpuyard simulated host",
                "kernelVersion": "6.1.0-gpuyard",
                "machineID": f"sim-{n.index:08d}",
                "systemUUID": f"sim-{n.index:08d}",
                "bootID": f"sim-{n.index:08d}",
            },
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        },
    }


def ready_conditions(now: str) -> list[dict[str, Any]]:
    def cond(t: str, status: str, reason: str, message: str) -> dict[str, Any]:
        return {
            "type": t,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }

    return [
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        cond(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]


def _unstarted_ephemeral(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod's ephemeral containers its status does not report yet."""
    listed = (pod.get("spec") or {}).get("ephemeralContainers") or []
    if not listed:
        return []
    seen = {
        cs.get("name")
        for cs in (pod.get("status") or {}).get("ephemeralContainerStatuses") or []
        if isinstance(cs, dict)
    }
    return [c for c in listed if isinstance(c, dict) and c.get("name") not in seen]


def _node_of(pod: dict[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def _by_container(
    value: str, containers: list[str], parse: Callable[[str], Any], default: Any, what: str
) -> dict[str, Any]:
    """One value for every container ("42"), or values by container name ("main=42,
    sidecar=0"; a container not named gets `default`). ValueError says what is wrong."""
    value = value.strip()
    if "=" not in value:
        try:
            return dict.fromkeys(containers, parse(value))
        except ValueError:
            raise ValueError(f"{value!r} is not {what}") from None
    out = dict.fromkeys(containers, default)
    for part in value.split(","):
        name, eq, v = part.strip().partition("=")
        if not eq or name not in out:
            known = ", ".join(containers)
            raise ValueError(f"{part.strip()!r} names no container of the pod ({known})")
        try:
            out[name] = parse(v)
        except ValueError:
            raise ValueError(f"{v!r} is not {what} (container {name})") from None
    return out


def exit_codes(value: str, containers: list[str]) -> dict[str, int]:
    """The exit code of each container from a `gpuyard.io/sim-exit-code` annotation: one
    code for every container ("42"), or codes by container name ("main=42,sidecar=0";
    a container not named exits 0). ValueError says what is wrong with it."""
    return _by_container(value, containers, int, 0, "an exit code")


def _seconds(v: str) -> float:
    v = v.strip()
    if v == "never":
        return float("inf")
    out = float(v)
    if not out >= 0 or out == float("inf"):  # NaN, negative, or "inf" spelt otherwise
        raise ValueError(v)
    return out


def stop_seconds(value: str, containers: list[str]) -> dict[str, float]:
    """How long each container takes to stop after SIGTERM, from a
    `gpuyard.io/sim-stop-seconds` annotation: one value for every container ("20") or
    values by container ("main=20,sidecar=0"; a container not named stops at once);
    "never": it ignores SIGTERM. ValueError says what is wrong with it."""
    return _by_container(value, containers, _seconds, 0.0, 'a number of seconds or "never"')


# A container that stops on SIGTERM exits 128+15, one killed when the grace period runs
# out 128+9, as a shell or any program without a SIGTERM handler reports.
EXIT_SIGTERM = 143
EXIT_SIGKILL = 137


def sigterm_exit_codes(value: str, containers: list[str]) -> dict[str, int]:
    """The exit code each container reports when it stops on SIGTERM, from a
    `gpuyard.io/sim-sigterm-exit-code` annotation: one code for every container ("0")
    or codes by container ("main=0"; a container not named exits 143, as a program
    without a SIGTERM handler). ValueError says what is wrong with it."""
    return _by_container(value, containers, _exit_code, EXIT_SIGTERM, "an exit code (0-255)")


def _exit_code(v: str) -> int:
    code = int(v)
    if not 0 <= code <= 255:
        raise ValueError(v)
    return code


def termination(
    pod: dict[str, Any], now: datetime
) -> tuple[float, dict[str, int], dict[str, float]]:
    """For a running pod being deleted: the seconds from `now` until its last container
    has stopped, each container's exit code and when it stopped (epoch seconds). Each
    gets SIGTERM when the deletion began (deletionTimestamp less
    deletionGracePeriodSeconds) and stops after its `gpuyard.io/sim-stop-seconds` with
    its `gpuyard.io/sim-sigterm-exit-code` (143 unless said), or is killed when the
    grace period ends (137)."""
    md = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    containers = [c.get("name", "main") for c in spec.get("containers") or []]
    grace = md.get("deletionGracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds", 30)
    grace = max(0.0, float(grace or 0))
    ann = md.get("annotations") or {}
    try:
        stops = stop_seconds(ann.get(names.ANN_SIM_STOP_SECONDS, "0"), containers)
    except ValueError as exc:
        log.warning("pod %s: bad %s: %s", o.key_of(pod), names.ANN_SIM_STOP_SECONDS, exc)
        stops = dict.fromkeys(containers, 0.0)
    try:
        on_term = sigterm_exit_codes(
            ann.get(names.ANN_SIM_SIGTERM_EXIT_CODE, str(EXIT_SIGTERM)), containers
        )
    except ValueError as exc:
        log.warning("pod %s: bad %s: %s", o.key_of(pod), names.ANN_SIM_SIGTERM_EXIT_CODE, exc)
        on_term = dict.fromkeys(containers, EXIT_SIGTERM)
    ends = o.parse_time(md.get("deletionTimestamp"))
    began = (ends.timestamp() - grace) if ends else now.timestamp()
    stopped = {c: began + min(s, grace) for c, s in stops.items()}
    codes = {c: on_term[c] if s < grace else EXIT_SIGKILL for c, s in stops.items()}
    last = max(stopped.values(), default=began)
    return max(0.0, last - now.timestamp()), codes, stopped


def is_gpu_test(pod: dict[str, Any]) -> bool:
    for c in (pod.get("spec") or {}).get("containers") or []:
        words = [str(w) for w in (c.get("command") or []) + (c.get("args") or [])]
        if any("gpu-test" in w for w in words):
            return True
    return False


class SimCluster:
    """All simulated nodes and kubelets of one embedded cluster."""

    def __init__(
        self,
        client: Any,
        data_dir: str | Path,
        shapes: list[NodeShape],
        config: SimConfig | None = None,
        informers: InformerFactory | None = None,
    ) -> None:
        self.client = client
        # The client each node's kubelet writes with: by default the cluster's; `gpuyard
        # up` makes it one acting as system:node:NAME (the Node authorizer's limits).
        self.kubelet: Callable[[str], Any] = lambda node: client
        self._recorders: dict[str, EventRecorder] = {}  # node -> its kubelet's Events
        self.cfg = config or SimConfig()
        self.event_queue = EventQueue(
            max_queued=self.cfg.events_queued,
            senders=8,
            qps=self.cfg.events_qps,
            burst=self.cfg.events_burst,
        )
        self.hosts_dir = Path(data_dir) / "hosts"
        self.nodes: dict[str, SimNode] = {}
        for i, s in enumerate(shapes):
            alloc = {
                "cpu": s.cpu_milli,
                "memory": s.memory_bytes,
                names.RESOURCE_GPU: s.gpus,
                "pods": 110,
            }
            self.nodes[s.name] = SimNode(i, s, SimHost(self.hosts_dir / s.name), alloc)
        # its own watches, or views of the process's (gpuyard up)
        mk = informer_maker(client, informers)
        self.pods = mk(PODS, name="sim-kubelet-pods")
        # the Node objects as they are now (labels, taints, allocatable) for admission;
        # shared with the node lifecycle controller in gpuyard up
        self.node_informer = mk(NODES, name="sim-kubelet-nodes")
        # node -> (resourceVersion, allocatable) of the Node object last admitted against
        self._alloc: dict[str, tuple[str, dict[str, int]]] = {}
        # key -> (node, requests, host ports) of the pods admitted
        self._pod_state: dict[str, tuple[str, dict[str, int], tuple[Any, ...]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._start_failures: dict[str, int] = {}  # pod key -> status writes refused in a row
        # deleted pods whose containers were sent SIGTERM, and those removed (or being)
        self._stopping: set[str] = set()
        self._removing: set[str] = set()
        self._busy: set[str] = set()
        # the lease loop and the kubelet's work in flight (each leaves the set when done:
        # thousands are in flight while a DaemonSet starts on every node)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sem = asyncio.Semaphore(self.cfg.concurrency)
        # Heartbeats (Lease renewals, periodic status posts) have writes in flight of their
        # own: each kubelet renews its Lease whatever its pods do, and behind the pod
        # starts of a DaemonSet on 7,500 nodes (thousands waiting on _sem) the renewals
        # came too late, the node lifecycle marked every node unreachable and its
        # 15,000 writes held the loop further.
        self._beat_sem = asyncio.Semaphore(self.cfg.concurrency)
        self.started_at = 0.0
        self.writes = 0
        # (steps done since the last call, all steps): called with 0 once the Node,
        # Lease and ResourceSlice writes of start() are known, then with 1 per node's
        # writes done (a progress bar for thousands of nodes)
        self.progress: Callable[[int, int], None] | None = None
        self._next_index = len(shapes)
        self.node_groups: dict[str, Any] = {}  # the autoscaler's, when it runs
        self._buckets: list[list[SimNode]] = []
        self._status_buckets: list[list[SimNode]] = []

    # ------------------------------------------------------------------ start/stop

    async def start(self) -> None:
        self.started_at = time.monotonic()
        for name, n in list(self.nodes.items()):
            if (n.host.path / REMOVED_MARKER).exists():  # scaled down before a restart
                del self.nodes[name]
                continue
            n.host.ensure(n.shape.gpus, n.shape.gpu_product)
            n.down = (n.host.path / "down").exists()
        period = max(1, int(round(self.cfg.lease_seconds)))
        status_period = max(period, int(round(self.cfg.status_seconds)))
        self._buckets = [[] for _ in range(period)]
        self._status_buckets = [[] for _ in range(status_period)]
        for n in self.nodes.values():
            self._place(n)
        if self.cfg.dra and any(n.shape.gpus for n in self.nodes.values()):
            with contextlib.suppress(AlreadyExists):
                await self.client.create(simdevices.device_class(), res=DEVICE_CLASSES)
            if any(self._mig(n) for n in self.nodes.values()):
                with contextlib.suppress(AlreadyExists):
                    await self.client.create(simdevices.mig_device_class(), res=DEVICE_CLASSES)
        await self.register_nodes()
        self.node_informer.start()
        await self.node_informer.wait_synced()
        self.pods.add_handler(self._on_pod, lambda old, new: self._on_pod(new), self._on_pod_delete)
        self.pods.start()
        await self.pods.wait_synced()
        self._tasks.add(asyncio.create_task(self._lease_loop(), name="sim-leases"))

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for h in self._timers.values():
            h.cancel()
        await self.pods.stop()
        await self.node_informer.stop()

    async def _bounded(self, coro: Any) -> Any:
        async with self._sem:
            return await coro

    async def _beat(self, coro: Any) -> Any:
        async with self._beat_sem:
            return await coro

    async def register_nodes(self) -> None:
        """Create every missing Node and Lease; adopt those already there (restart)."""
        existing = {
            x["metadata"]["name"]
            for x in (await self.client.list(NODES, label_selector=SIM_LABEL))["items"]
        }
        leases = {
            x["metadata"]["name"]: x for x in (await self.client.list(LEASES, LEASE_NS))["items"]
        }
        slices: set[str] = set()
        if self.cfg.dra:
            slices = {
                x["metadata"]["name"] for x in (await self.client.list(RESOURCE_SLICES))["items"]
            }
        todo = []
        for n in self.nodes.values():
            n.lease = leases.get(n.name)
            if n.name not in existing:
                todo.append(self._bounded(self._register(n)))
            else:
                if n.lease is None and not n.down:
                    todo.append(self._bounded(self._renew(n)))
                if self.cfg.dra and n.shape.gpus and not slices.issuperset(self._slice_names(n)):
                    todo.append(self._bounded(self._publish(n)))
        progress = self.progress
        if progress is not None:
            progress(0, len(todo))

            async def counted(c: Any) -> Any:
                out = await c
                progress(1, len(todo))
                return out

            todo = [counted(c) for c in todo]
        for i in range(0, len(todo), 1000):
            await asyncio.gather(*todo[i : i + 1000])

    async def _register(self, n: SimNode) -> None:
        uid = ""
        try:
            got = await self.kubelet(n.name).create(node_object(n, self.cfg))
            uid = (got.get("metadata") or {}).get("uid") or ""
            self.writes += 1
        except ApiError as exc:
            if exc.status != 409:
                raise
        if self.cfg.dra and n.shape.gpus:
            await self._publish(n, uid)
        if not n.down:
            await self._renew(n)

    async def _publish(self, n: SimNode, uid: str = "") -> None:
        """The node's GPUs as DRA devices (its driver's ResourceSlice)."""
        labels = {**self.cfg.register_labels, **n.shape.labels}
        for obj in simdevices.resource_slices(n.shape, uid, labels, self._mig(n)):
            try:
                await self.client.create(obj)
                self.writes += 1
            except AlreadyExists:
                pass

    def _mig(self, n: SimNode) -> bool:
        return (self.cfg.mig or n.shape.mig) and simdevices.can_partition(n.shape)

    def _slice_names(self, n: SimNode) -> list[str]:
        return simdevices.slice_names(n.shape, self._mig(n))

    # ------------------------------------------------------------------ leases

    def _lease_obj(self, n: SimNode) -> dict[str, Any]:
        now = micro_now()
        if n.lease is None:
            return {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": n.name, "namespace": LEASE_NS},
                "spec": {
                    "holderIdentity": n.name,
                    "leaseDurationSeconds": 40,
                    "renewTime": now,
                },
            }
        lease = dict(n.lease)
        lease["spec"] = {**(lease.get("spec") or {}), "renewTime": now}
        return lease

    async def _renew(self, n: SimNode) -> None:
        async with n.lease_lock:
            await self._renew_locked(n)

    async def _renew_locked(self, n: SimNode) -> None:
        obj = self._lease_obj(n)
        try:
            if n.lease is None:
                try:
                    n.lease = await self.kubelet(n.name).create(obj)
                except ApiError as exc:
                    if exc.status != 409:
                        raise
                    n.lease = await self.kubelet(n.name).get(LEASES, n.name, LEASE_NS)
                    n.lease = await self.kubelet(n.name).replace(self._lease_obj(n))
            else:
                n.lease = await self.kubelet(n.name).replace(obj)
        except (Conflict, NotFound):
            n.lease = await self.kubelet(n.name).get_or_none(LEASES, n.name, LEASE_NS)
            n.lease = await (
                self.kubelet(n.name).replace if n.lease else self.kubelet(n.name).create
            )(self._lease_obj(n))
        self.writes += 1

    async def _lease_loop(self) -> None:
        """Renew every lease once a period and post every node's status once every
        `status_seconds`, a slice of the nodes each second (no per-node timers)."""
        buckets = self._buckets
        status_buckets = self._status_buckets
        period = len(buckets)
        status_period = len(status_buckets)
        tick = 0
        next_at = time.monotonic()
        while True:
            next_at += 1.0
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            batch = [n for n in buckets[tick % period] if not n.down]
            posts = [n for n in status_buckets[tick % status_period] if not n.down]
            tick += 1
            results = await asyncio.gather(
                *(self._beat(self._renew(n)) for n in batch),
                *(self._beat(self.post_ready(n.name, transition=False)) for n in posts),
                return_exceptions=True,
            )
            for r in results:
                if isinstance(r, Exception):
                    log.warning("lease renewal or status update failed: %s", r)

    def _place(self, n: SimNode) -> None:
        """Put a node in its lease and status buckets."""
        period = len(self._buckets)
        status_period = len(self._status_buckets)
        self._buckets[n.index % period].append(n)
        # Spread status posts over the period, away from the start-up moment.
        self._status_buckets[(n.index * 7919 + status_period // 2) % status_period].append(n)

    # ------------------------------------------------------------------ nodes joining, leaving

    async def add_node(
        self,
        shape: NodeShape,
        taints: list[dict[str, Any]] | None = None,
        labels: dict[str, str] | None = None,
        register: bool = True,
    ) -> SimNode:
        """A new simulated node (a machine the autoscaler bought): its host, its Node
        (with `taints` and `labels` besides the shape's) and its Lease. `register=False`
        adopts a Node that is already in the API (after a restart)."""
        if shape.name in self.nodes:
            raise ValueError(f"a simulated node named {shape.name!r} exists")
        index = self._next_index
        self._next_index += 1
        if not shape.rack:
            size = rack_size_of(shape, self.cfg.rack_size)
            locate(shape, index // size, index % size)
        shape.taints = [*shape.taints, *(taints or [])]
        shape.labels = {**shape.labels, **(labels or {})}
        alloc = {
            "cpu": shape.cpu_milli,
            "memory": shape.memory_bytes,
            names.RESOURCE_GPU: shape.gpus,
            "pods": 110,
        }
        n = SimNode(index, shape, SimHost(self.hosts_dir / shape.name), alloc)
        n.host.ensure(shape.gpus, shape.gpu_product)
        (n.host.path / REMOVED_MARKER).unlink(missing_ok=True)
        self.nodes[shape.name] = n
        if self._buckets:
            self._place(n)
        if register:
            await self._bounded(self._join(n))
        else:
            n.lease = await self.client.get_or_none(LEASES, n.name, LEASE_NS)
            for pod in self.pods.by_node(n.name):
                self._on_pod(pod)
        return n

    async def _join(self, n: SimNode) -> None:
        """A kubelet's first moments on a new machine, request for request: register
        the Node, read it back, post its status, take its Lease, and list the pods
        bound to it (its pod reflector's initial list)."""
        await self._register(n)
        await self.kubelet(n.name).get(NODES, n.name)
        await self.post_ready(n.name)
        await self.kubelet(n.name).list(PODS, field_selector=f"spec.nodeName={n.name}")

    async def remove_node(self, name: str) -> None:
        """The machine is gone: its kubelet stops, its Node and Lease are deleted, and
        pods still bound to it are removed (what pod garbage collection does for pods
        of a node that no longer exists)."""
        n = self.nodes.pop(name, None)
        if n is None:
            raise KeyError(f"no simulated node named {name!r}")
        n.down = True
        (n.host.path / REMOVED_MARKER).touch()
        for b in (*self._buckets, *self._status_buckets):
            if n in b:
                b.remove(n)
        for key in list(n.pods):
            self._release(key)
        with contextlib.suppress(NotFound):
            await self.client.delete(NODES, name)
            self.writes += 1
        with contextlib.suppress(NotFound):
            await self.client.delete(LEASES, name, LEASE_NS)
            self.writes += 1
        if self.cfg.dra and n.shape.gpus:
            for sname in self._slice_names(n):
                with contextlib.suppress(NotFound):
                    await self.client.delete(RESOURCE_SLICES, sname)
                    self.writes += 1
        for pod in self.pods.by_node(name):
            md = pod["metadata"]
            h = self._timers.pop(o.key_of(pod), None)
            if h:
                h.cancel()
            with contextlib.suppress(NotFound):
                await self.client.delete(
                    PODS, md["name"], md.get("namespace"), grace_period_seconds=0
                )
                self.writes += 1

    async def post_ready(self, node: str, transition: bool = True) -> None:
        """The kubelet's status update: its own conditions, Ready=True, fresh heartbeat.

        A strategic merge patch keyed by condition type, so conditions other components
        own (health checks) are left as they are. `transition=False` (a periodic
        heartbeat) keeps each condition's lastTransitionTime. Nothing for a downed node."""
        n = self.nodes.get(node)
        if n is None or n.down:
            return
        conds = ready_conditions(o.now_rfc3339())
        if not transition:
            for c in conds:
                del c["lastTransitionTime"]
        with contextlib.suppress(NotFound):
            await self.kubelet(n.name).patch_status(
                NODES, n.name, {"status": {"conditions": conds}}, patch_type="strategic"
            )
            self.writes += 1

    # ------------------------------------------------------------------ node up/down

    async def set_down(self, node: str, down: bool) -> None:
        n = self.nodes.get(node)
        if n is None:
            raise KeyError(f"no simulated node named {node!r}")
        marker = n.host.path / "down"
        if down:
            n.down = True
            marker.touch()
            return
        marker.unlink(missing_ok=True)
        if not n.down:
            return
        n.down = False
        await self._renew(n)
        # The kubelet comes back and posts a Ready status at once.
        await self.post_ready(n.name)
        for pod in self.pods.by_node(n.name):
            self._on_pod(pod)

    # ------------------------------------------------------------------ kubelet

    def _on_pod(self, pod: dict[str, Any]) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        n = self.nodes.get(node or "")
        if n is None or n.down:
            return
        key = o.key_of(pod)
        md = pod.get("metadata") or {}
        phase = (pod.get("status") or {}).get("phase") or "Pending"
        if md.get("deletionTimestamp"):
            self._release(key)
            if key in self._removing:
                return  # our delete is on its way
            if phase == "Running" or key in self._stopping:
                self._arm_stop(key, pod)
            else:
                self._spawn(key + "#delete", self._finalise(pod))
            return
        if phase in ("Succeeded", "Failed"):
            self._release(key)
            return
        if phase == "Running":
            self._account(key, n, pod)
            self._arm_finish(key, pod)
            if _unstarted_ephemeral(pod):
                self._spawn(key + "#ephemeral", self._start_ephemeral(key))
            return
        if key not in self._pod_state and key not in self._timers:
            self._timers[key] = asyncio.get_running_loop().call_later(
                self.cfg.start_delay, lambda: self._spawn(key, self._start(key))
            )

    def _on_pod_delete(self, pod: dict[str, Any]) -> None:
        key = o.key_of(pod)
        self._release(key)
        self._start_failures.pop(key, None)
        self._stopping.discard(key)
        self._removing.discard(key)
        for k in (key, key + "#stop"):
            h = self._timers.pop(k, None)
            if h:
                h.cancel()

    def _arm_stop(self, key: str, pod: dict[str, Any]) -> None:
        """A running pod being deleted: its containers stop (now, or when the last one
        has, by the grace period as it is now: a second delete may shorten it)."""
        h = self._timers.pop(key, None)  # it will not finish on its own any more
        if h:
            h.cancel()
        if key not in self._stopping:  # SIGTERM to every container
            self._stopping.add(key)
            for c in (pod.get("spec") or {}).get("containers") or []:
                name = c.get("name", "main")
                self._event(pod, "Normal", "Killing", f"Stopping container {name}", name)
        delay, _, _ = termination(pod, datetime.now(UTC))
        if delay <= 0:
            stop = self._timers.pop(key + "#stop", None)
            if stop:
                stop.cancel()
            self._spawn(key + "#delete", self._stop(key))
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        stop = self._timers.get(key + "#stop")
        if stop is not None and not stop.cancelled() and stop.when() <= when:
            return
        if stop is not None:
            stop.cancel()
        self._timers[key + "#stop"] = loop.call_at(
            when, lambda: self._spawn(key + "#delete", self._stop(key))
        )

    def _spawn(self, key: str, coro: Any) -> None:
        if key in self._busy:
            coro.close()
            return
        self._busy.add(key)

        async def run() -> None:
            try:
                await self._bounded(coro)
            except NotFound:
                pass
            except Exception as exc:  # keep the kubelet loop alive
                log.warning("simulated kubelet: %s: %s", key, exc)
            finally:
                self._busy.discard(key)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _account(self, key: str, n: SimNode, pod: dict[str, Any]) -> None:
        if key in self._pod_state:
            return
        req = o.pod_requests(pod)
        req["pods"] = 1
        self._pod_state[key] = (n.name, req, pod_ports(pod))
        for r, v in req.items():
            n.used[r] = n.used.get(r, 0) + v
        n.pods.add(key)

    def _release(self, key: str) -> None:
        st = self._pod_state.pop(key, None)
        if st is None:
            return
        n = self.nodes.get(st[0])
        if n is None:
            return
        for r, v in st[1].items():
            n.used[r] = n.used.get(r, 0) - v
        n.pods.discard(key)

    def _acting_on(self, key: str, phases: tuple[str | None, ...]) -> tuple[Any, SimNode] | None:
        """The pod (in one of `phases`, not being deleted) and its node, when this
        kubelet should act on it now: the node still exists and is not down."""
        self._timers.pop(key, None)
        pod = self.pods.cache.get(key)
        if pod is None or (pod.get("status") or {}).get("phase") not in phases:
            return None
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            return None
        n = self.nodes.get((pod.get("spec") or {}).get("nodeName") or "")
        if n is None or n.down:
            return None
        return pod, n

    async def _start(self, key: str) -> None:
        got = self._acting_on(key, (None, "Pending"))
        if got is None:
            return
        pod, n = got
        refusal = self.admission(pod, n)
        if refusal is not None:
            await self._reject(pod, refusal)
            return
        self._account(key, n, pod)
        now = o.now_rfc3339()
        pod_ip = n.pod_ip()
        status = {
            "phase": "Running",
            "hostIP": n.node_ip,
            "hostIPs": [{"ip": n.node_ip}],
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": now,
            "qosClass": "Burstable",
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": now}
                for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            "containerStatuses": [
                {
                    "name": c.get("name", "main"),
                    "image": c.get("image", ""),
                    "imageID": f"sim://{c.get('image', '')}",
                    "containerID": f"sim://{key.replace('/', '-')}-{c.get('name', 'main')}",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
                for c in (pod.get("spec") or {}).get("containers") or []
            ],
        }
        try:
            await self.kubelet(_node_of(pod)).patch_status(
                PODS, pod["metadata"]["name"], {"status": status}, o.namespace_of(pod)
            )
        except NotFound:
            self._release(key)
            raise
        except Exception:
            # A refused or lost status write is not the end of it: like kubelet's status
            # manager, try again (backing off) from the newest version of the pod.
            self._release(key)
            self._retry_start(key)
            raise
        self._start_failures.pop(key, None)
        self.writes += 1
        self._container_events(pod)
        self._arm_finish(key, {**pod, "status": status})

    async def _start_ephemeral(self, key: str) -> None:
        """Ephemeral containers added to a running pod (kubectl debug) start, as a
        kubelet starts them: a running status for each one not yet reported."""
        pod = self.pods.cache.get(key)  # (not _acting_on: it takes the finish timer)
        if pod is None or (pod.get("status") or {}).get("phase") != "Running":
            return
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            return
        n = self.nodes.get(_node_of(pod))
        if n is None or n.down:
            return
        new = _unstarted_ephemeral(pod)
        if not new:
            return
        now = o.now_rfc3339()
        statuses = list((pod.get("status") or {}).get("ephemeralContainerStatuses") or [])
        for c in new:
            name = c.get("name", "")
            statuses.append(
                {
                    "name": name,
                    "image": c.get("image", ""),
                    "imageID": f"sim://{c.get('image', '')}",
                    "containerID": f"sim://{key.replace('/', '-')}-{name}",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
            )
        await self.kubelet(_node_of(pod)).patch_status(
            PODS,
            pod["metadata"]["name"],
            {"status": {"ephemeralContainerStatuses": statuses}},
            o.namespace_of(pod),
        )
        self.writes += 1

    def _retry_start(self, key: str) -> None:
        if key in self._timers:
            return
        failures = self._start_failures[key] = self._start_failures.get(key, 0) + 1
        delay = min(START_RETRY_MAX_S, max(self.cfg.start_delay, 0.5) * 2 ** (failures - 1))
        self._timers[key] = asyncio.get_running_loop().call_later(
            delay, lambda: self._spawn(key, self._start(key))
        )

    def admission(self, pod: dict[str, Any], n: SimNode) -> Refusal | None:
        """The kubelet's admission of a pod bound to this node (see admission.py),
        against the Node object as the kubelet sees it now (its shape's until the
        object is seen) and the pods it admitted."""
        node = self.node_informer.cache.get(n.name) or node_object(n, self.cfg)
        rv = str((node.get("metadata") or {}).get("resourceVersion") or "")
        got = self._alloc.get(n.name)
        if got is None or got[0] != rv or not rv:
            # parsed once per version of the Node object, not once per pod started
            alloc = o.node_allocatable(node) if node.get("status") else dict(n.allocatable)
            got = self._alloc[n.name] = (rv, alloc)
        me = o.key_of(pod)
        bound = (
            [
                port
                for k in n.pods
                if k != me and k in self._pod_state
                for port in self._pod_state[k][2]
            ]
            if pod_ports(pod)
            else []
        )
        return admit(pod, node, got[1], n.used, bound)

    async def _reject(self, pod: dict[str, Any], refusal: Refusal) -> None:
        await self.kubelet(_node_of(pod)).patch_status(
            PODS,
            pod["metadata"]["name"],
            {"status": {"phase": "Failed", "reason": refusal.reason, "message": refusal.message}},
            o.namespace_of(pod),
        )
        self.writes += 1
        self._event(pod, "Warning", refusal.reason, refusal.message)

    def _arm_finish(self, key: str, pod: dict[str, Any]) -> None:
        if key in self._timers:
            return
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        gpu_test = is_gpu_test(pod)
        dur_s = ann.get(names.ANN_SIM_DURATION)
        if dur_s is None and not gpu_test:
            return
        try:
            duration = float(dur_s) if dur_s is not None else self.cfg.gpu_test_seconds
        except ValueError:
            log.warning(
                "pod %s: %s=%r is not a number of seconds", key, names.ANN_SIM_DURATION, dur_s
            )
            return
        started = o.parse_time((pod.get("status") or {}).get("startTime"))
        elapsed = (datetime.now(UTC) - started).total_seconds() if started else 0.0
        delay = max(0.0, duration - elapsed)
        self._timers[key] = asyncio.get_running_loop().call_later(
            delay, lambda: self._spawn(key + "#finish", self._finish(key))
        )

    def _outcome(self, pod: dict[str, Any], n: SimNode) -> tuple[dict[str, int], str]:
        """Each container's exit code (by name) and the termination message."""
        containers = [
            c.get("name", "main") for c in (pod.get("spec") or {}).get("containers") or []
        ]
        if is_gpu_test(pod):
            from gpuyard.health.gputest import simulate_report  # torch stays lazy there

            report, code = simulate_report(
                n.host, expected_gpus=n.shape.gpus, product=n.shape.gpu_product
            )
            return dict.fromkeys(containers, code), orjson.dumps(report).decode()
        ann = (pod.get("metadata") or {}).get("annotations") or {}
        try:
            return exit_codes(ann.get(names.ANN_SIM_EXIT_CODE, "0"), containers), ""
        except ValueError as exc:
            return dict.fromkeys(containers, 1), f"bad {names.ANN_SIM_EXIT_CODE} annotation: {exc}"

    async def _finish(self, key: str) -> None:
        got = self._acting_on(key, ("Running",))
        if got is None:
            return
        pod, n = got
        codes, message = self._outcome(pod, n)
        await self._terminate(pod, codes, message)
        self._release(key)

    async def _terminate(
        self,
        pod: dict[str, Any],
        codes: dict[str, int],
        message: str,
        finished: dict[str, str] | None = None,
    ) -> None:
        """Write the pod's end: each container terminated with its exit code (reason
        Completed for 0, else Error) at its `finished` time (default now), Ready false,
        phase Failed if any code is not 0."""
        now = o.now_rfc3339()
        statuses = []
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            name = cs.get("name", "main")
            code = codes.get(name, 0)
            term: dict[str, Any] = {
                "exitCode": code,
                "reason": "Completed" if code == 0 else "Error",
                "startedAt": ((cs.get("state") or {}).get("running") or {}).get("startedAt", now),
                "finishedAt": (finished or {}).get(name, now),
            }
            if message:
                term["message"] = message
            if cs.get("containerID"):
                term["containerID"] = cs["containerID"]
            statuses.append({**cs, "ready": False, "started": False, "state": {"terminated": term}})
        conds = [
            {
                "type": t,
                "status": "True" if t in ("PodScheduled", "Initialized") else "False",
                "lastTransitionTime": now,
                **({} if t in ("PodScheduled", "Initialized") else {"reason": "PodCompleted"}),
            }
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ]
        # Conditions of other writers stay (the list is replaced whole): DisruptionTarget
        # from an eviction or the taint manager is what a Job's podFailurePolicy reads.
        ours = {c["type"] for c in conds}
        conds += [
            c
            for c in (pod.get("status") or {}).get("conditions") or []
            if c.get("type") not in ours
        ]
        phase = "Failed" if any(codes.values()) else "Succeeded"
        await self.kubelet(_node_of(pod)).patch_status(
            PODS,
            pod["metadata"]["name"],
            {"status": {"phase": phase, "conditions": conds, "containerStatuses": statuses}},
            o.namespace_of(pod),
        )
        self.writes += 1

    async def _stop(self, key: str) -> None:
        """A deleted running pod's containers have stopped (or were killed): report how
        they ended, then remove the pod."""
        self._timers.pop(key + "#stop", None)
        pod = self.pods.cache.get(key)
        if pod is None or not (pod.get("metadata") or {}).get("deletionTimestamp"):
            return
        n = self.nodes.get(_node_of(pod))
        if n is None or n.down:
            return  # a dead kubelet reports nothing; the pod waits for a force delete
        if (pod.get("status") or {}).get("phase") == "Running":
            now = datetime.now(UTC)
            _, codes, stopped = termination(pod, now)
            at = {c: _rfc3339(min(t, now.timestamp())) for c, t in stopped.items()}
            try:
                await self._terminate(pod, codes, "", at)
            except ApiError as exc:  # the pod goes all the same, as its containers have
                log.info("simulated kubelet: %s: how its containers ended: %s", key, exc)
        await self._finalise(pod)

    async def _finalise(self, pod: dict[str, Any]) -> None:
        """Graceful deletion, once no container runs: the kubelet removes the pod."""
        md = pod["metadata"]
        key = o.key_of(pod)
        self._removing.add(key)
        try:
            await self.kubelet(_node_of(pod)).delete(
                PODS,
                md["name"],
                md.get("namespace"),
                grace_period_seconds=0,
                preconditions={"uid": md.get("uid")} if md.get("uid") else None,
            )
            self.writes += 1
        except NotFound:
            pass
        except Exception:
            self._removing.discard(key)  # the next change of the pod tries again
            raise

    # ------------------------------------------------------------------ events

    def _event(
        self,
        pod: dict[str, Any],
        type_: str,
        reason: str,
        message: str,
        container: str | None = None,
    ) -> None:
        """An Event from the pod's node's kubelet (about one container when named)."""
        if not self.cfg.events:
            return
        node = _node_of(pod)
        rec = self._recorders.get(node)
        if rec is None:
            rec = self._recorders[node] = EventRecorder(
                self.kubelet(node), "kubelet", host=node, queue=self.event_queue
            )
        ref = involved_object({"apiVersion": "v1", "kind": "Pod", **pod})
        if container is not None:
            ref["fieldPath"] = f"spec.containers{{{container}}}"
        rec.emit(ref, type_, reason, message)

    def _container_events(self, pod: dict[str, Any]) -> None:
        for c in (pod.get("spec") or {}).get("containers") or []:
            name, image = c.get("name", "main"), c.get("image", "")
            self._event(
                pod,
                "Normal",
                "Pulled",
                f'Container image "{image}" already present on machine',
                name,
            )
            self._event(pod, "Normal", "Created", f"Created container: {name}", name)
            self._event(pod, "Normal", "Started", f"Started container {name}", name)

    # ------------------------------------------------------------------ helpers

    def host(self, node: str) -> SimHost:
        n = self.nodes.get(node)
        if n is None:
            raise KeyError(f"no simulated node named {node!r}")
        return n.host
