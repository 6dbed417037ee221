"""The Job controller (batch/v1), level-triggered on Job and pod informers.

Keeps min(parallelism, completions left) pods active; counts pods that succeeded and
failed (remembered, so a pod garbage-collected later still counts); Indexed mode gives
each pod its completion index (annotation and label batch.kubernetes.io/
job-completion-index, as JobSet reads it) and reports completedIndexes; past
backoffLimit failures the Job fails (BackoffLimitExceeded) and its active pods are
deleted; spec.suspend deletes active pods and holds new ones (as Kueue uses it).
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
from typing import Any

from gpuyard import names
from gpuyard.cluster.workloads.loop import Controller
from gpuyard.cluster.workloads.replicasets import controller_of, pod_active, pod_ready
from gpuyard.kube import objects as o
from gpuyard.kube.errors import NotFound
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.resources import BUILTIN, PODS

log = logging.getLogger("gpuyard.cluster.workloads")

JOBS = BUILTIN[("batch/v1", "Job")]
INDEX = "batch.kubernetes.io/job-completion-index"
DEFAULT_POD_SECONDS = 1.0


def index_ranges(indexes: set[int]) -> str:
    """Completed indexes as the API writes them: "0-3,5,7-9"."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(indexes):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def parse_ranges(text: str | None) -> set[int]:
    got: set[int] = set()
    for part in (text or "").split(","):
        if not part:
            continue
        a, _, b = part.partition("-")
        got.update(range(int(a), int(b or a) + 1))
    return got


def index_of(pod: dict[str, Any]) -> int | None:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(INDEX)
    try:
        return int(raw) if raw is not None else None
    except ValueError:
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
        # job uid -> names of pods created but not seen yet / seen finished
        self._adds: dict[str, dict[str, int | None]] = {}
        self._succeeded: dict[str, dict[str, int | None]] = {}
        self._failed: dict[str, set[str]] = {}

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

        self.jobs.add_handler(job_ev, lambda old, new: job_ev(new), job_ev)

        def pod_ev(pod: dict[str, Any]) -> None:
            owner = self._owner_index(pod)
            if owner is not None:
                self.enqueue(owner)

        self.pods.add_handler(pod_ev, lambda old, new: pod_ev(new), pod_ev)

    async def reconcile(self, key: str) -> None:
        ns, name = key.split("/", 1)
        job = self.jobs.get(name, ns)
        if job is None:
            return
        md, spec = job["metadata"], job.get("spec") or {}
        uid = md.get("uid") or ""
        cur = job.get("status") or {}
        pods = [p for p in self.pods.by_index("job-owner", key) if controller_of(p)["uid"] == uid]  # type: ignore[index]
        succeeded = self._succeeded.setdefault(uid, {})
        failed = self._failed.setdefault(uid, set())
        for p in pods:
            phase = (p.get("status") or {}).get("phase")
            if phase == "Succeeded":
                succeeded[o.name_of(p)] = index_of(p)
            elif phase == "Failed":
                failed.add(o.name_of(p))
        adds = self._adds.setdefault(uid, {})
        for p in pods:
            adds.pop(o.name_of(p), None)
        active = [p for p in pods if pod_active(p)]
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        n_failed = max(int(cur.get("failed") or 0), len(failed))
        done_idx = parse_ranges(cur.get("completedIndexes")) | {
            i for i in succeeded.values() if i is not None
        }
        if indexed:
            n_succeeded = len(done_idx)
        else:
            n_succeeded = max(int(cur.get("succeeded") or 0), len(succeeded))
        conds = list(cur.get("conditions") or [])
        finished = any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conds
        )
        suspended = bool(spec.get("suspend"))
        now = o.now_rfc3339()
        status: dict[str, Any] = {}
        if not finished:
            if completions is None:
                complete = n_succeeded > 0 and not active
            else:
                complete = n_succeeded >= int(completions)
            too_many = n_failed > int(spec.get("backoffLimit", 6))
            if complete:
                conds = self._with(conds, "SuccessCriteriaMet", "CompletionsReached", now)
                conds = self._with(conds, "Complete", "CompletionsReached", now)
                status["completionTime"] = now
                finished = True
            elif too_many:
                msg = "Job has reached the specified backoff limit"
                conds = self._with(conds, "FailureTarget", "BackoffLimitExceeded", now, msg)
                conds = self._with(conds, "Failed", "BackoffLimitExceeded", now, msg)
                finished = True
        if finished or suspended:
            await self._delete(active)
            active = []
        else:
            if not cur.get("startTime"):
                status["startTime"] = now
            if indexed:
                total = int(completions or 1)
                busy = {index_of(p) for p in active} | set(adds.values())
                missing = [i for i in range(total) if i not in done_idx and i not in busy]
                room = max(0, parallelism - len(active) - len(adds))
                await self._create(job, uid, list(missing[:room]))
            else:
                left = parallelism if completions is None else int(completions) - n_succeeded
                if completions is None and n_succeeded:
                    left = 0
                want = min(parallelism, max(0, left))
                n = want - len(active) - len(adds)
                if n > 0:
                    await self._create(job, uid, [None] * n)
        susp = self._suspended(conds, suspended, now)
        if susp is not None:
            conds = susp
        status.update(
            {
                "active": len(active),
                "ready": sum(1 for p in active if pod_ready(p)),
                "succeeded": n_succeeded,
                "failed": n_failed,
                "conditions": conds,
            }
        )
        if indexed:
            status["completedIndexes"] = index_ranges(done_idx)
        if all(cur.get(k, 0 if isinstance(v, int) else None) == v for k, v in status.items()):
            return
        await self._write(self.client.patch_status(JOBS, name, {"status": status}, ns))

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

    async def _create(self, job: dict[str, Any], uid: str, indexes: list[int | None]) -> None:
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
            self._adds.setdefault(uid, {})[o.name_of(made)] = i

        results = await asyncio.gather(*(one(i) for i in indexes), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _delete(self, pods: list[dict[str, Any]]) -> None:
        async def one(pod: dict[str, Any]) -> None:
            try:
                await self._write(self.client.delete(PODS, o.name_of(pod), o.namespace_of(pod)))
            except NotFound:
                pass

        await asyncio.gather(*(one(p) for p in pods))
