"""The CronJob controller (batch/v1), level-triggered on CronJob and Job informers, with
one timer per CronJob for its next scheduled time (no polling).

At each pass it finds the most recent scheduled time since the last one (or the
CronJob's creation), no older than startingDeadlineSeconds, read in spec.timeZone (the
process's local zone when unset) with gpuyard.k8s.cron, and makes that run's Job:
`<cronjob>-<scheduled minutes since the epoch>` from spec.jobTemplate, owned by the
CronJob, annotated batch.kubernetes.io/cronjob-scheduled-timestamp. concurrencyPolicy:
Allow runs alongside, Forbid skips a run while one is active, Replace deletes the
active ones first. spec.suspend makes no new runs. Finished Jobs beyond
successfulJobsHistoryLimit (3) and failedJobsHistoryLimit (1) are deleted, oldest
first. Status (active, lastScheduleTime, lastSuccessfulTime) is written on change;
Events SuccessfulCreate, SawCompletedJob, SuccessfulDelete, JobAlreadyActive and
MissSchedule say what it did.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from gpuyard.cluster.workloads.jobs import JOBS
from gpuyard.cluster.workloads.loop import Controller
from gpuyard.cluster.workloads.replicasets import controller_of
from gpuyard.k8s import cron
from gpuyard.kube import objects as o
from gpuyard.kube.errors import AlreadyExists, NotFound
from gpuyard.kube.events import EventRecorder
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.resources import BUILTIN

log = logging.getLogger("gpuyard.cluster.workloads")

CRONJOBS = BUILTIN[("batch/v1", "CronJob")]
SCHEDULED_AT = "batch.kubernetes.io/cronjob-scheduled-timestamp"


def finished(job: dict[str, Any]) -> str | None:
    """ "Complete" or "Failed" when the Job finished, else None."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return None


def _ref(job: dict[str, Any]) -> dict[str, Any]:
    md = job["metadata"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "namespace": md.get("namespace"),
        "name": md["name"],
        "uid": md.get("uid"),
        "resourceVersion": md.get("resourceVersion"),
    }


def _stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _started(job: dict[str, Any]) -> str:
    md = job.get("metadata") or {}
    return str(
        (md.get("annotations") or {}).get(SCHEDULED_AT)
        or (job.get("status") or {}).get("startTime")
        or md.get("creationTimestamp")
        or ""
    )


class CronJobController(Controller):
    what = "cronjob"

    def __init__(self, client: Any, informers: InformerFactory | None = None) -> None:
        super().__init__()
        self.client = client
        mk = informer_maker(client, informers)
        self.crons = mk(CRONJOBS, name="workloads-cronjobs")
        self.jobs = mk(JOBS, name="workloads-jobs")
        self.jobs.add_index("cronjob-owner", self._owner_index)
        self.recorder = EventRecorder(client, "cronjob-controller")
        self._timers: dict[str, asyncio.TimerHandle] = {}

    @staticmethod
    def _owner_index(job: dict[str, Any]) -> str | None:
        ref = controller_of(job)
        if ref is None or ref.get("kind") != "CronJob":
            return None
        return f"{o.namespace_of(job)}/{ref.get('name')}"

    def informers(self) -> tuple[Any, ...]:
        return (self.jobs, self.crons)

    def _wire(self) -> None:
        def cj_ev(cj: dict[str, Any]) -> None:
            self.enqueue(o.key_of(cj))

        def cj_gone(cj: dict[str, Any]) -> None:
            key = o.key_of(cj)
            h = self._timers.pop(key, None)
            if h is not None:
                h.cancel()

        self.crons.add_handler(cj_ev, lambda old, new: cj_ev(new), cj_gone)

        def job_ev(job: dict[str, Any]) -> None:
            owner = self._owner_index(job)
            if owner is not None:
                self.enqueue(owner)

        self.jobs.add_handler(job_ev, lambda old, new: job_ev(new), job_ev)

    def _wake_at(self, key: str, when: datetime) -> None:
        loop = asyncio.get_running_loop()
        delay = max(0.0, (when - datetime.now(UTC)).total_seconds()) + 0.05
        h = self._timers.pop(key, None)
        if h is not None:
            h.cancel()
        self._timers[key] = loop.call_later(delay, self.enqueue, key)

    async def reconcile(self, key: str) -> None:
        ns, name = key.split("/", 1)
        cj = self.crons.get(name, ns)
        if cj is None:
            return
        md, spec = cj["metadata"], cj.get("spec") or {}
        uid = md.get("uid")
        cur = cj.get("status") or {}
        jobs = [
            j
            for j in self.jobs.by_index("cronjob-owner", key)
            if (controller_of(j) or {}).get("uid") == uid
        ]
        by_uid = {j["metadata"].get("uid"): j for j in jobs}
        # active: the refs kept from before whose Job is still running, and running Jobs
        # not listed yet (the status write of their creation may have been lost)
        active = [
            r
            for r in cur.get("active") or []
            if r.get("uid") in by_uid and not finished(by_uid[r["uid"]])
        ]
        listed = {r.get("uid") for r in active}
        active += [
            _ref(j)
            for j in jobs
            if not finished(j)
            and j["metadata"].get("uid") not in listed
            and not j["metadata"].get("deletionTimestamp")
        ]
        for r in cur.get("active") or []:
            j = by_uid.get(r.get("uid"))
            if j is not None and finished(j):
                msg = f"Saw completed job: {r.get('name')}, condition: {finished(j)}"
                self.recorder.emit(cj, "Normal", "SawCompletedJob", msg)
        want: dict[str, Any] = {}
        done = [j for j in jobs if finished(j) and not j["metadata"].get("deletionTimestamp")]
        ok = [j for j in done if finished(j) == "Complete"]
        last_ok = max(
            (str((j.get("status") or {}).get("completionTime") or "") for j in ok), default=""
        )
        if last_ok and last_ok > str(cur.get("lastSuccessfulTime") or ""):
            want["lastSuccessfulTime"] = last_ok
        if md.get("deletionTimestamp"):
            return
        await self._prune(cj, ok, int(spec.get("successfulJobsHistoryLimit", 3)))
        await self._prune(
            cj,
            [j for j in done if finished(j) == "Failed"],
            int(spec.get("failedJobsHistoryLimit", 1)),
        )
        if not spec.get("suspend"):
            made = await self._schedule(key, cj, active, jobs)
            if made is not None:
                want["lastScheduleTime"], active = made
        want["active"] = active or None  # merge patch: None drops the list
        change = {k: v for k, v in want.items() if (cur.get(k) or None) != v}
        if change:
            await self._write(self.client.patch_status(CRONJOBS, name, {"status": change}, ns))

    async def _schedule(
        self,
        key: str,
        cj: dict[str, Any],
        active: list[dict[str, Any]],
        jobs: list[dict[str, Any]],
    ) -> tuple[str, list[dict[str, Any]]] | None:
        """Start the run that is due, if one is; wake again at the next scheduled time.
        Returns (lastScheduleTime, active refs) when a run was started."""
        md, spec = cj["metadata"], cj.get("spec") or {}
        cur = cj.get("status") or {}
        try:
            sched = cron.parse(str(spec.get("schedule") or ""))
            tz = cron.zone(spec.get("timeZone"))
        except ValueError as exc:
            self.recorder.emit(cj, "Warning", "UnparseableSchedule", f"{exc}")
            return None
        now = datetime.now(UTC).astimezone(tz)  # tz None: the local zone
        last = o.parse_time(cur.get("lastScheduleTime") or md.get("creationTimestamp"))
        earliest = (last or now).astimezone(now.tzinfo)
        deadline = spec.get("startingDeadlineSeconds")
        if deadline is not None:
            earliest = max(earliest, now - timedelta(seconds=int(deadline)))
        due = sched.latest(earliest, now)
        nxt = sched.next(now, earliest if sched.every_s else None)
        if nxt is not None:
            self._wake_at(key, nxt)
        if due is None:
            if deadline is not None and last is not None:
                missed = sched.latest(last.astimezone(now.tzinfo), now)
                if missed is not None and (cur.get("lastScheduleTime") or "") < _stamp(missed):
                    self.recorder.emit(
                        cj,
                        "Warning",
                        "MissSchedule",
                        f"Missed scheduled time to start a job: {_stamp(missed)}",
                    )
            return None
        policy = spec.get("concurrencyPolicy") or "Allow"
        if active and policy == "Forbid":
            self.recorder.emit(
                cj,
                "Normal",
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is Forbid",
            )
            return None
        if active and policy == "Replace":
            for ref in active:
                await self._delete_job(cj, ref["name"], ref.get("uid"))
            active = []
        name = f"{md['name']}-{int(due.timestamp() // 60)}"
        made = next((j for j in jobs if j["metadata"]["name"] == name), None)
        if made is not None and o.parse_time(_started(made)) != due:
            # this minute's Job is an earlier run's (a schedule finer than a minute, as
            # @every 10s): the name is taken, so this run waits for the next minute
            return None
        if made is None:
            made = await self._create(cj, name, due)
        refs = list(active)
        if made is not None and not finished(made):
            if made["metadata"].get("uid") not in {r.get("uid") for r in refs}:
                refs.append(_ref(made))
        return _stamp(due), refs

    async def _create(self, cj: dict[str, Any], name: str, due: datetime) -> dict[str, Any] | None:
        tmpl = (cj.get("spec") or {}).get("jobTemplate") or {}
        tmd = tmpl.get("metadata") or {}
        ns = o.namespace_of(cj)
        body = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": dict(tmd.get("labels") or {}),
                "annotations": {
                    **(tmd.get("annotations") or {}),
                    SCHEDULED_AT: due.isoformat(timespec="seconds").replace("+00:00", "Z"),
                },
                "ownerReferences": [o.owner_reference(cj)],
            },
            "spec": tmpl.get("spec") or {},
        }
        try:
            job: dict[str, Any] = await self._write(self.client.create(body, ns))
        except AlreadyExists:
            got = self.jobs.get(name, ns)
            if got is None or (controller_of(got) or {}).get("uid") != cj["metadata"].get("uid"):
                self.recorder.emit(
                    cj, "Warning", "FailedCreate", f"Error creating job: {name} already exists"
                )
                return None
            return got
        self.recorder.emit(cj, "Normal", "SuccessfulCreate", f"Created job {name}")
        return job

    async def _delete_job(self, cj: dict[str, Any], name: str, uid: str | None) -> None:
        try:
            await self._write(
                self.client.delete(
                    JOBS,
                    name,
                    o.namespace_of(cj),
                    propagation_policy="Background",
                    preconditions={"uid": uid} if uid else None,
                )
            )
        except NotFound:
            return
        self.recorder.emit(cj, "Normal", "SuccessfulDelete", f"Deleted job {name}")

    async def _prune(self, cj: dict[str, Any], done: list[dict[str, Any]], keep: int) -> None:
        """Delete the oldest finished Jobs beyond `keep`."""
        if len(done) <= keep:
            return
        for j in sorted(done, key=_started)[: len(done) - keep]:
            await self._delete_job(cj, j["metadata"]["name"], j["metadata"].get("uid"))
