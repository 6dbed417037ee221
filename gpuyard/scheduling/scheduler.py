"""The live gang scheduler (`gpuyard-scheduler`): informers in, bindings out.

Informers on pods, nodes, PodGroups and PriorityClasses keep an incremental
`ClusterState` current (no snapshot is rebuilt per pod). Whenever something changed,
a short debounce later the loop runs `policy.schedule` once and applies its
decisions, taken through the `config.Sink` interface the twin takes them through too: bindings through the binding subresource, concurrently and bounded (a
binding the API refuses puts the pod back in the queue, where it is placed again
beside the rest of its gang); victims through the Eviction API; nominations as
status.nominatedNodeName. Readable reasons go to Events on the PodGroup or pod and to
the pods' PodScheduled=False condition, only when they change. PodGroup status
(phase, scheduled, running, succeeded, failed) is kept current. Leader election on a
Lease makes a second replica safe. Only pods with schedulerName gpuyard-scheduler are
scheduled (and, with `also=("default-scheduler",)`, as `gpuyard up` runs it, the pods
that name no scheduler, with the same policy); every bound pod counts against its node,
whoever bound it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import socket
import time
from collections import defaultdict
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from gpuyard import names
from gpuyard.k8s.disruption import EVICTION_BY_EVICTION_API, PREEMPTION_BY_SCHEDULER, status_patch
from gpuyard.kube import objects as o
from gpuyard.kube.errors import ApiError, Conflict, NotFound, TooManyRequests
from gpuyard.kube.events import STOP_FLUSH_S, EventQueue, EventRecorder
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.leader import LeaderElector, LeaseTimings
from gpuyard.kube.resources import (
    DEVICE_CLASSES,
    NAMESPACES,
    NODES,
    POD_GROUPS,
    PODS,
    PRIORITY_CLASSES,
    RESOURCE_CLAIMS,
    RESOURCE_SLICES,
    TEAMS,
)
from gpuyard.scheduling import composite, dra, upstream, volcano
from gpuyard.scheduling.policy import Decisions, Eviction, Memory, PolicyConfig, deliver, schedule
from gpuyard.scheduling.reasons import CATEGORIES, Reasons, category
from gpuyard.scheduling.state import GPU, ClusterState

log = logging.getLogger("gpuyard.scheduler")

# A pending unit's PodScheduled message is rewritten at most this often when only its
# numbers change (node counts move while nodes join or leave); other changes at once.
REASON_REFRESH_S = 5.0
_DIGITS = re.compile(r"\d+")


# Queue waits: seconds to a day.
WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400)


def size_label(gpus: int) -> str:
    """A unit's size, in GPUs, as a bucket label."""
    if gpus <= 0:
        return "0"
    for hi, label in ((1, "1"), (8, "2-8"), (64, "9-64"), (512, "65-512")):
        if gpus <= hi:
            return label
    return "513+"


def preemption_cause(reason: str) -> str:
    return "reclaim" if "reclaiming team" in reason else "priority"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queue = Gauge(
            "gpuyard_scheduler_pending_pods", "pods waiting to be placed", registry=r
        )
        self.bindings = Counter("gpuyard_scheduler_bindings_total", "pods bound", registry=r)
        self.binding_errors = Counter(
            "gpuyard_scheduler_binding_errors_total", "bindings refused", registry=r
        )
        self.preemptions = Counter(
            "gpuyard_scheduler_preemptions_total",
            "pods evicted to make room, by cause (priority; reclaim: a team takes back its"
            " lent capacity)",
            ["cause"],
            registry=r,
        )
        self.pending_gangs = Gauge(
            "gpuyard_scheduler_pending_gangs",
            "gangs left unplaced by the last pass, by reason",
            ["reason"],
            registry=r,
        )
        self.unschedulable_pods = Gauge(
            "gpuyard_scheduler_unschedulable_pods",
            "pods left unplaced by the last pass (gang members included), by reason",
            ["reason"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "gpuyard_scheduler_queue_wait_seconds",
            "time from creation to placement of a gang or lone pod, by size in GPUs and team",
            ["size", "team"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "gpuyard_scheduler_decision_seconds",
            "time of one policy pass",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )


async def _gc_freezer(every: float, synced: asyncio.Event | None = None) -> None:
    """Keep the informer caches out of the cyclic garbage collector's reach.

    Cached pods and nodes are long-lived and free of reference cycles (reference
    counting frees them), but every full collection walks all of them: with 20,000
    cached objects that was 40% of the scheduler's CPU while binding 12,000 pods.
    Freezing moves what exists into the permanent generation (O(1)); cyclic garbage
    made since the last young collection stays, a few objects a second at most."""
    while True:
        # Five times as often while the informers fill their caches.
        await asyncio.sleep(every if synced is None or synced.is_set() else every / 5)
        gc.freeze()


def _same_for_scheduling(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether two versions of a pod are the same to `ClusterState.add_pod`: what it
    reads is the spec, labels, deletion, whether the pod has finished, the nominated
    node and the last checkpoint (for preemption's choice of victims). (Every pod bound
    produces such an update when its kubelet starts it.)"""
    om, nm = old.get("metadata") or {}, new.get("metadata") or {}
    ost, nst = old.get("status") or {}, new.get("status") or {}
    return (
        old.get("spec") == new.get("spec")
        and om.get("labels") == nm.get("labels")
        and (om.get("annotations") or {}).get(names.ANN_LAST_CHECKPOINT)
        == (nm.get("annotations") or {}).get(names.ANN_LAST_CHECKPOINT)
        and om.get("deletionTimestamp") == nm.get("deletionTimestamp")
        and o.is_pod_terminal(old) == o.is_pod_terminal(new)
        and ost.get("nominatedNodeName") == nst.get("nominatedNodeName")
        and ost.get("resourceClaimStatuses") == nst.get("resourceClaimStatuses")
    )


def team_weights(teams: Any) -> tuple[dict[str, float], dict[str, str]]:
    """From Team objects: each team's weight (spec.weight, a number above 0; 1 when
    missing or not one, as the CRD defaults it) and the team of each of its namespaces."""
    weights: dict[str, float] = {}
    team_of_ns: dict[str, str] = {}
    for t in sorted(teams, key=o.name_of):
        name = o.name_of(t)
        spec = t.get("spec") or {}
        w = spec.get("weight", 1)
        ok = isinstance(w, int | float) and not isinstance(w, bool) and 0 < w < float("inf")
        weights[name] = float(w) if ok else 1.0
        for ns in spec.get("namespaces") or ():
            if isinstance(ns, str):
                team_of_ns.setdefault(ns, name)
    return weights, team_of_ns


_group_of = upstream.group_key


def _why(e: Eviction) -> str:
    """The DisruptionTarget reason of an eviction: a preemption names its preemptor;
    the scheduler's other evictions (disruptionMode all) go through the Eviction API."""
    return PREEMPTION_BY_SCHEDULER if e.preemptor else EVICTION_BY_EVICTION_API


class _Writes:
    """The live scheduler's sink: a pass's decisions, as the API writes they become."""

    def __init__(self) -> None:
        self.bindings: list[tuple[str, str]] = []
        self.evictions: list[Eviction] = []
        self.nominations: list[tuple[str, str]] = []
        self.reasons: Reasons = Reasons()

    def bind(self, pod: str, node: str) -> None:
        self.bindings.append((pod, node))

    def evict(self, eviction: Eviction) -> None:
        self.evictions.append(eviction)

    def nominate(self, pod: str, node: str) -> None:
        self.nominations.append((pod, node))

    def explain(self, reasons: Reasons) -> None:
        self.reasons = reasons


class Scheduler:
    def __init__(
        self,
        client: Any,
        config: PolicyConfig | None = None,
        *,
        name: str = names.SCHEDULER_NAME,
        bind_concurrency: int = 128,
        debounce: float = 0.02,
        leader_elect: bool = True,
        identity: str | None = None,
        lease: LeaseTimings | None = None,
        metrics: Metrics | None = None,
        freeze_gc: float = 1.0,
        informers: InformerFactory | None = None,
        also: tuple[str, ...] = (),
        topology_levels: tuple[str, ...] | None = None,
    ) -> None:
        self.client = client
        self.freeze_gc = freeze_gc
        self.config = config or PolicyConfig()
        self.name = name
        self.state = ClusterState(name, also)
        if topology_levels:
            self.state.set_topology_levels(topology_levels)
        self.memory = Memory()  # what the policy keeps across passes over the state
        self.debounce = debounce
        self.leader_elect = leader_elect
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}-{id(self):x}"
        self.lease = lease or LeaseTimings()
        self.metrics = metrics or Metrics()
        # Events are written from a bounded queue at most 50 a second after a burst of
        # 100 (kube-scheduler's client limits): at thousands of bindings a second most
        # Scheduled events are dropped rather than doubling the scheduler's writes
        self.event_queue = EventQueue(max_queued=1000, senders=4, qps=50.0, burst=100)
        self.recorder = EventRecorder(client, name, queue=self.event_queue)
        # scheduler name -> the recorder of the Scheduled events of pods naming it
        self._bind_recorders: dict[str, EventRecorder] = {name: self.recorder}
        self._sem = asyncio.Semaphore(bind_concurrency)
        self._dirty = asyncio.Event()
        self._groups_dirty: set[str] = set()
        self._reasons: dict[str, str] = {}
        self._reason_at: dict[str, float] = {}
        self._refresh_armed = False
        self._group_status: dict[str, tuple[Any, ...]] = {}
        self._bind_errors: dict[str, str] = {}  # group -> the last binding refused
        self._disrupt: dict[str, str] = {}  # disruptionMode-all group -> why it goes
        # its own informers, or views of the watches of the process it runs in
        mk = informer_maker(client, informers)
        self.pods = mk(PODS, name="scheduler-pods")
        self.pods.add_index("group", _group_of)
        self.nodes = mk(NODES, name="scheduler-nodes")
        self.groups = mk(POD_GROUPS, name="scheduler-podgroups")
        # scheduling.k8s.io PodGroups (not waited for: older clusters do not serve them)
        self.upstream_groups = mk(upstream.UPSTREAM_POD_GROUPS, name="scheduler-upstream-podgroups")
        # the Workloads upstream PodGroups are made from (their templates' constraints)
        self.workloads = mk(upstream.WORKLOADS, name="scheduler-workloads")
        # CompositePodGroups, the parents of upstream PodGroups scheduled together (not
        # waited for: served only where scheduling.k8s.io/v1alpha3 is)
        self.composites = mk(composite.COMPOSITE_POD_GROUPS, name="scheduler-compositepodgroups")
        # Volcano's PodGroups (not waited for: served only where its CRD is installed)
        self.volcano_groups = mk(volcano.VOLCANO_POD_GROUPS, name="scheduler-volcano-podgroups")
        self.classes = mk(PRIORITY_CLASSES, name="scheduler-priorityclasses")
        # namespace labels, for the namespaceSelector of pod affinity terms
        self.namespaces = mk(NAMESPACES, name="scheduler-namespaces")
        # Teams' weights and namespaces, for fair sharing (not waited for: a cluster
        # without Teams schedules without them)
        self.teams = mk(TEAMS, name="scheduler-teams")
        # device claims (resource.k8s.io/v1): waited for briefly, as a cluster that
        # does not serve them schedules without them
        self.claims = mk(RESOURCE_CLAIMS, name="scheduler-resourceclaims")
        self.slices = mk(RESOURCE_SLICES, name="scheduler-resourceslices")
        self.device_classes = mk(DEVICE_CLASSES, name="scheduler-deviceclasses")
        self.passes = 0
        self.bound = 0

    # ------------------------------------------------------------------ feeding the state

    def _changed(self, group: str | None = None) -> None:
        if group:
            self._groups_dirty.add(group)
        self._dirty.set()

    def _disrupted(self, p: Any) -> None:
        """A placed pod is going away: when its upstream PodGroup's disruptionMode is
        `all`, the rest of the group goes too (evicted on the next pass)."""
        if p is None or not p.node or p.terminating or not p.group:
            return
        ns, name = p.group.split("/", 1)
        pg = self.upstream_groups.get(name, ns)
        if pg is not None and upstream.disrupts_all(pg):
            self._disrupt.setdefault(
                p.group, f"pod {p.name} of PodGroup {name} was disrupted (disruptionMode all)"
            )

    def _wire(self) -> None:
        s = self.state

        def pod_add(pod: dict[str, Any]) -> None:
            before = s.pods.get(o.key_of(pod))
            after = s.add_pod(pod)
            if (after is None or after.terminating) and (pod.get("status") or {}).get(
                "phase"
            ) != "Succeeded":
                self._disrupted(before)
            self._changed(_group_of(pod))

        def pod_update(old: dict[str, Any], new: dict[str, Any]) -> None:
            if _same_for_scheduling(old, new) and o.key_of(new) in s.pods:
                # A status change of a placed pod (the kubelet starting it, say): the
                # snapshot is unchanged; only its PodGroup's counts may be.
                group = _group_of(new)
                if group:
                    self._changed(group)
                return
            pod_add(new)

        def pod_del(pod: dict[str, Any]) -> None:
            if (pod.get("status") or {}).get("phase") != "Succeeded":
                self._disrupted(s.pods.get(o.key_of(pod)))
            s.remove_pod(o.key_of(pod))
            self._changed(_group_of(pod))

        def node_add(node: dict[str, Any]) -> None:
            s.add_node(node)
            for p in self.pods.by_node(o.name_of(node)):
                s.add_pod(p)
            self._changed()

        def node_del(node: dict[str, Any]) -> None:
            s.remove_node(o.name_of(node))
            self._changed()

        def group_set(pg: dict[str, Any]) -> None:
            s.set_pod_group(pg)
            self._changed(o.key_of(pg))

        def group_del(pg: dict[str, Any]) -> None:
            s.remove_pod_group(o.key_of(pg))
            self._changed()

        self.pods.add_handler(pod_add, pod_update, pod_del)
        self.nodes.add_handler(node_add, lambda old, new: node_add(new), node_del)
        self.groups.add_handler(group_set, lambda old, new: group_set(new), group_del)

        def upstream_set(pg: dict[str, Any]) -> None:
            ref = upstream.workload_ref(pg)
            wl = self.workloads.get(ref[0], o.namespace_of(pg)) if ref else None
            s.set_group(upstream.group_info(pg, s.priority_classes, wl))
            self._changed(o.key_of(pg))

        self.upstream_groups.add_handler(
            upstream_set, lambda old, new: upstream_set(new), group_del
        )

        def workload_set(wl: dict[str, Any]) -> None:
            # its PodGroups read their templates again
            ns, name = o.namespace_of(wl), o.name_of(wl)
            for pg in self.upstream_groups.list():
                ref = upstream.workload_ref(pg)
                if ref and ref[0] == name and o.namespace_of(pg) == ns:
                    upstream_set(pg)

        self.workloads.add_handler(workload_set, lambda old, new: workload_set(new), workload_set)

        def composite_set(cpg: dict[str, Any]) -> None:
            s.set_composite(cpg)
            self._changed(composite.key_of(o.namespace_of(cpg), o.name_of(cpg)))

        def composite_del(cpg: dict[str, Any]) -> None:
            s.remove_composite(o.key_of(cpg))
            self._changed()

        self.composites.add_handler(
            composite_set, lambda old, new: composite_set(new), composite_del
        )

        def volcano_set(pg: dict[str, Any]) -> None:
            s.set_group(volcano.group_info(pg, s.priority_classes))
            self._changed(o.key_of(pg))

        self.volcano_groups.add_handler(volcano_set, lambda old, new: volcano_set(new), group_del)

        def pc(obj: dict[str, Any]) -> None:
            s.set_priority_class(
                o.name_of(obj), int(obj.get("value") or 0), obj.get("preemptionPolicy") == "Never"
            )
            self._changed()

        self.classes.add_handler(pc, lambda old, new: pc(new), None)

        def ns_set(obj: dict[str, Any]) -> None:
            labels = dict(o.labels_of(obj))
            if s.namespace_labels.get(o.name_of(obj)) != labels:
                s.namespace_labels[o.name_of(obj)] = labels
                s.generation += 1
                self._changed()

        def ns_del(obj: dict[str, Any]) -> None:
            s.namespace_labels.pop(o.name_of(obj), None)

        self.namespaces.add_handler(ns_set, lambda old, new: ns_set(new), ns_del)

        def teams_changed(*_: Any) -> None:
            weights, team_of_ns = team_weights(self.teams.cache.values())
            gen = s.teams_gen
            s.set_teams(weights, team_of_ns)
            if s.teams_gen != gen:
                self._changed()

        self.teams.add_handler(teams_changed, teams_changed, teams_changed)

        def claim_set(obj: dict[str, Any]) -> None:
            s.set_resource_claim(obj)
            self._changed()

        def claim_del(obj: dict[str, Any]) -> None:
            s.remove_resource_claim(o.key_of(obj))
            self._changed()

        self.claims.add_handler(claim_set, lambda old, new: claim_set(new), claim_del)

        def slice_set(obj: dict[str, Any]) -> None:
            s.set_resource_slice(obj)
            self._changed()

        def slice_del(obj: dict[str, Any]) -> None:
            s.remove_resource_slice(o.name_of(obj))
            self._changed()

        self.slices.add_handler(slice_set, lambda old, new: slice_set(new), slice_del)

        def class_set(obj: dict[str, Any]) -> None:
            s.set_device_class(obj)
            self._changed()

        def class_del(obj: dict[str, Any]) -> None:
            s.remove_device_class(o.name_of(obj))
            self._changed()

        self.device_classes.add_handler(class_set, lambda old, new: class_set(new), class_del)

    # ------------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        self._wire()
        synced = asyncio.Event()
        freezer = (
            asyncio.create_task(_gc_freezer(self.freeze_gc, synced)) if self.freeze_gc else None
        )
        for inf in (
            self.classes,
            self.namespaces,
            self.nodes,
            self.groups,
            self.upstream_groups,
            self.workloads,
            self.composites,
            self.volcano_groups,
            self.pods,
            self.teams,
            self.device_classes,
            self.slices,
            self.claims,
        ):
            inf.start()
        try:
            for inf in (self.classes, self.namespaces, self.nodes, self.groups, self.pods):
                await inf.wait_synced()
            for inf in (self.device_classes, self.slices, self.claims):
                # GPUs allocated to claims must be known before any is handed out
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(inf.wait_synced(), 10.0)
            synced.set()
            # Pods seen before their nodes were known: account them now.
            for node in list(self.nodes.cache.values()):
                for p in self.pods.by_node(o.name_of(node)):
                    self.state.add_pod(p)
            elector = None
            if self.leader_elect:
                elector = LeaderElector(
                    self.client,
                    self.name,
                    "kube-system",
                    self.identity,
                    on_started_leading=self._changed,
                    timings=self.lease,
                )
                # Writes of a pass that outlives the Lease are refused, not sent.
                self.client.fence = elector
                elector.start()
            loop_task = asyncio.create_task(self._loop(elector))
            stop_task = asyncio.create_task(stop.wait())
            tasks = [loop_task, stop_task]
            await asyncio.wait({loop_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if elector is not None:
                await elector.stop()
        finally:
            if freezer is not None:
                freezer.cancel()
                await asyncio.gather(freezer, return_exceptions=True)
            for inf in (
                self.classes,
                self.namespaces,
                self.nodes,
                self.groups,
                self.upstream_groups,
                self.workloads,
                self.composites,
                self.volcano_groups,
                self.pods,
                self.teams,
                self.device_classes,
                self.slices,
                self.claims,
            ):
                await inf.stop()
            # Stopping: the queued Events get a moment, not the minutes a full queue takes at
            # its rate (a stop waited up to 20 s), and none holds the stop when paused.
            left = await self.recorder.flush(timeout=STOP_FLUSH_S)
            if left:
                log.info("stopping: %d queued Events not written", left)

    async def _loop(self, elector: LeaderElector | None) -> None:
        self._dirty.set()
        while True:
            await self._dirty.wait()
            if elector is not None and not elector.is_leader:
                await elector.wait_leading()
            await asyncio.sleep(self.debounce)
            self._dirty.clear()
            await self.run_once()

    async def run_once(self) -> Decisions:
        """One pass: decide, then apply. Returns the decisions."""
        self.metrics.queue.set(len(self.state.pending))
        t0 = time.perf_counter()
        d = schedule(self.state, time.time(), self.config, self.memory)
        decided = time.perf_counter() - t0
        self.metrics.latency.observe(decided)
        self.passes += 1
        w = _Writes()
        deliver(d, w)
        disrupt, self._disrupt = self._disrupt, {}
        for group, why in disrupt.items():
            for q in self.state.members.get(group, {}).values():
                if q.node and not q.terminating:
                    w.evictions.append(Eviction(q.key, "", why))
        # The pass's Events (Scheduled ones among them) wait while its bindings are in
        # flight: on a busy API server they would take turns from the bindings (at 50
        # a second, more writes than the bindings themselves once it answers fewer).
        if w.bindings:
            self.event_queue.pause()
        try:
            await asyncio.gather(
                # Device claims first, all of a unit's or none: a unit's pods are bound
                # once its claims say where their devices are and that they may use them
                # (each unit as soon as its own claims are written).
                self._claims_then_bind(d, w.bindings)
                if d.consumers
                else self._apply_bindings(w.bindings),
                self._apply_evictions(w.evictions),
                self._apply_nominations(w.nominations),
            )
        finally:
            if w.bindings:
                self.event_queue.resume()
        await self._report(w.reasons)
        await self._update_groups(w.reasons, w.evictions)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "pass %d: %d pending, %d bound, %d evicted; decided in %.1f ms, applied in %.1f ms",
                self.passes,
                len(self.state.pending),
                len(d.bindings),
                len(d.evictions),
                1e3 * decided,
                1e3 * (time.perf_counter() - t0 - decided),
            )
        if d.timed_out:
            self._dirty.set()
        return d

    async def _bind_one(self, key: str, node: str) -> None:
        ns, name = key.split("/", 1)
        async with self._sem:
            try:
                await self.client.bind(name, node, ns)
                self.metrics.bindings.inc()
                self.bound += 1
                self._scheduled(ns, name, node)
            except (ApiError, OSError) as exc:
                self.metrics.binding_errors.inc()
                log.info("binding %s to %s failed: %s", key, node, exc)
                p = self.state.pods.get(key)
                if p is not None and p.group:
                    self._bind_errors[p.group] = f"binding {key} to {node} failed: {exc}"
                    self._groups_dirty.add(p.group)
                self.state.unbind(key)
                if p is not None and p.claims:
                    await self._release_claims(key)
                self._changed()

    def _scheduled(self, ns: str, name: str, node: str) -> None:
        """The Scheduled Event of a pod bound, as kube-scheduler reports a binding, from
        the scheduler name the pod asked for (default-scheduler when it names none)."""
        pod = self.pods.get(name, ns)
        if pod is None:
            return
        sched = (pod.get("spec") or {}).get("schedulerName") or "default-scheduler"
        rec = self._bind_recorders.get(sched)
        if rec is None:
            rec = self._bind_recorders[sched] = EventRecorder(
                self.client, sched, queue=self.event_queue
            )
        rec.emit(
            {"apiVersion": "v1", "kind": "Pod", "metadata": pod.get("metadata") or {}},
            "Normal",
            "Scheduled",
            f"Successfully assigned {ns}/{name} to {node}",
        )

    def _unit_of(self, pod_key: str) -> str:
        p = self.state.pods.get(pod_key)
        return (p.group if p is not None else None) or pod_key

    def _consumer(self, pod_key: str) -> dict[str, Any] | None:
        p = self.state.pods.get(pod_key)
        md = ((p.obj if p is not None else None) or {}).get("metadata") or {}
        if not md.get("uid"):
            return None
        return {"resource": "pods", "name": md.get("name"), "uid": md["uid"]}

    async def _patch_claim(self, key: str, status: dict[str, Any]) -> None:
        ns, name = key.split("/", 1)
        async with self._sem:
            await self.client.patch_status(RESOURCE_CLAIMS, name, {"status": status}, ns)

    async def _claims_then_bind(self, d: Decisions, bindings: list[tuple[str, str]]) -> None:
        """Write each claim's allocation (when made in this pass) and its reservedFor
        (its pods bound in this pass added), all at once (bounded like bindings), and
        bind each unit's pods as soon as every claim of the unit is written; a unit any
        of whose claims cannot be written is not bound, and its other claims are put
        back (those no unit bound in this pass uses)."""
        dv = self.state.dra
        before: dict[str, tuple[dict[str, Any] | None, list[dict[str, Any]]]] = {}
        units: dict[str, set[str]] = defaultdict(set)  # unit -> its claims in this pass
        for key, pods in d.consumers.items():
            for pk in pods:
                units[self._unit_of(pk)].add(key)
        by_unit: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for pk, node in bindings:
            by_unit[self._unit_of(pk)].append((pk, node))

        async def write(key: str) -> str | None:
            c = dv.claims.get(key)
            if c is None:
                return "the claim is gone"
            old_status = (c.obj or {}).get("status") or {}
            reserved = [dict(r) for r in c.reserved]
            before[key] = (old_status.get("allocation"), [dict(r) for r in c.reserved])
            have = {r.get("uid") for r in reserved}
            for pk in d.consumers[key]:
                ref = self._consumer(pk)
                if ref is None:
                    return f"pod {pk} has no uid yet"
                if ref["uid"] not in have:
                    reserved.append(ref)
                    have.add(ref["uid"])
            status: dict[str, Any] = {"reservedFor": reserved}
            if key in d.allocations:
                node, rows = d.allocations[key]
                status["allocation"] = {
                    **dra.allocation_status(node, []),
                    "devices": {
                        "results": [
                            {"request": r, "driver": drv, "pool": pool, "device": dev}
                            for r, drv, pool, dev in rows
                        ]
                    },
                }
            try:
                await self._patch_claim(key, status)
            except (ApiError, OSError) as exc:
                return str(exc)
            c.reserved = tuple(reserved)
            return None

        keys = sorted(d.consumers)
        writes = {k: asyncio.ensure_future(write(k)) for k in keys}
        bound: set[str] = set()  # units whose claims were all written: bound

        async def unit(u: str) -> None:
            mine = sorted(units.get(u, ()))
            got = await asyncio.gather(*(writes[k] for k in mine))
            if not any(got):
                bound.add(u)
                await self._apply_bindings(by_unit[u])

        try:
            await asyncio.gather(*(unit(u) for u in by_unit))
        finally:
            await asyncio.gather(*writes.values(), return_exceptions=True)
        errors = {k: t.result() for k, t in writes.items() if not t.cancelled()}
        # units not bound (a claim of theirs failed), and units of failed claims
        failed = {u for u in by_unit if u not in bound}
        failed |= {u for u, ks in units.items() if any(errors.get(k) for k in ks)} - bound
        if not failed:
            return
        kept = {k for u in bound for k in units.get(u, ())}
        undo = sorted({k for u in failed for k in units.get(u, ())} - kept)
        for key in undo:
            why = errors.get(key)
            if why:
                log.info("allocating ResourceClaim %s failed: %s", key, why)
            elif key in before:
                alloc, reserved = before[key]
                with contextlib.suppress(ApiError, OSError):
                    await self._patch_claim(key, {"allocation": alloc, "reservedFor": reserved})
                self.state.dra.claims[key].reserved = tuple(reserved)
        for u in sorted(failed):
            for pk, _ in by_unit.get(u, ()):
                self.state.unbind(pk)
                p = self.state.pods.get(pk)
                if p is not None and p.group:
                    bad = next(
                        (f"{k}: {errors[k]}" for k in sorted(units.get(u, ())) if errors.get(k)),
                        "",
                    )
                    self._bind_errors[p.group] = f"allocating ResourceClaim {bad} failed"
                    self._groups_dirty.add(p.group)
        for key in undo:
            if key in d.allocations:
                self.state.undo_allocation(key)
        self._changed()

    async def _release_claims(self, pod_key: str) -> None:
        """A pod whose binding was refused gives its claims back: it leaves their
        reservedFor, and a claim no one else holds loses its allocation."""
        ref = self._consumer(pod_key)
        p = self.state.pods.get(pod_key)
        for key in p.claims if p is not None else ():
            c = self.state.dra.claims.get(key)
            if c is None or ref is None:
                continue
            reserved = [dict(r) for r in c.reserved if r.get("uid") != ref["uid"]]
            status: dict[str, Any] = {"reservedFor": reserved}
            if not reserved:
                status["allocation"] = None
            try:
                await self._patch_claim(key, status)
            except (ApiError, OSError) as exc:
                log.info("releasing ResourceClaim %s: %s", key, exc)
                continue
            c.reserved = tuple(reserved)
            if not reserved:
                self.state.undo_allocation(key)

    def _observe_waits(self, bindings: list[tuple[str, str]]) -> None:
        """Queue wait of each unit placed: a lone pod, or a gang (once, when members
        are first bound in a pass; its size is the members bound with it)."""
        now = time.time()
        units: dict[str, tuple[float, int, str]] = {}
        for k, _ in bindings:
            p = self.state.pods.get(k)
            if p is None or p.node is None:
                continue
            unit = p.group or k
            created, gpus, team = units.get(unit, (p.created, 0, ""))
            team = team or p.team or self.state.team_of(k) or "none"
            units[unit] = (min(created, p.created), gpus + p.req[GPU], team)
        for created, gpus, team in units.values():
            if created > 0:
                self.metrics.queue_wait.labels(size_label(gpus), team).observe(
                    max(0.0, now - created)
                )

    async def _apply_bindings(self, bindings: list[tuple[str, str]]) -> None:
        if bindings:
            await asyncio.gather(*(self._bind_one(k, n) for k, n in bindings))
            self._observe_waits(bindings)
            for k, _ in bindings:
                self._forget_reason(f"pod {k}")
                p = self.state.pods.get(k)
                if p and p.group:
                    self._groups_dirty.add(p.group)
                    self._forget_reason(f"gang {p.group}")

    async def _apply_evictions(self, evictions: list[Eviction]) -> None:
        async def evict(key: str, reason: str, why: str) -> None:
            ns, name = key.split("/", 1)
            pod = self.pods.get(name, ns)
            async with self._sem:
                try:
                    # Say why on the pod first (DisruptionTarget, as kube-scheduler does),
                    # so its owner can tell a preemption from a fault.
                    await self.client.patch_status(
                        PODS,
                        name,
                        status_patch(why, reason),
                        ns,
                        patch_type="strategic",
                    )
                except NotFound:
                    return
                except (ApiError, OSError) as exc:
                    log.info("preempting %s: no DisruptionTarget condition: %s", key, exc)
                try:
                    await self.client.evict(name, ns)
                    self.metrics.preemptions.labels(preemption_cause(reason)).inc()
                    if pod:
                        self.recorder.emit(pod, "Normal", "Preempted", reason)
                except NotFound:
                    pass
                except TooManyRequests as exc:
                    log.info("eviction of %s refused by a disruption budget: %s", key, exc)
                    undo = status_patch(PREEMPTION_BY_SCHEDULER, f"not evicted: {exc}")
                    undo["status"]["conditions"][0]["status"] = "False"
                    try:
                        await self.client.patch_status(PODS, name, undo, ns, patch_type="strategic")
                    except (ApiError, OSError):
                        pass

        if evictions:
            await asyncio.gather(*(evict(e.pod, e.reason, _why(e)) for e in evictions))

    async def _apply_nominations(self, nominations: list[tuple[str, str]]) -> None:
        async def nominate(key: str, node: str) -> None:
            ns, name = key.split("/", 1)
            async with self._sem:
                try:
                    await self.client.patch_status(
                        PODS, name, {"status": {"nominatedNodeName": node}}, ns
                    )
                except (NotFound, Conflict):
                    pass

        if nominations:
            await asyncio.gather(*(nominate(k, n) for k, n in nominations))

    def _forget_reason(self, unit: str) -> None:
        self._reasons.pop(unit, None)
        self._reason_at.pop(unit, None)

    async def _report(self, reasons: Reasons) -> None:
        """Events and PodScheduled=False conditions, only for reasons that changed."""
        writes = []
        now = time.monotonic()
        deferred = False
        gangs: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
        npods: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
        members: dict[str, int] = {}
        if any(u.startswith("gang ") for u in reasons):
            for p in self.state.pending.values():
                if p.group:
                    members[p.group] = members.get(p.group, 0) + 1
        for unit, reason in reasons.items():
            cat = category(reason)
            if unit.startswith("gang "):
                gangs[cat] += 1
                npods[cat] += members.get(unit[5:], 0)
            else:
                npods[cat] += 1
            if self._reasons.get(unit) == reason:
                continue
            if (
                unit in self._reasons
                and now - self._reason_at.get(unit, 0.0) < REASON_REFRESH_S
                and _DIGITS.sub("#", self._reasons[unit]) == _DIGITS.sub("#", reason)
            ):
                # Only the message changed (node counts move while nodes join): rewrite
                # it at most every REASON_REFRESH_S per unit, not on every pass.
                deferred = True
                continue
            self._reasons[unit] = reason
            self._reason_at[unit] = now
            kind, _, key = unit.partition(" ")
            ns, name = key.split("/", 1)
            if kind == "gang":
                pg = (
                    self.groups.get(name, ns)
                    or self.upstream_groups.get(name, ns)
                    or self.volcano_groups.get(name, ns)
                )
                if pg:
                    self.recorder.emit(pg, "Warning", "Unschedulable", reason)
                pods = self.pods.by_index("group", key)
            else:
                pod = self.pods.get(name, ns)
                pods = [pod] if pod else []
                if pod:
                    self.recorder.emit(pod, "Warning", "FailedScheduling", reason)
            for pod in pods:
                if pod.get("spec", {}).get("nodeName"):
                    continue
                conds, changed = o.set_condition(
                    (pod.get("status") or {}).get("conditions"),
                    "PodScheduled",
                    "False",
                    "Unschedulable",
                    reason,
                )
                if changed:
                    writes.append(self._patch_conditions(pod, conds))
        for cat in CATEGORIES:
            self.metrics.pending_gangs.labels(cat).set(gangs[cat])
            self.metrics.unschedulable_pods.labels(cat).set(npods[cat])
        if deferred and not self._refresh_armed:
            self._refresh_armed = True

            def refresh() -> None:
                self._refresh_armed = False
                self._dirty.set()

            asyncio.get_running_loop().call_later(REASON_REFRESH_S, refresh)
        if writes:
            await asyncio.gather(*writes)

    async def _patch_conditions(self, pod: dict[str, Any], conds: list[dict[str, Any]]) -> None:
        async with self._sem:
            try:
                await self.client.patch_status(
                    PODS, o.name_of(pod), {"status": {"conditions": conds}}, o.namespace_of(pod)
                )
            except (NotFound, Conflict):
                pass

    async def _update_groups(
        self, reasons: Reasons | None = None, evictions: list[Eviction] | None = None
    ) -> None:
        dirty, self._groups_dirty = self._groups_dirty, set()
        preempted: dict[str, tuple[str, str]] = {}
        for e in evictions or ():
            p = self.state.pods.get(e.pod)
            if p is not None and p.group:
                preempted.setdefault(p.group, (_why(e), e.reason))
        waiting = {u[5:] for u in reasons or () if u.startswith("gang ")}
        keys = dirty | waiting | preempted.keys()
        # a CompositePodGroup's gang and the PodGroups under it are written together
        alias = self.state.group_alias
        if alias:
            keys |= {alias[k] for k in keys if k in alias}
            roots = {k for k in keys if composite.name_of(k) is not None}
            keys |= {k for k, r in alias.items() if r in roots}
        for key in sorted(keys):
            ns, name = key.split("/", 1)
            cname = composite.name_of(key)
            if cname is not None:
                if (cpg := self.composites.get(cname, ns)) is not None:
                    await self._composite_status(key, cpg, preempted.get(key))
                continue
            pg = self.groups.get(name, ns)
            if pg is None:
                up = self.upstream_groups.get(name, ns)
                if up is not None:
                    await self._upstream_status(
                        key, up, preempted.get(key) or preempted.get(alias.get(key, key))
                    )
                elif (vg := self.volcano_groups.get(name, ns)) is not None:
                    await self._volcano_status(key, vg)
                continue
            counts: dict[str, int] = defaultdict(int)
            for pod in self.pods.by_index("group", key):
                phase = (pod.get("status") or {}).get("phase") or "Pending"
                if pod.get("spec", {}).get("nodeName"):
                    counts["scheduled"] += 1
                if phase == "Running":
                    counts["running"] += 1
                elif phase == "Succeeded":
                    counts["succeeded"] += 1
                elif phase == "Failed":
                    counts["failed"] += 1
            min_member = int((pg.get("spec") or {}).get("minMember") or 1)
            if counts["failed"]:
                phase = "Failed"
            elif counts["succeeded"] >= min_member:
                phase = "Finished"
            elif counts["running"] >= min_member:
                phase = "Running"
            elif counts["scheduled"] >= min_member:
                phase = "Scheduled"
            elif counts["scheduled"]:
                phase = "Scheduling"
            else:
                phase = "Pending"
            status = {
                "phase": phase,
                **{k: counts[k] for k in ("scheduled", "running", "succeeded", "failed")},
            }
            sig = tuple(sorted(status.items()))
            old = pg.get("status") or {}
            if self._group_status.get(key) == sig or all(
                old.get(k) == v for k, v in status.items()
            ):
                self._group_status[key] = sig
                continue
            try:
                await self.client.patch_status(POD_GROUPS, name, {"status": status}, ns)
                self._group_status[key] = sig
            except (NotFound, Conflict):
                pass
            except ApiError as exc:
                log.warning("PodGroup %s status: %s", key, exc)

    async def _volcano_status(self, key: str, pg: dict[str, Any]) -> None:
        """A Volcano PodGroup's phase and counts, written only when they change."""
        c: dict[str, int] = defaultdict(int)
        for pod in self.pods.by_index("group", key):
            phase = (pod.get("status") or {}).get("phase") or "Pending"
            c["scheduled"] += bool(pod.get("spec", {}).get("nodeName"))
            c[phase] += 1
        g = self.state.groups.get(key)
        status = volcano.status(
            g.min_member if g else 1, c["scheduled"], c["Running"], c["Succeeded"], c["Failed"]
        )
        old = pg.get("status") or {}
        if all(old.get(k) == v for k, v in status.items()):
            return
        ns, name = key.split("/", 1)
        try:
            await self.client.patch_status(volcano.VOLCANO_POD_GROUPS, name, {"status": status}, ns)
        except (NotFound, Conflict):
            pass
        except ApiError as exc:
            log.warning("PodGroup %s status: %s", key, exc)

    async def _composite_status(
        self, key: str, cpg: dict[str, Any], preempted: tuple[str, str] | None
    ) -> None:
        """A CompositePodGroup's conditions (CompositePodGroupInitiallyScheduled, and
        DisruptionTarget), written only when they change."""
        s = self.state
        g = s.groups.get(key)
        bound = sum(1 for q in s.members.get(key, {}).values() if q.node and not q.terminating)
        reason = self._reasons.get(f"gang {key}")
        conds, changed = upstream.conditions(
            cpg,
            bound,
            reason,
            preempted[1] if preempted else None,
            self._bind_errors.pop(key, None),
            disruption_reason=preempted[0] if preempted else upstream.PREEMPTION_BY_SCHEDULER,
            kind=composite.INITIALLY_SCHEDULED,
            need=g.min_member if g is not None else 1,
            waiting_reason=composite.INVALID
            if g is not None and (g.wait or "").startswith(composite.INVALID)
            else upstream.UNSCHEDULABLE,
        )
        if not changed:
            return
        ns, name = o.namespace_of(cpg), o.name_of(cpg)
        try:
            await self.client.patch_status(
                composite.COMPOSITE_POD_GROUPS, name, {"status": {"conditions": conds}}, ns
            )
        except (NotFound, Conflict):
            pass
        except ApiError as exc:
            log.warning("CompositePodGroup %s/%s status: %s", ns, name, exc)

    async def _upstream_status(
        self, key: str, pg: dict[str, Any], preempted: tuple[str, str] | None
    ) -> None:
        """A scheduling.k8s.io PodGroup's conditions, written only when they change (a
        PodGroup under a CompositePodGroup's gang: its own pods, its gang's reason)."""
        gang = self.state.group_alias.get(key, key)
        bound = sum(
            1
            for q in self.state.members.get(gang, {}).values()
            if q.node and not q.terminating and (q.sub or q.group) == key
        )
        conds, changed = upstream.conditions(
            pg,
            bound,
            self._reasons.get(f"gang {gang}"),
            preempted[1] if preempted else None,
            self._bind_errors.get(gang) if gang != key else self._bind_errors.pop(key, None),
            disruption_reason=preempted[0] if preempted else upstream.PREEMPTION_BY_SCHEDULER,
        )
        if not changed:
            return
        ns, name = key.split("/", 1)
        try:
            await self.client.patch_status(
                upstream.UPSTREAM_POD_GROUPS, name, {"status": {"conditions": conds}}, ns
            )
        except (NotFound, Conflict):
            pass
        except ApiError as exc:
            log.warning("PodGroup %s status: %s", key, exc)
