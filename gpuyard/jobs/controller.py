"""The TrainingJob controller: informers in, `reconcile` decisions out.

Level-triggered: any change to a job, one of its pods (label gpuyard.io/job), or a
node's readiness queues the jobs concerned; a worker loop reconciles each queued job
once (coalescing bursts), applies the actions (creates concurrently, deletes, status
only when it changed) and records Events. Nothing polls.

A job whose workers the API server refuses (a PriorityClass that does not exist, a
field the pod cannot have) says why in its status and one Event, naming the job's
field, and is tried again with exponential backoff (1 s doubling to 5 min), not in a
loop; an edit of the job tries again at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from gpuyard.jobs.fit import never_fits
from gpuyard.jobs.metrics import process_metrics
from gpuyard.jobs.reconcile import (
    LABEL_GEN,
    LABEL_JOB,
    UPSTREAM_PODGROUP_API_VERSION,
    Observed,
    reconcile,
)
from gpuyard.jobs.spec import JobSpec, refusal
from gpuyard.k8s.autoscaler import group_max_sizes
from gpuyard.kube import objects as o
from gpuyard.kube.errors import AlreadyExists, ApiError, Conflict, NotFound
from gpuyard.kube.events import STOP_FLUSH_S, EventRecorder
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.resources import CONFIGMAPS, NODES, POD_GROUPS, PODS, TRAINING_JOBS
from gpuyard.kube.waits import woken
from gpuyard.scheduling.upstream import UPSTREAM_POD_GROUPS

log = logging.getLogger("gpuyard.jobs")

MAX_BACKOFF = 300.0
AUTOSCALER_STATUS = ("kube-system", "cluster-autoscaler-status")


class JobController:
    def __init__(
        self, client: Any, concurrency: int = 128, informers: InformerFactory | None = None
    ) -> None:
        self.client = client
        # its own informers, or views of the watches of the process it runs in
        mk = informer_maker(client, informers)
        self.jobs = mk(TRAINING_JOBS, name="jobs")
        self.pods = mk(PODS, label_selector=LABEL_JOB, name="jobs-pods")
        self.nodes = mk(NODES, name="jobs-nodes")
        self.groups = mk(POD_GROUPS, label_selector=LABEL_JOB, name="jobs-podgroups")
        # the upstream PodGroups of jobs, watched where the cluster serves them
        self.upstream_groups = mk(
            UPSTREAM_POD_GROUPS, label_selector=LABEL_JOB, name="jobs-upstream-podgroups"
        )
        self.upstream_served = False
        # The cluster-autoscaler's status (node groups' max sizes), for "can never fit".
        self.autoscaler = mk(
            CONFIGMAPS,
            AUTOSCALER_STATUS[0],
            field_selector=f"metadata.name={AUTOSCALER_STATUS[1]}",
            name="jobs-autoscaler-status",
        )
        self.pods.add_index("job", lambda p: f"{o.namespace_of(p)}/{o.labels_of(p).get(LABEL_JOB)}")
        self.recorder = EventRecorder(client, "gpuyard-jobs")
        self._queue: set[str] = set()
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(concurrency)
        self._children: set[str] = set()  # "ns/job/kind" known to exist
        self.reconciles = 0
        self.metrics = process_metrics()
        # "ns/name" -> (job generation, refusal, retry at (monotonic), backoff seconds)
        self._refused: dict[str, tuple[int, str, float, float]] = {}
        self._told: dict[str, str] = {}  # pod uid -> the message of its last Event
        # "ns/job" -> {worker name: its last state before it was deleted}, so that a
        # worker that is gone is explained by what it (and its node) said last.
        self._gone: dict[str, dict[str, dict[str, Any]]] = {}
        # "ns/job" -> the gang generation last written to its status: a job seen with an
        # older one is a cached copy from before our own write, not reconciled again
        # (its workers, deleted by that write, would look lost a second time).
        self._written_gen: dict[str, int] = {}
        # "ns/job" -> {worker name: generation} of the workers this controller created.
        # The informer updates its cache before it calls the handlers, so a worker can
        # be missing from the cache before its deletion is handed to pod_gone: such a
        # job waits for that event rather than taking the worker for never created.
        self._created: dict[str, dict[str, str]] = {}

    def _enqueue(self, key: str) -> None:
        self._queue.add(key)
        self._wake.set()

    def _wire(self) -> None:
        def job_ev(job: dict[str, Any]) -> None:
            self._enqueue(o.key_of(job))
            self.metrics.seen(o.key_of(job), (job.get("status") or {}).get("phase", "Pending"))

        def pod_ev(pod: dict[str, Any]) -> None:
            name = o.labels_of(pod).get(LABEL_JOB)
            if name:
                self._enqueue(f"{o.namespace_of(pod)}/{name}")

        def node_ev(old: dict[str, Any] | None, new: dict[str, Any]) -> None:
            if old is not None and self._ready(old) == self._ready(new):
                return
            for p in self.pods.by_node(o.name_of(new)):
                pod_ev(p)

        self.jobs.add_handler(
            job_ev, lambda old, new: job_ev(new), lambda j: self._forget(o.key_of(j))
        )

        def pod_gone(pod: dict[str, Any]) -> None:
            self._told.pop(str((pod.get("metadata") or {}).get("uid") or ""), None)
            name = o.labels_of(pod).get(LABEL_JOB)
            if name and isinstance(pod.get("metadata"), dict):
                self._gone.setdefault(f"{o.namespace_of(pod)}/{name}", {})[o.name_of(pod)] = pod
            pod_ev(pod)

        self.pods.add_handler(pod_ev, lambda old, new: pod_ev(new), pod_gone)

        def capacity_ev(*_: Any) -> None:
            # What the cluster can ever offer changed: waiting jobs are judged again.
            for j in self.jobs.list():
                if (j.get("status") or {}).get("phase", "Pending") == "Pending":
                    self._enqueue(o.key_of(j))

        def node_add(n: dict[str, Any]) -> None:
            node_ev(None, n)
            capacity_ev()

        self.nodes.add_handler(node_add, node_ev, node_add)
        self.autoscaler.add_handler(capacity_ev, capacity_ev, capacity_ev)

    def _count(self, job: dict[str, Any], act: Any) -> None:
        """Metrics of a status just written (so each restart counts once)."""
        m = self.metrics
        st = act.status or {}
        m.seen(o.key_of(job), st.get("phase"))
        if act.ended is not None and act.ended[0] == "restart":
            m.restarts.labels(act.ended[1]).inc()
        elif act.ended is not None:
            m.preemptions.inc()
        if st.get("startTime") and not (job.get("status") or {}).get("startTime"):
            created = o.parse_time((job.get("metadata") or {}).get("creationTimestamp"))
            started = o.parse_time(st["startTime"])
            if created is not None and started is not None:
                m.time_to_run.observe(max(0.0, started.timestamp() - created.timestamp()))

    def _forget(self, key: str) -> None:
        self.metrics.seen(key, None)
        self._refused.pop(key, None)
        self._gone.pop(key, None)
        self._written_gen.pop(key, None)
        self._created.pop(key, None)
        self._children = {c for c in self._children if not c.startswith(key + "/")}

    @staticmethod
    def _ready(node: dict[str, Any]) -> bool:
        if not o.is_node_ready(node):
            return False
        return o.find_taint(node, "node.kubernetes.io/unreachable") is None and not any(
            t.get("effect") == "NoExecute" for t in (node.get("spec") or {}).get("taints") or []
        )

    def _never(self, job: dict[str, Any]) -> str | None:
        try:
            js = JobSpec.of(job)
        except (TypeError, ValueError):
            return None
        cm = self.autoscaler.get(AUTOSCALER_STATUS[1], AUTOSCALER_STATUS[0])
        sizes = group_max_sizes(cm)
        return never_fits(js.replicas, js.gpus, self.nodes.list(), sizes)

    def node_ready(self, name: str) -> bool:
        node = self.nodes.get(name)
        return node is not None and self._ready(node)

    async def _serves_upstream(self) -> bool:
        try:
            await self.client.resource((UPSTREAM_PODGROUP_API_VERSION, "PodGroup"))
        except (ApiError, OSError):
            return False
        return True

    async def run(self, stop: asyncio.Event) -> None:
        self._wire()
        self.upstream_served = await self._serves_upstream()
        infs: tuple[Any, ...] = (self.nodes, self.autoscaler, self.groups, self.pods, self.jobs)
        if self.upstream_served:
            infs = (self.upstream_groups, *infs)
        for inf in infs:
            inf.start()
        try:
            for inf in infs:
                await inf.wait_synced()
            while await woken(self._wake, stop):
                await asyncio.sleep(0.02)  # coalesce a burst of events
                self._wake.clear()
                keys, self._queue = self._queue, set()
                await asyncio.gather(*(self._reconcile_safe(k) for k in keys))
        finally:
            for inf in infs:
                await inf.stop()
            # Stopping: the queued Events get a moment, not the minutes a full queue takes at
            # its rate (a stop waited up to 20 s), and none holds the stop when paused.
            left = await self.recorder.flush(timeout=STOP_FLUSH_S)
            if left:
                log.info("stopping: %d queued Events not written", left)

    async def _reconcile_safe(self, key: str) -> None:
        try:
            await self.reconcile(key)
        except (ApiError, OSError) as exc:
            log.warning("job %s: %s; will retry", key, exc)
            asyncio.get_running_loop().call_later(1.0, self._enqueue, key)

    async def reconcile(self, key: str) -> None:
        ns, name = key.split("/", 1)
        job = self.jobs.get(name, ns)
        if job is None or (job.get("metadata") or {}).get("deletionTimestamp"):
            return
        if int((job.get("status") or {}).get("generation") or 0) < self._written_gen.get(key, 0):
            return  # the watch brings our own newer status, and with it another reconcile
        self.reconciles += 1
        have = {k.rsplit("/", 1)[1] for k in self._children if k.startswith(key + "/")}
        # A job keeps the gang API its PodGroup already speaks; a new one takes the
        # upstream API where the cluster serves it (JobSpec.of).
        upstream = self.upstream_served
        if self.groups.get(name, ns) is not None:
            have.add("podgroup")
            upstream = False
        elif upstream and self.upstream_groups.get(name, ns) is not None:
            have.add("podgroup")
        pods = self.pods.by_index("job", key)
        generation = int((job.get("metadata") or {}).get("generation") or 0)
        refused = self._refused.get(key)
        if refused is not None and refused[0] != generation:
            refused = None
            self._refused.pop(key, None)

        never = self._never(job)
        gen = str((job.get("status") or {}).get("generation") or 0)
        gone = self._gone.get(key, {})
        for pod_name in [n for n, p in gone.items() if o.labels_of(p).get(LABEL_GEN) != gen]:
            del gone[pod_name]  # of a gang already replaced
        created = self._created.get(key, {})
        for pod_name in [n for n, g in created.items() if g != gen]:
            del created[pod_name]
        cached = {o.name_of(p) for p in pods}
        if any(n not in cached and n not in gone for n in created):
            return  # a worker's add or delete is still on its way to the handlers

        def observe(why: str | None) -> Any:
            return reconcile(
                Observed(
                    job=job,
                    pods=pods,
                    now=time.time(),
                    node_ready=self.node_ready,
                    have=have,
                    refused=why,
                    never=never,
                    gone=list(gone.values()),
                    node_of=self.nodes.get,
                    upstream_served=upstream,
                )
            )

        retry_due = refused is None or time.monotonic() >= refused[2]
        act = observe(None if retry_due else refused[1] if refused else None)
        refusals: list[str] = []
        kinds = {"PodGroup": "podgroup", "Service": "service", "ConfigMap": "configmap"}

        async def create(obj: dict[str, Any]) -> None:
            async with self._sem:
                try:
                    await self.client.create(obj)
                except AlreadyExists:
                    pass
                except ApiError as exc:
                    if obj["kind"] != "Pod" or exc.status not in (400, 403, 422):
                        raise
                    causes = (exc.body.get("details") or {}).get("causes")
                    refusals.append(refusal(exc.message, causes))
                    return
                if obj["kind"] in kinds:
                    self._children.add(f"{key}/{kinds[obj['kind']]}")
                elif obj["kind"] == "Pod":
                    self._created.setdefault(key, {})[o.name_of(obj)] = o.labels_of(obj).get(
                        LABEL_GEN, ""
                    )

        async def delete(pod: str, force: bool) -> None:
            async with self._sem:
                try:
                    await self.client.delete(
                        PODS, pod, ns, grace_period_seconds=0 if force else None
                    )
                except NotFound:
                    pass

        await asyncio.gather(*(delete(p, f) for p, f in act.delete))
        await asyncio.gather(*(create(obj) for obj in act.create))
        if refusals:
            backoff = min(2 * refused[3], MAX_BACKOFF) if refused else 1.0
            why = refusals[0]
            self._refused[key] = (generation, why, time.monotonic() + backoff, backoff)
            asyncio.get_running_loop().call_later(backoff, self._enqueue, key)
            if refused is None or refused[1] != why:
                log.warning("job %s: workers refused: %s; retrying with backoff", key, why)
            act = observe(why)
            act.create = []
        elif refused is not None and retry_due:
            self._refused.pop(key, None)
        if act.status is not None:
            try:
                await self.client.patch_status(TRAINING_JOBS, name, {"status": act.status}, ns)
                self._written_gen[key] = int(act.status.get("generation") or 0)
            except (NotFound, Conflict):
                self._enqueue(key)
            else:
                self._count(job, act)
        for etype, reason, message in act.events:
            self.recorder.emit(job, etype, reason, message)
        for pod_name, etype, reason, message in act.pod_events:
            pod = self.pods.get(pod_name, ns)
            uid = str((pod or {}).get("metadata", {}).get("uid") or "")
            if pod is not None and self._told.get(uid) != message:
                self._told[uid] = message
                self.recorder.emit(pod, etype, reason, message)


async def run(client: Any, stop: asyncio.Event) -> None:
    await JobController(client).run(stop)


__all__ = ["JobController", "run"]
