"""The balloon controller: keeps each BalloonPool's balloon pods, level-triggered.

It watches BalloonPools, Nodes, Pods and the cluster-autoscaler's status ConfigMap
(kube-system/cluster-autoscaler-status, for the node groups' maxSize), and on any change
makes each pool's balloon pods match `gpuyard.balloons.sizing.plan`: missing ordinals
are created (an evicted balloon comes back at once and waits, Pending, for room), extra
or finished ones deleted. Status (desired, running, pending, nodesHeld, evictions, size)
is written only when it changes. A balloon deleted by anyone else while it held a node
counts as an eviction.

Metrics: gpuyard_balloons_running, gpuyard_balloons_nodes_held,
gpuyard_balloons_evictions_total (by pool).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from gpuyard.balloons import sizing
from gpuyard.k8s.autoscaler import group_max_sizes
from gpuyard.kube import objects as o
from gpuyard.kube.errors import AlreadyExists, ApiError, Conflict, NotFound
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.resources import BALLOON_POOLS, CONFIGMAPS, NODES, PODS
from gpuyard.kube.waits import woken

log = logging.getLogger("gpuyard.balloons")

CA_STATUS = ("kube-system", "cluster-autoscaler-status")


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.running = Gauge(
            "gpuyard_balloons_running", "balloon pods running", ["pool"], registry=r
        )
        self.held = Gauge(
            "gpuyard_balloons_nodes_held", "nodes held by a balloon", ["pool"], registry=r
        )
        self.evictions = Counter(
            "gpuyard_balloons_evictions_total", "balloons evicted from a node", ["pool"], registry=r
        )


class BalloonController:
    def __init__(
        self,
        client: Any,
        *,
        metrics: Metrics | None = None,
        debounce: float = 0.2,
        informers: InformerFactory | None = None,
    ) -> None:
        self.client = client
        self.metrics = metrics or Metrics()
        self.debounce = debounce
        # its own informers, or views of the watches of the process it runs in
        mk = informer_maker(client, informers)
        self.pools = mk(BALLOON_POOLS, name="balloons-pools")
        self.nodes = mk(NODES, name="balloons-nodes")
        self.pods = mk(PODS, name="balloons-pods")
        self.pods.add_index("balloon", lambda p: o.labels_of(p).get(sizing.LABEL_BALLOON))
        self.ca = mk(
            CONFIGMAPS,
            CA_STATUS[0],
            field_selector=f"metadata.name={CA_STATUS[1]}",
            name="balloons-ca-status",
        )
        self._dirty = asyncio.Event()
        self._deleting: set[str] = set()
        self._evictions: dict[str, int] = {}
        self._sem = asyncio.Semaphore(32)
        self._rooms: dict[str, tuple[Any, dict[str, int]]] = {}
        self.writes = 0

    def _changed(self, *_: Any) -> None:
        self._dirty.set()

    @staticmethod
    def _pod_matters(pod: dict[str, Any]) -> bool:
        """Balloons, and the DaemonSet and mirror pods a balloon's size leaves room for."""
        return (
            sizing.LABEL_BALLOON in o.labels_of(pod)
            or o.is_daemonset_pod(pod)
            or o.is_mirror_pod(pod)
        )

    def _pod_changed(self, pod: dict[str, Any]) -> None:
        if self._pod_matters(pod):
            self._dirty.set()

    def _node_updated(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        """Only what sizing and pool membership read: labels, allocatable, Ready."""
        if (
            o.labels_of(old) != o.labels_of(new)
            or (old.get("status") or {}).get("allocatable")
            != (new.get("status") or {}).get("allocatable")
            or o.is_node_ready(old) != o.is_node_ready(new)
        ):
            self._dirty.set()

    def _pod_gone(self, pod: dict[str, Any]) -> None:
        if not self._pod_matters(pod):
            return
        self._dirty.set()
        pool = o.labels_of(pod).get(sizing.LABEL_BALLOON)
        name = o.name_of(pod)
        if not pool or o.namespace_of(pod) != sizing.NAMESPACE:
            return
        if name in self._deleting:
            self._deleting.discard(name)
            return
        if (pod.get("spec") or {}).get("nodeName") and not o.is_pod_terminal(pod):
            self._evictions[pool] = self._evictions.get(pool, 0) + 1
            self.metrics.evictions.labels(pool).inc()

    async def run(self, stop: asyncio.Event) -> None:
        for inf in (self.pools, self.ca):
            inf.add_handler(self._changed, lambda a, b: self._changed(), self._changed)
        self.nodes.add_handler(self._changed, self._node_updated, self._changed)
        self.pods.add_handler(self._pod_changed, lambda a, b: self._pod_changed(b), self._pod_gone)
        for inf in (self.pools, self.nodes, self.pods, self.ca):
            inf.start()
        try:
            for inf in (self.pools, self.nodes, self.pods, self.ca):
                await inf.wait_synced()
            for bp in self.pools.list():
                pool = (bp.get("spec") or {}).get("pool")
                if pool:
                    self._evictions[pool] = int((bp.get("status") or {}).get("evictions") or 0)
            await self._ensure_namespace()
            self._dirty.set()
            while await woken(self._dirty, stop):
                await asyncio.sleep(self.debounce)
                self._dirty.clear()
                try:
                    await self.reconcile()
                except (ApiError, OSError) as exc:
                    log.warning("balloons: reconcile failed, retrying: %s", exc)
                    await asyncio.sleep(1.0)
                    self._dirty.set()
        finally:
            for inf in (self.pools, self.nodes, self.pods, self.ca):
                await inf.stop()

    async def _ensure_namespace(self) -> None:
        with contextlib.suppress(AlreadyExists):
            await self.client.create(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": sizing.NAMESPACE}}
            )
            self.writes += 1

    async def reconcile(self) -> None:
        nodes = self.nodes.list()
        ca = self.ca.get(CA_STATUS[1], CA_STATUS[0])
        gmax = group_max_sizes(ca)
        for bp in self.pools.list():
            if (bp.get("metadata") or {}).get("deletionTimestamp"):
                continue
            await self._reconcile_pool(bp, nodes, gmax)

    async def _reconcile_pool(
        self, bp: dict[str, Any], nodes: list[dict[str, Any]], gmax: dict[str, int]
    ) -> None:
        spec = bp.get("spec") or {}
        pool = spec["pool"]
        members = sizing.pool_nodes(nodes, pool)
        requests = self._size(members)
        replicas = sizing.desired_replicas(spec, gmax, len(members))
        existing = [
            p for p in self.pods.by_index("balloon", pool) if o.namespace_of(p) == sizing.NAMESPACE
        ]
        p = sizing.plan(bp, replicas, requests, existing)
        errors = await asyncio.gather(
            *(self._create(pod) for pod in p.create), *(self._delete(n) for n in p.delete)
        )
        error = next((e for e in errors if e), None)
        await self._write_status(bp, pool, replicas, requests, existing, error)

    def _size(self, members: list[Mapping[str, Any]]) -> dict[str, int] | None:
        """sizing.balloon_requests, with each node's room cached until the node or its
        DaemonSet/mirror pods change (quantities are slow to parse at 7,500 nodes)."""
        rooms = []
        for n in members:
            if not o.is_node_ready(n):
                continue
            name = o.name_of(n)
            fixed = [
                p
                for p in self.pods.by_node(name)
                if (o.is_daemonset_pod(p) or o.is_mirror_pod(p)) and not o.is_pod_terminal(p)
            ]
            key = (
                (n.get("metadata") or {}).get("resourceVersion"),
                tuple(sorted((p.get("metadata") or {}).get("uid", "") for p in fixed)),
            )
            hit = self._rooms.get(name)
            if hit is None or hit[0] != key:
                hit = (key, sizing.node_room(n, fixed))
                self._rooms[name] = hit
            rooms.append(hit[1])
        if len(self._rooms) > 2 * len(members) + 1000:
            self._rooms.clear()
        return sizing.least_room(rooms)

    async def _create(self, pod: dict[str, Any]) -> str | None:
        """None, or why the API server refused the balloon."""
        async with self._sem:
            try:
                await self.client.create(pod)
                self.writes += 1
            except AlreadyExists:
                pass
            except ApiError as exc:
                log.warning("balloons: cannot create %s: %s", pod["metadata"]["name"], exc)
                return f"cannot create balloon pods: {exc}"
        return None

    async def _delete(self, name: str) -> None:
        async with self._sem:
            self._deleting.add(name)
            try:
                await self.client.delete(PODS, name, sizing.NAMESPACE, grace_period_seconds=0)
                self.writes += 1
            except NotFound:
                self._deleting.discard(name)

    async def _write_status(
        self,
        bp: dict[str, Any],
        pool: str,
        replicas: int,
        requests: dict[str, int] | None,
        existing: list[dict[str, Any]],
        error: str | None = None,
    ) -> None:
        live = [p for p in existing if not o.is_pod_terminal(p)]
        bound = [p for p in live if (p.get("spec") or {}).get("nodeName")]
        running = [p for p in bound if (p.get("status") or {}).get("phase") == "Running"]
        held = {p["spec"]["nodeName"] for p in bound}
        status: dict[str, Any] = {
            "desired": replicas,
            "running": len(running),
            "pending": len(live) - len(bound),
            "nodesHeld": len(held),
            "evictions": self._evictions.get(pool, 0),
        }
        if error:
            status["message"] = error
        elif requests is None:
            status["message"] = f"no Ready node in pool {pool} to size balloons from"
        else:
            status["size"] = {r: o.format_quantity(v, r) for r, v in sorted(requests.items())}
        self.metrics.running.labels(pool).set(len(running))
        self.metrics.held.labels(pool).set(len(held))
        if bp.get("status") == status:
            return
        old = bp.get("status") or {}
        patch = {**status, **{k: None for k in old if k not in status}}
        try:
            await self.client.patch_status(BALLOON_POOLS, o.name_of(bp), {"status": patch})
            self.writes += 1
        except (NotFound, Conflict):
            pass


_process_metrics: Metrics | None = None


def process_metrics() -> Metrics:
    """The balloon metrics in the process's default registry (served by `gpuyard
    controllers --metrics-port` and on `gpuyard up`'s metrics address), made once."""
    global _process_metrics
    if _process_metrics is None:
        from prometheus_client import REGISTRY

        _process_metrics = Metrics(REGISTRY)
    return _process_metrics


async def run(client: Any, stop: asyncio.Event) -> None:
    """`gpuyard controllers` entry point."""
    await BalloonController(client, metrics=process_metrics()).run(stop)
