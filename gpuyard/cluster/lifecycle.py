"""Node lifecycle for the embedded cluster (what kube-controller-manager does on a real one).

Every `period` seconds it looks at each node's last heartbeat, from the caches of a
Leases informer (kube-node-lease) and the nodes informer, as kube-controller-manager
does: no request per pass (a list of 7,500 Leases every 5 s held the process's loop
for its length, each time), the watch's 750 renewals a second only update the cache.
The heartbeat is the newest of the Lease's renewTime, the Ready condition's
lastHeartbeatTime (a status post) and the node's creation. As kube-controller-manager
does, it measures the grace period on its own clock from the moment it saw that heartbeat change (or first saw the node),
not from the timestamp written in it: a node that has just registered and whose Lease
is not written yet (a kubelet creates its Node first) is not unreachable because its
Lease is a moment behind, and after a restart of the cluster every node has a grace
period to renew before the old timestamps count against it.

- a node without a new heartbeat for the grace period gets Ready=Unknown (reason
  NodeStatusUnknown) and the taint node.kubernetes.io/unreachable:NoExecute;
- the taints come at kube-controller-manager's rates, per zone (topology.kubernetes.io/
  zone) by its state: 0.1 nodes a second (--node-eviction-rate) in a normal zone and
  in one with no ready node; 0.01 (--secondary-node-eviction-rate) in a zone where more
  than 2 and at least 55% of the nodes are not ready (--unhealthy-zone-threshold), none
  there in a cluster of 50 nodes or fewer; and none at all while no zone has a ready
  node (the control plane, not the nodes, is then taken to be the trouble: when a
  busy machine starves the simulated kubelets' Lease renewals, every node goes stale
  at once, and tainting them all, then untainting them, doubled the writes that
  starved it);
- pods on a tainted node that do not tolerate the taint are deleted (graceful: they stay
  Terminating until the kubelet comes back, as on a real cluster); a toleration with
  tolerationSeconds delays that by its seconds;
- when the lease is renewed again on a node marked Unknown, the kubelet (the `kubelet_ready`
  callback: the simulator) posts Ready=True, and then the taint is removed.

Pods bound to a node that no longer exists (deleted by a person, or by the autoscaler)
are deleted once it has been gone for `pod_gc_after` seconds, as the pod garbage
collector does.

Only the kubelet's own conditions (Ready, MemoryPressure, DiskPressure, PIDPressure) are
set to Unknown, by a strategic merge patch keyed by condition type, so conditions other
components own survive. Taint changes carry the node's resourceVersion: a concurrent
change by someone else makes the write fail and the next pass retries on fresh data.
Only nodes that changed are written to.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from gpuyard import names
from gpuyard.kube import objects as o
from gpuyard.kube.errors import Conflict, NotFound
from gpuyard.kube.informer import INDEX_NODE, Informer
from gpuyard.kube.resources import NODES, PODS

log = logging.getLogger("gpuyard.cluster.lifecycle")
LEASE_NS = "kube-node-lease"
KUBELET_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


# kube-controller-manager's defaults: --node-eviction-rate, --secondary-node-eviction-rate,
# --unhealthy-zone-threshold, --large-cluster-size-threshold
TAINT_RATE = 0.1
SECONDARY_TAINT_RATE = 0.01
UNHEALTHY_ZONE_THRESHOLD = 0.55
LARGE_CLUSTER = 50
NORMAL, PARTIAL, FULL = "Normal", "PartialDisruption", "FullDisruption"


def zone_state(ready: int, not_ready: int) -> str:
    """A zone's state as kube-controller-manager's node lifecycle computes it."""
    if ready == 0 and not_ready > 0:
        return FULL
    if not_ready > 2 and not_ready / (ready + not_ready) >= UNHEALTHY_ZONE_THRESHOLD:
        return PARTIAL
    return NORMAL


def taint_rate(state: str, cluster_size: int) -> float:
    """Nodes a second the zone's unreachable nodes are tainted at."""
    if state == PARTIAL:
        return SECONDARY_TAINT_RATE if cluster_size > LARGE_CLUSTER else 0.0
    return TAINT_RATE


def unreachable_taint() -> dict[str, Any]:
    return {"key": names.TAINT_UNREACHABLE, "effect": o.NO_EXECUTE, "timeAdded": o.now_rfc3339()}


def toleration_seconds(pod: dict[str, Any], taint: dict[str, Any]) -> float | None:
    """None: not tolerated (evict now); inf: tolerated forever; else seconds."""
    best: float | None = None
    for t in (pod.get("spec") or {}).get("tolerations") or []:
        if o.toleration_matches(t, taint):
            secs = t.get("tolerationSeconds")
            value = float("inf") if secs is None else max(0.0, float(secs))
            best = value if best is None else max(best, value)
    return best


def last_heartbeat(
    node: dict[str, Any], ready: dict[str, Any], lease_renewed: float | None
) -> float | None:
    """The newest sign of life of a node (epoch seconds): its Lease's renewal, its Ready
    condition's heartbeat, or its creation; None when it has none of them."""
    times = [lease_renewed] if lease_renewed is not None else []
    for value in (
        ready.get("lastHeartbeatTime"),
        (node.get("metadata") or {}).get("creationTimestamp"),
    ):
        t = o.parse_time(value)
        if t is not None:
            times.append(t.timestamp())
    return max(times) if times else None


class NodeLifecycle:
    def __init__(
        self,
        client: Any,
        nodes: Informer,
        pods: Informer,
        leases: Informer,
        grace: float = 40.0,
        period: float | None = None,
        kubelet_ready: Callable[[str], Awaitable[None]] | None = None,
        pod_gc_after: float = 40.0,
    ) -> None:
        self.client = client
        self.nodes = nodes
        self.pods = pods
        self.leases = leases  # of kube-node-lease
        # lease name -> (its renewTime as written, as epoch seconds): parsed once a renewal
        self._renewed: dict[str, tuple[Any, float | None]] = {}
        self.grace = grace
        self.period = period if period is not None else max(0.5, min(5.0, grace / 4))
        self.marked: dict[str, float] = {}  # node -> monotonic time it was marked
        # node -> (its last heartbeat seen, monotonic time that one was first seen)
        self.probes: dict[str, tuple[float | None, float]] = {}
        self.kubelet_ready = kubelet_ready
        self.pod_gc_after = pod_gc_after
        self.orphaned: dict[str, float] = {}  # missing node -> monotonic time first seen
        # zone -> (taints it may add now, monotonic time of that count): a token bucket
        # of one at the zone's rate
        self._tokens: dict[str, tuple[float, float]] = {}
        self.zone_states: dict[str, str] = {}

    async def run(self, stop: asyncio.Event) -> None:
        await self.nodes.wait_synced()
        await self.pods.wait_synced()
        await self.leases.wait_synced()
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:
                log.warning("node lifecycle: %s", exc)
            try:
                await asyncio.wait_for(stop.wait(), self.period)
            except TimeoutError:
                pass

    async def tick(self) -> None:
        await self._collect_orphans()
        mono = time.monotonic()
        nodes = list(self.nodes.cache.values())
        for gone in set(self.probes) - {o.name_of(n) for n in nodes}:
            del self.probes[gone]
            self._renewed.pop(gone, None)
        seen_now = []
        counts: dict[str, list[int]] = {}  # zone -> [ready, not ready]
        for node in nodes:
            name = o.name_of(node)
            ready = o.get_condition(node, "Ready") or {}
            beat = last_heartbeat(node, ready, self._lease_renewed(name))
            seen = self.probes.get(name)
            if seen is None or seen[0] != beat:
                seen = self.probes[name] = (beat, mono)
            stale = mono - seen[1] > self.grace
            zone = o.labels_of(node).get(names.LABEL_ZONE, "")
            counts.setdefault(zone, [0, 0])[1 if stale or ready.get("status") != "True" else 0] += 1
            seen_now.append((node, name, ready, stale, zone))
        self.zone_states = {z: zone_state(r, n) for z, (r, n) in counts.items()}
        # every zone without a ready node: the trouble is taken to be here, not there
        halted = bool(self.zone_states) and all(v == FULL for v in self.zone_states.values())
        for node, name, ready, stale, zone in seen_now:
            taint = o.find_taint(node, names.TAINT_UNREACHABLE, o.NO_EXECUTE)
            if stale:
                add = taint is None and not halted and self._may_taint(zone, len(nodes), mono)
                if ready.get("status") != "Unknown" or add:
                    await self._mark_unreachable(node, add)
                if (taint is not None or add) and not halted:
                    await self._evict(node)
            elif ready.get("status") == "Unknown" and self.kubelet_ready is not None:
                await self.kubelet_ready(name)  # its kubelet is back: it posts Ready
            elif taint is not None and ready.get("status") == "True":
                try:
                    await self.client.patch(
                        NODES,
                        name,
                        {
                            "metadata": {"resourceVersion": _rv(node)},
                            "spec": {
                                "taints": o.without_taint(
                                    (node.get("spec") or {}).get("taints"),
                                    names.TAINT_UNREACHABLE,
                                )
                            },
                        },
                    )
                except (Conflict, NotFound):
                    continue
                self.marked.pop(name, None)
                log.info("node %s is reachable again", name)

    def _may_taint(self, zone: str, cluster_size: int, mono: float) -> bool:
        """Whether the zone's rate lets one more unreachable node be tainted now."""
        rate = taint_rate(self.zone_states.get(zone, NORMAL), cluster_size)
        if rate <= 0:
            return False
        tokens, at = self._tokens.get(zone, (1.0, mono))
        tokens = min(1.0, tokens + rate * (mono - at))
        if tokens < 1.0:
            self._tokens[zone] = (tokens, mono)
            return False
        self._tokens[zone] = (tokens - 1.0, mono)
        return True

    def _lease_renewed(self, node: str) -> float | None:
        """The node's Lease's renewTime (epoch seconds) as the cache has it; None
        without a Lease or a renewTime."""
        lease = self.leases.get(node, LEASE_NS)
        if lease is None:
            self._renewed.pop(node, None)
            return None
        value = (lease.get("spec") or {}).get("renewTime")
        seen = self._renewed.get(node)
        if seen is None or seen[0] != value:
            t = o.parse_time(value)
            seen = self._renewed[node] = (value, None if t is None else t.timestamp())
        return seen[1]

    async def _collect_orphans(self) -> None:
        """Pod garbage collection: pods bound to a node that no longer exists are deleted
        at once (grace 0) once the node has been gone for `pod_gc_after` seconds."""
        now = time.monotonic()
        bound_to = set(self.pods.store.index_values(INDEX_NODE))
        missing = {n for n in bound_to if n and self.nodes.get(n) is None}
        for n in list(self.orphaned):
            if n not in missing:
                del self.orphaned[n]
        for n in missing:
            since = self.orphaned.setdefault(n, now)
            if now - since < self.pod_gc_after:
                continue
            for pod in list(self.pods.by_node(n)):
                md = pod.get("metadata") or {}
                try:
                    await self.client.delete(
                        PODS, md["name"], md.get("namespace"), grace_period_seconds=0
                    )
                except NotFound:
                    continue
                log.info("deleted pod %s of node %s, which no longer exists", o.key_of(pod), n)

    async def _mark_unreachable(self, node: dict[str, Any], add_taint: bool) -> None:
        name = o.name_of(node)
        now = o.now_rfc3339()
        conds = []
        for c in (node.get("status") or {}).get("conditions") or []:
            if c.get("type") in KUBELET_CONDITIONS and c.get("status") != "Unknown":
                conds.append(
                    {
                        "type": c["type"],
                        "status": "Unknown",
                        "reason": "NodeStatusUnknown",
                        "message": "Kubelet stopped posting node status.",
                        "lastTransitionTime": now,
                    }
                )
        try:
            if add_taint:  # first: it fails if the node changed since we read it
                taints = [
                    t
                    for t in (node.get("spec") or {}).get("taints") or []
                    if t.get("key") != names.TAINT_UNREACHABLE
                ] + [unreachable_taint()]
                await self.client.patch(
                    NODES,
                    name,
                    {"metadata": {"resourceVersion": _rv(node)}, "spec": {"taints": taints}},
                )
            if conds:
                await self.client.patch_status(
                    NODES, name, {"status": {"conditions": conds}}, patch_type="strategic"
                )
        except Conflict:
            return  # changed meanwhile: the next pass sees the new version
        except NotFound:
            return
        if add_taint:
            self.marked.setdefault(name, time.monotonic())
        if conds or add_taint:
            log.info(
                "node %s stopped renewing its lease: marked unreachable%s",
                name,
                "" if add_taint else " (not tainted yet: its zone's rate)",
            )

    async def _evict(self, node: dict[str, Any]) -> None:
        name = o.name_of(node)
        since = self.marked.get(name, time.monotonic())
        taint = {"key": names.TAINT_UNREACHABLE, "effect": o.NO_EXECUTE}
        for pod in list(self.pods.by_node(name)):
            md = pod.get("metadata") or {}
            if md.get("deletionTimestamp") or o.is_pod_terminal(pod):
                continue
            wait = toleration_seconds(pod, taint)
            if wait is not None and time.monotonic() - since < wait:
                continue
            try:
                await self.client.delete(PODS, md["name"], md.get("namespace"))
            except NotFound:
                pass
            log.info("evicted pod %s from unreachable node %s", o.key_of(pod), name)
