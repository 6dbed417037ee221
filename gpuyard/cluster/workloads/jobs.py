"""The Job controller (batch/v1), level-triggered on Job and pod informers.

Keeps min(parallelism, completions left) pods active; counts pods that succeeded and
failed (remembered, so a pod garbage-collected later still counts). A pod removed
before it finished, by someone other than this controller, failed (its last state is
what the pod failure policy judges: an evicted pod says DisruptionTarget). One being
deleted failed at once under podReplacementPolicy TerminatingOrFailed; under Failed
(the default with a podFailurePolicy) it counts by the phase it ends in, so a pod
whose containers handle SIGTERM and exit 0 succeeded, and no replacement starts
while it terminates (status.terminating counts it), as kube-controller-manager does. spec.podFailurePolicy decides per failed pod (gpuyard.cluster.
workloads.podfailure): Ignore does not count it, FailJob fails the Job at once
(reason PodFailurePolicy), FailIndex fails its index. Indexed mode gives each pod its
completion index (annotation and label batch.kubernetes.io/job-completion-index, as
JobSet reads it) and reports completedIndexes; with backoffLimitPerIndex an index
that failed more often is given up (failedIndexes; maxFailedIndexes fails the Job).
Past backoffLimit failures the Job fails (BackoffLimitExceeded), past
activeDeadlineSeconds from its start too (DeadlineExceeded); a finished Job's active
pods are deleted. spec.suspend deletes active pods and holds new ones (as Kueue uses
it); resuming starts the deadline's clock again. ttlSecondsAfterFinished deletes a
finished Job (and, in the foreground, its pods) that long after it finished.
Conditions SuccessCriteriaMet/Complete and FailureTarget/Failed are what
`kubectl wait --for=condition=complete` reads.

Simulated pods run until told otherwise: a Job's pods without the
`gpuyard.io/sim-duration` annotation get it, `--set workloads_job_pod_seconds=S`
(1 s by default), so they succeed; set `gpuyard.io/sim-exit-code` on the template to
make them fail.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gpuyard import names
from gpuyard.cluster.workloads import podfailure
from gpuyard.cluster.workloads.jobindex import (
    INDEX,
    INDEX_FAILURES,
    failures_before,
    index_of,
    index_ranges,
    parse_ranges,
)
from gpuyard.cluster.workloads.loop import Controller
from gpuyard.cluster.workloads.replicasets import controller_of, pod_active, pod_ready
from gpuyard.kube import objects as o
from gpuyard.kube.errors import NotFound
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.resources import BUILTIN, PODS

log = logging.getLogger("gpuyard.cluster.workloads")

JOBS = BUILTIN[("batch/v1", "Job")]
DEFAULT_POD_SECONDS = 1.0
__all__ = ["JOBS", "INDEX", "JobController", "index_ranges", "parse_ranges"]


@dataclass
class Failure:
    index: int | None
    verdict: podfailure.Verdict
    before: int  # failures of its index before it (the pod's annotation)


@dataclass
class JobMemory:
    """What the controller remembers of one Job (by uid) between passes."""

    adds: dict[str, int | None] = field(default_factory=dict)  # made, not seen yet
    succeeded: dict[str, int | None] = field(default_factory=dict)
    failed: dict[str, Failure] = field(default_factory=dict)
    ours: set[str] = field(default_factory=set)  # pods this controller deleted
    gone: list[dict[str, Any]] = field(default_factory=list)  # removed pods' last states


def _seconds_since(ts: str | None) -> float | None:
    t = o.parse_time(ts)
    return None if t is None else (datetime.now(UTC) - t).total_seconds()


def _only_failed_replaced(spec: dict[str, Any]) -> bool:
    """podReplacementPolicy Failed (the API's default when a podFailurePolicy is set):
    a pod being deleted is replaced, and counted, only once it has ended."""
    policy = spec.get("podReplacementPolicy")
    if policy is None:
        return spec.get("podFailurePolicy") is not None
    return bool(policy == "Failed")


def _finished_at(status: dict[str, Any]) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(status.get("completionTime") or c.get("lastTransitionTime") or "") or None
    return None


class JobController(Controller):
    what = "job"

    def __init__(
        self,
        client: Any,
        informers: InformerFactory | None = None,
        pod_seconds: float = DEFAULT_POD_SECONDS,
    ) -> None:
        super().__init__()
        self.client = client
        self.pod_seconds = pod_seconds
        mk = informer_maker(client, informers)
        self.jobs = mk(JOBS, name="workloads-jobs")
        self.pods = mk(PODS, name="workloads-job-pods")
        self.pods.add_index("job-owner", self._owner_index)
        self._mem: dict[str, JobMemory] = {}  # job uid -> memory
        self._timers: dict[str, asyncio.TimerHandle] = {}  # job key -> next timed pass

    @staticmethod
    def _owner_index(pod: dict[str, Any]) -> str | None:
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != "Job":
            return None
        return f"{o.namespace_of(pod)}/{ref.get('name')}"

    def informers(self) -> tuple[Any, ...]:
        return (self.pods, self.jobs)

    def _wire(self) -> None:
        def job_ev(job: dict[str, Any]) -> None:
            self.enqueue(o.key_of(job))

        def job_gone(job: dict[str, Any]) -> None:
            self._mem.pop(o.meta(job).get("uid") or "", None)
            h = self._timers.pop(o.key_of(job), None)
            if h is not None:
                h.cancel()

        self.jobs.add_handler(job_ev, lambda old, new: job_ev(new), job_gone)

        def pod_ev(pod: dict[str, Any]) -> None:
            owner = self._owner_index(pod)
            if owner is not None:
                self.enqueue(owner)

        def pod_gone(pod: dict[str, Any]) -> None:
            owner = self._owner_index(pod)
            if owner is None:
                return
            uid = (controller_of(pod) or {}).get("uid") or ""
            mem = self._mem.get(uid)
            if mem is not None:
                mem.gone.append(pod)
            self.enqueue(owner)

        self.pods.add_handler(pod_ev, lambda old, new: pod_ev(new), pod_gone)

    def _wake_in(self, key: str, seconds: float) -> None:
        """Reconcile `key` again in `seconds` (the earliest asked for wins)."""
        loop = asyncio.get_running_loop()
        when = loop.time() + max(0.0, seconds)
        h = self._timers.get(key)
        if h is not None and not h.cancelled() and h.when() <= when and h.when() > loop.time():
            return
        if h is not None:
            h.cancel()
        self._timers[key] = loop.call_at(when, self.enqueue, key)

    def _observe(self, mem: JobMemory, spec: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        """Note the pods that succeeded or failed since the last pass."""
        policy = spec.get("podFailurePolicy")
        # podReplacementPolicy Failed: a terminating pod is judged by how it ends
        by_phase = _only_failed_replaced(spec)
        gone, mem.gone = mem.gone, []
        for p, removed in [*((p, False) for p in pods), *((p, True) for p in gone)]:
            pname = o.name_of(p)
            mem.adds.pop(pname, None)
            phase = (p.get("status") or {}).get("phase")
            if phase == "Succeeded":
                if pname not in mem.failed:  # not one counted failed when its deletion began
                    mem.succeeded[pname] = index_of(p)
                continue
            if pname in mem.failed or pname in mem.ours:
                continue
            deleting = bool(o.meta(p).get("deletionTimestamp")) and not by_phase
            if phase == "Failed" or removed or deleting:
                verdict = podfailure.judge(p, policy)
                mem.failed[pname] = Failure(index_of(p), verdict, failures_before(p))

    async def reconcile(self, key: str) -> None:
        ns, name = key.split("/", 1)
        job = self.jobs.get(name, ns)
        if job is None:
            return
        md, spec = job["metadata"], job.get("spec") or {}
        if md.get("deletionTimestamp"):
            return
        uid = md.get("uid") or ""
        cur = job.get("status") or {}
        mem = self._mem.setdefault(uid, JobMemory())
        pods = [
            p
            for p in self.pods.by_index("job-owner", key)
            if (controller_of(p) or {}).get("uid") == uid
        ]
        self._observe(mem, spec, pods)
        active = [p for p in pods if pod_active(p)]
        terminating = sum(
            1 for p in pods if o.meta(p).get("deletionTimestamp") and not o.is_pod_terminal(p)
        )
        # under podReplacementPolicy Failed a terminating pod still holds its place
        held = terminating if _only_failed_replaced(spec) else 0
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        per_index = spec.get("backoffLimitPerIndex") if indexed else None
        counted = [f for f in mem.failed.values() if f.verdict.action != podfailure.IGNORE]
        n_failed = max(int(cur.get("failed") or 0), len(counted))
        # index -> failures so far (with backoffLimitPerIndex)
        index_fails: dict[int, int] = {}
        for f in counted:
            if f.index is not None:
                index_fails[f.index] = max(index_fails.get(f.index, 0), f.before + 1)
        failed_idx: set[int] = set()
        if per_index is not None:
            failed_idx = parse_ranges(cur.get("failedIndexes")) | {
                i for i, n in index_fails.items() if n > int(per_index)
            }
            failed_idx |= {
                f.index
                for f in counted
                if f.index is not None and f.verdict.action == podfailure.FAIL_INDEX
            }
        done_idx = (
            parse_ranges(cur.get("completedIndexes"))
            | {i for i in mem.succeeded.values() if i is not None}
        ) - failed_idx
        n_succeeded = (
            len(done_idx) if indexed else max(int(cur.get("succeeded") or 0), len(mem.succeeded))
        )
        conds = list(cur.get("conditions") or [])
        finished = _finished_at(cur) is not None
        suspended = bool(spec.get("suspend"))
        now = o.now_rfc3339()
        status: dict[str, Any] = {}
        start = cur.get("startTime")
        was_suspended = any(
            c.get("type") == "Suspended" and c.get("status") == "True" for c in conds
        )
        if not finished and not suspended and (not start or was_suspended):
            start = status["startTime"] = now  # first start, or resumed: the clock restarts
        if not finished:
            failure = self._failure(
                spec, counted, n_failed, failed_idx, start, suspended, indexed, done_idx
            )
            if failure is not None:
                reason, msg = failure
                conds = self._with(conds, "FailureTarget", reason, now, msg)
                conds = self._with(conds, "Failed", reason, now, msg)
                finished = True
            elif (
                n_succeeded >= int(completions)
                if completions is not None
                else (n_succeeded > 0 and not active)
            ):
                conds = self._with(conds, "SuccessCriteriaMet", "CompletionsReached", now)
                conds = self._with(conds, "Complete", "CompletionsReached", now)
                status["completionTime"] = now
                finished = True
        if finished or suspended:
            await self._delete(mem, active)
            active = []
        else:
            if failed_idx:
                doomed = [p for p in active if index_of(p) in failed_idx]
                await self._delete(mem, doomed)
                active = [p for p in active if p not in doomed]
            if indexed:
                total = int(completions or 1)
                busy = {index_of(p) for p in active} | set(mem.adds.values())
                if held:
                    busy |= {index_of(p) for p in pods if not o.is_pod_terminal(p)}
                missing = [
                    i
                    for i in range(total)
                    if i not in done_idx and i not in busy and i not in failed_idx
                ]
                room = max(0, parallelism - len(active) - len(mem.adds) - held)
                fails = index_fails if per_index is not None else None
                await self._create(job, mem, list(missing[:room]), fails)
            else:
                left = parallelism if completions is None else int(completions) - n_succeeded
                if completions is None and n_succeeded:
                    left = 0
                n = min(parallelism, max(0, left)) - len(active) - len(mem.adds) - held
                if n > 0:
                    await self._create(job, mem, [None] * n, None)
            deadline = spec.get("activeDeadlineSeconds")
            since = _seconds_since(start)
            if deadline is not None and since is not None:
                self._wake_in(key, float(deadline) - since + 0.05)
        susp = self._suspended(conds, suspended, now)
        if susp is not None:
            conds = susp
        status.update(
            {
                "active": len(active),
                "ready": sum(1 for p in active if pod_ready(p)),
                "succeeded": n_succeeded,
                "failed": n_failed,
                "terminating": terminating,
                "conditions": conds,
            }
        )
        if indexed:
            status["completedIndexes"] = index_ranges(done_idx)
        if per_index is not None:
            status["failedIndexes"] = index_ranges(failed_idx)
        if any(cur.get(k, 0 if isinstance(v, int) else None) != v for k, v in status.items()):
            job = await self._write(self.client.patch_status(JOBS, name, {"status": status}, ns))
        if finished:
            await self._expire(key, job)

    def _failure(
        self,
        spec: dict[str, Any],
        counted: list[Failure],
        n_failed: int,
        failed_idx: set[int],
        start: str | None,
        suspended: bool,
        indexed: bool,
        done_idx: set[int],
    ) -> tuple[str, str] | None:
        """Why the Job fails now (reason, message), or None."""
        fail_job = next((f for f in counted if f.verdict.action == podfailure.FAIL_JOB), None)
        if fail_job is not None:
            return "PodFailurePolicy", fail_job.verdict.message
        max_failed = spec.get("maxFailedIndexes")
        if max_failed is not None and len(failed_idx) > int(max_failed):
            return (
                "MaxFailedIndexesExceeded",
                "Job has exceeded the specified maximal number of failed indexes",
            )
        if n_failed > int(spec.get("backoffLimit", 6)):
            return "BackoffLimitExceeded", "Job has reached the specified backoff limit"
        if indexed and failed_idx:
            total = int(spec.get("completions") or 1)
            if len(done_idx) + len(failed_idx) >= total:
                return "FailedIndexes", "Job has failed indexes"
        deadline = spec.get("activeDeadlineSeconds")
        since = _seconds_since(start)
        if deadline is not None and not suspended and since is not None and since >= deadline:
            return "DeadlineExceeded", "Job was active longer than specified deadline"
        return None

    async def _expire(self, key: str, job: dict[str, Any]) -> None:
        """Delete a finished Job ttlSecondsAfterFinished after it finished."""
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if ttl is None:
            return
        since = _seconds_since(_finished_at(job.get("status") or {}))
        if since is None:
            return
        if since < float(ttl):
            self._wake_in(key, float(ttl) - since + 0.05)
            return
        md = job["metadata"]
        try:
            await self._write(
                self.client.delete(
                    JOBS,
                    md["name"],
                    md.get("namespace"),
                    propagation_policy="Foreground",
                    preconditions={"uid": md.get("uid") or ""},
                )
            )
            log.info("job %s: deleted %ss after it finished (ttlSecondsAfterFinished)", key, ttl)
        except NotFound:
            pass

    @staticmethod
    def _with(
        conds: list[dict[str, Any]], ctype: str, reason: str, now: str, message: str = ""
    ) -> list[dict[str, Any]]:
        if any(c.get("type") == ctype and c.get("status") == "True" for c in conds):
            return conds
        c = {
            "type": ctype,
            "status": "True",
            "reason": reason,
            "message": message or "Reached expected number of succeeded pods",
            "lastProbeTime": now,
            "lastTransitionTime": now,
        }
        return [x for x in conds if x.get("type") != ctype] + [c]

    @staticmethod
    def _suspended(
        conds: list[dict[str, Any]], suspended: bool, now: str
    ) -> list[dict[str, Any]] | None:
        prev = next((c for c in conds if c.get("type") == "Suspended"), None)
        if suspended and (prev is None or prev.get("status") != "True"):
            c = {
                "type": "Suspended",
                "status": "True",
                "reason": "JobSuspended",
                "message": "Job suspended",
                "lastProbeTime": now,
                "lastTransitionTime": now,
            }
        elif not suspended and prev is not None and prev.get("status") == "True":
            c = {
                "type": "Suspended",
                "status": "False",
                "reason": "JobResumed",
                "message": "Job resumed",
                "lastProbeTime": now,
                "lastTransitionTime": now,
            }
        else:
            return None
        return [x for x in conds if x.get("type") != "Suspended"] + [c]

    async def _create(
        self,
        job: dict[str, Any],
        mem: JobMemory,
        indexes: list[int | None],
        index_fails: dict[int, int] | None,
    ) -> None:
        tmpl = (job.get("spec") or {}).get("template") or {}
        tmd = tmpl.get("metadata") or {}
        ns = o.namespace_of(job)

        async def one(i: int | None) -> None:
            labels = dict(tmd.get("labels") or {})
            ann = dict(tmd.get("annotations") or {})
            ann.setdefault(names.ANN_SIM_DURATION, str(self.pod_seconds))
            prefix = f"{o.name_of(job)}-"
            if i is not None:
                labels[INDEX] = ann[INDEX] = str(i)
                prefix = f"{o.name_of(job)}-{i}-"
                if index_fails is not None:
                    ann[INDEX_FAILURES] = str(index_fails.get(i, 0))
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "generateName": prefix,
                    "namespace": ns,
                    "labels": labels,
                    "annotations": ann,
                    "ownerReferences": [o.owner_reference(job)],
                },
                "spec": tmpl.get("spec") or {},
            }
            made = await self._write(self.client.create(body, ns))
            mem.adds[o.name_of(made)] = i

        results = await asyncio.gather(*(one(i) for i in indexes), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _delete(self, mem: JobMemory, pods: list[dict[str, Any]]) -> None:
        async def one(pod: dict[str, Any]) -> None:
            mem.ours.add(o.name_of(pod))
            try:
                await self._write(self.client.delete(PODS, o.name_of(pod), o.namespace_of(pod)))
            except NotFound:
                pass

        await asyncio.gather(*(one(p) for p in pods))
