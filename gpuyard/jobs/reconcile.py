"""What a TrainingJob needs, and what to do about what is there. Pure: no I/O, no clock.

For a job the controller keeps: a PodGroup (minMember = replicas, so the gang scheduler
places all workers at once or none), a headless Service (stable DNS names
`<job>-worker-<i>.<job>.<ns>.svc`), a hostfile ConfigMap (one line per worker,
`slots=<gpus>`, for mpirun), and the workers `<job>-worker-<i>` with RANK, WORLD_SIZE,
LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT (for torchrun and mpirun alike), all
owned by the job.

`reconcile(observed)` returns the actions: objects to create, workers to delete, the
new status (None when unchanged) and Events. A worker that fails, or whose node is
lost, fails the whole gang: every worker is deleted and a new gang (the next
generation) is created, until backoffLimit restarts are spent. What counts as a
restart, and how its cause is found, is `gpuyard.jobs.causes`; each restart or
preemption is kept in `status.history` (the last HISTORY_LIMIT) with its cause.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from gpuyard import names
from gpuyard.jobs.causes import Cause, worker_cause
from gpuyard.jobs.spec import UPSTREAM, JobSpec, validate_job
from gpuyard.kube import objects as o

LABEL_JOB = "gpuyard.io/job"
LABEL_GEN = "gpuyard.io/job-generation"
LABEL_INDEX = "gpuyard.io/replica-index"
HOSTFILE_PATH = "/etc/gpuyard"
UPSTREAM_PODGROUP_API_VERSION = "scheduling.k8s.io/v1beta1"
KUEUE_REQUIRED = "kueue.x-k8s.io/podset-required-topology"  # read by gpuyard.scheduling
HISTORY_LIMIT = 10


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def worker_name(job: str, i: int) -> str:
    return f"{job}-worker-{i}"


def worker_dns(js: JobSpec, i: int) -> str:
    return f"{worker_name(js.name, i)}.{js.name}.{js.namespace}.svc"


def owner_ref(job: dict[str, Any]) -> dict[str, Any]:
    return o.owner_reference(job, controller=True, block=True)


def hostfile(js: JobSpec) -> str:
    return "".join(f"{worker_dns(js, i)} slots={max(js.gpus, 1)}\n" for i in range(js.replicas))


def desired_podgroup(job: dict[str, Any], js: JobSpec) -> dict[str, Any]:
    """The job's PodGroup in the API it speaks (`js.pod_group_api`): upstream
    (gang.minCount, the required topology as schedulingConstraints) or scheduler-plugins
    (minMember, scheduleTimeoutSeconds; the required topology as Kueue's annotation,
    which the gang scheduler reads on a PodGroup)."""
    md: dict[str, Any] = {
        "name": js.name,
        "namespace": js.namespace,
        "labels": {LABEL_JOB: js.name},
        "ownerReferences": [owner_ref(job)],
    }
    spec: dict[str, Any]
    if js.pod_group_api == UPSTREAM:
        api_version = UPSTREAM_PODGROUP_API_VERSION
        spec = {"schedulingPolicy": {"gang": {"minCount": js.replicas}}}
        if js.required_topology:
            spec["schedulingConstraints"] = {"topology": [{"key": js.required_topology}]}
    else:
        api_version = names.PODGROUP_API_VERSION
        spec = {"minMember": js.replicas}
        if js.schedule_timeout:
            spec["scheduleTimeoutSeconds"] = js.schedule_timeout
        if js.required_topology:
            md["annotations"] = {KUEUE_REQUIRED: js.required_topology}
    return {"apiVersion": api_version, "kind": "PodGroup", "metadata": md, "spec": spec}


def desired_service(job: dict[str, Any], js: JobSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": js.name,
            "namespace": js.namespace,
            "labels": {LABEL_JOB: js.name},
            "ownerReferences": [owner_ref(job)],
        },
        "spec": {
            "clusterIP": "None",
            "selector": {LABEL_JOB: js.name},
            "ports": [{"name": "master", "port": js.master_port, "protocol": "TCP"}],
            "publishNotReadyAddresses": True,
        },
    }


def desired_configmap(job: dict[str, Any], js: JobSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"{js.name}-hostfile",
            "namespace": js.namespace,
            "labels": {LABEL_JOB: js.name},
            "ownerReferences": [owner_ref(job)],
        },
        "data": {"hostfile": hostfile(js)},
    }


def _set_env(env: list[dict[str, Any]] | None, values: dict[str, str]) -> list[dict[str, Any]]:
    out = [e for e in env or [] if e.get("name") not in values]
    out.extend({"name": k, "value": v} for k, v in values.items())
    return out


def worker_pod(job: dict[str, Any], js: JobSpec, i: int, generation: int) -> dict[str, Any]:
    tpl = copy.deepcopy(js.template)
    tmd = tpl.get("metadata") or {}
    spec = tpl.get("spec") or {}
    labels = {
        **(tmd.get("labels") or {}),
        LABEL_JOB: js.name,
        LABEL_GEN: str(generation),
        LABEL_INDEX: str(i),
        names.LABEL_TEAM: js.team,
    }
    if js.pod_group_api != UPSTREAM:
        labels[names.POD_GROUP_LABEL] = js.name
    env = {
        "RANK": str(i),
        "WORLD_SIZE": str(js.replicas),
        "LOCAL_WORLD_SIZE": str(max(js.gpus, 1)),
        "MASTER_ADDR": worker_dns(js, 0),
        "MASTER_PORT": str(js.master_port),
        "GPUYARD_JOB": js.name,
        "GPUYARD_HOSTFILE": f"{HOSTFILE_PATH}/hostfile",
    }
    containers = []
    for ci, c in enumerate(spec.get("containers") or []):
        c = dict(c)
        c["env"] = _set_env(c.get("env"), env)
        if ci == 0 and js.gpus:
            res = dict(c.get("resources") or {})
            limits = dict(res.get("limits") or {})
            limits.setdefault(names.RESOURCE_GPU, js.gpus)
            res["limits"] = limits
            c["resources"] = res
        mounts = [m for m in c.get("volumeMounts") or [] if m.get("name") != "gpuyard-hostfile"]
        mounts.append({"name": "gpuyard-hostfile", "mountPath": HOSTFILE_PATH, "readOnly": True})
        c["volumeMounts"] = mounts
        containers.append(c)
    volumes = [v for v in spec.get("volumes") or [] if v.get("name") != "gpuyard-hostfile"]
    volumes.append({"name": "gpuyard-hostfile", "configMap": {"name": f"{js.name}-hostfile"}})
    pod_spec = {
        **spec,
        "containers": containers,
        "volumes": volumes,
        "restartPolicy": "Never",
        "schedulerName": names.SCHEDULER_NAME,
        "hostname": worker_name(js.name, i),
        "subdomain": js.name,
        "priorityClassName": js.priority_class,
    }
    if js.pod_group_api == UPSTREAM:
        pod_spec["schedulingGroup"] = {"podGroupName": js.name}
    annotations = dict(tmd.get("annotations") or {})
    if js.deadline:
        # The job's time limit, for the scheduler's reservations (a gang waiting for
        # nodes lets work sure to end in time run on them); the template's own wins.
        annotations.setdefault(names.ANN_EXPECTED_RUNTIME, f"{js.deadline}s")
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": worker_name(js.name, i),
            "namespace": js.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_ref(job)],
        },
        "spec": pod_spec,
    }


@dataclass
class Observed:
    job: dict[str, Any]
    pods: list[dict[str, Any]]
    now: float
    node_ready: Callable[[str], bool] = lambda name: True
    have: set[str] = field(default_factory=set)  # "podgroup", "service", "configmap"
    namespace_team: str | None = None
    # Why the API server refused this job's workers the last time they were created
    # (e.g. "spec.priorityClassName: no PriorityClass with name x was found"), or None.
    refused: str | None = None
    # Why the job can never fit what the cluster can ever offer (jobs.fit), or None.
    never: str | None = None
    # The last state seen of this job's workers that were deleted since (the informer's
    # final object), so a worker that is gone is explained, not just missed.
    gone: list[dict[str, Any]] = field(default_factory=list)
    node_of: Callable[[str], dict[str, Any] | None] = lambda name: None
    # the cluster serves the upstream PodGroup (scheduling.k8s.io/v1beta1)
    upstream_served: bool = False


@dataclass
class Actions:
    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[tuple[str, bool]] = field(default_factory=list)  # (pod name, force)
    status: dict[str, Any] | None = None
    events: list[tuple[str, str, str]] = field(default_factory=list)  # (type, reason, message)
    # Events on the job's workers, (pod name, type, reason, message): asked for on every
    # reconcile while they hold; the controller records each once per pod.
    pod_events: list[tuple[str, str, str, str]] = field(default_factory=list)
    # How this pass ends the gang, for metrics: ("restart", cause kind) or ("preempted", "")
    ended: tuple[str, str] | None = None


def _scheduler_reason(pods: list[dict[str, Any]]) -> str | None:
    for p in pods:
        for c in (p.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("message"):
                return str(c["message"])
    return None


def reconcile(obs: Observed) -> Actions:
    job = obs.job
    old = dict(job.get("status") or {})
    st = dict(old)
    st.setdefault("restarts", 0)
    st.setdefault("phase", "Pending")
    gen = int(st.get("generation") or 0)
    st["generation"] = gen
    act = Actions()
    phase = st["phase"]

    def finish(new_phase: str, reason: str, message: str, etype: str = "Normal") -> None:
        st["phase"] = new_phase
        st["reason"], st["message"] = reason, message
        st["completionTime"] = st.get("completionTime") or rfc3339(obs.now)
        act.events.append((etype, reason, message))

    if phase not in ("Succeeded", "Failed"):
        # A job that could not have passed the CRD's schema (stored before the schema was
        # enforced, or written by a server that does not enforce it), or whose workers the
        # API server refuses: say so, with every field, and create nothing.
        invalid = [e for e in validate_job(job) if not e.startswith(("apiVersion:", "kind:"))]
        if invalid or obs.refused:
            st["phase"] = "Pending"
            st["reason"] = "InvalidSpec" if invalid else "WorkersRefused"
            st["message"] = (
                "; ".join(invalid)
                if invalid
                else f"the API server refuses the workers: {obs.refused}"
            )
            if (old.get("reason"), old.get("message")) != (st["reason"], st["message"]):
                act.events.append(("Warning", st["reason"], st["message"]))
            return _with_status(act, old, st, obs, [])

    js = JobSpec.of(job, obs.namespace_team, obs.upstream_served)
    if phase in ("Succeeded", "Failed"):
        if phase == "Failed":
            for p in obs.pods:
                if not o.is_pod_terminal(p) and not (p.get("metadata") or {}).get(
                    "deletionTimestamp"
                ):
                    act.delete.append(
                        (
                            o.name_of(p),
                            not obs.node_ready((p.get("spec") or {}).get("nodeName") or ""),
                        )
                    )
        return _with_status(act, old, st, obs, [])

    for kind, make in (
        ("podgroup", desired_podgroup),
        ("service", desired_service),
        ("configmap", desired_configmap),
    ):
        if kind not in obs.have:
            act.create.append(make(job, js))

    current = [p for p in obs.pods if o.labels_of(p).get(LABEL_GEN) == str(gen)]
    stale = [p for p in obs.pods if o.labels_of(p).get(LABEL_GEN) != str(gen)]
    for p in stale:
        if not (p.get("metadata") or {}).get("deletionTimestamp") or not obs.node_ready(
            (p.get("spec") or {}).get("nodeName") or ""
        ):
            act.delete.append((o.name_of(p), _force(p, obs)))

    # Deadline.
    started = o.parse_time(st.get("startTime")) or o.parse_time(
        (job.get("metadata") or {}).get("creationTimestamp")
    )
    if js.deadline and started and obs.now - started.timestamp() > js.deadline:
        for p in current:
            act.delete.append((o.name_of(p), _force(p, obs)))
        finish(
            "Failed",
            "DeadlineExceeded",
            f"job ran longer than activeDeadlineSeconds={js.deadline}",
            "Warning",
        )
        return _with_status(act, old, st, obs, current)

    # Gang failure: any worker failed or lost (causes.worker_cause says why, and whether
    # it is charged as a restart).
    causes: list[Cause] = [
        c for p in current if (c := worker_cause(p, obs.node_of, obs.node_ready)) is not None
    ]
    by_index = {o.labels_of(p).get(LABEL_INDEX): p for p in current}
    if phase in ("Running", "Scheduling", "Restarting", "Pending"):
        seen = {o.name_of(p) for p in current}
        for p in obs.gone:
            if o.labels_of(p).get(LABEL_GEN) != str(gen) or o.name_of(p) in seen:
                continue
            if (p.get("status") or {}).get("phase") == "Succeeded":
                continue
            c = worker_cause(p, obs.node_of, obs.node_ready, gone=True)
            causes.append(c or Cause(f"{o.name_of(p)} was deleted"))
            seen.add(o.name_of(p))
    if phase in ("Running", "Scheduling") and st.get("runningWorkers") == js.replicas:
        for i in range(js.replicas):
            if str(i) not in by_index and worker_name(js.name, i) not in {
                o.name_of(p) for p in obs.gone
            }:
                causes.append(Cause(f"{worker_name(js.name, i)} disappeared"))
    # A gang whose every cached worker succeeded is done, whatever took them since; a
    # gang with no worker left in the cache (all gone before this pass saw them, their
    # last states in obs.gone) is not: `all` of nothing must not hide its causes.
    finished = bool(current) and all(
        o.is_pod_terminal(p) and (p.get("status") or {}).get("phase") == "Succeeded"
        for p in current
    )
    if causes and not finished:
        # A fault outweighs a preemption: the gang is charged if any worker was lost.
        causes.sort(key=lambda c: not c.counts)
        counts = causes[0].counts
        why = causes[0].text + (f" (and {len(causes) - 1} more)" if len(causes) > 1 else "")
        for p in current:
            if not (p.get("metadata") or {}).get("deletionTimestamp") or not obs.node_ready(
                (p.get("spec") or {}).get("nodeName") or ""
            ):
                act.delete.append((o.name_of(p), _force(p, obs)))
        if not counts:
            st["preemptions"] = int(st.get("preemptions") or 0) + 1
            st["generation"] = gen + 1
            st["phase"] = "Pending"
            st["reason"] = "Preempted"
            st["message"] = (
                f"{why}; waiting to be scheduled again as one gang "
                f"(a preemption, not charged as a restart: {st['restarts']} of {js.backoff_limit})"
            )
            st["runningWorkers"] = 0
            _remember(st, obs, gen, "Preempted", why)
            act.ended = ("preempted", "")
            act.events.append(("Normal", "Preempted", st["message"]))
        elif js.restart_policy == "Never":
            _remember(st, obs, gen, "WorkerFailed", why)
            finish("Failed", "WorkerFailed", why, "Warning")
        elif st["restarts"] >= js.backoff_limit:
            _remember(st, obs, gen, "BackoffLimitExceeded", why)
            finish(
                "Failed",
                "BackoffLimitExceeded",
                f"{why}; backoffLimit {js.backoff_limit} reached",
                "Warning",
            )
        else:
            st["restarts"] += 1
            st["generation"] = gen + 1
            st["phase"] = "Restarting"
            st["reason"] = "RestartingGang"
            st["message"] = (
                f"{why}; restarting {_all_workers(js.replicas)} (restart {st['restarts']} of {js.backoff_limit})"
            )
            st["runningWorkers"] = 0
            _remember(st, obs, gen, "RestartingGang", why)
            act.ended = ("restart", causes[0].kind)
            act.events.append(("Warning", "RestartingGang", st["message"]))
        return _with_status(act, old, st, obs, [])

    # All done? A worker of this gang that succeeded and was deleted since (its last
    # state in obs.gone) is done too: it is counted, and never made again.
    done = {
        o.labels_of(p).get(LABEL_INDEX)
        for p in (*current, *obs.gone)
        if o.labels_of(p).get(LABEL_GEN) == str(gen)
        and (p.get("status") or {}).get("phase") == "Succeeded"
    }
    if len(done) == js.replicas:
        finish("Succeeded", "Completed", f"{_all_workers(js.replicas)} succeeded")
        return _with_status(act, old, st, obs, current)

    # Create missing workers of this generation (once older ones with the same names left).
    taken = {o.name_of(p) for p in obs.pods}
    for i in range(js.replicas):
        if str(i) not in by_index and str(i) not in done and worker_name(js.name, i) not in taken:
            act.create.append(worker_pod(job, js, i, gen))

    running = sum(1 for p in current if (p.get("status") or {}).get("phase") == "Running")
    bound = sum(1 for p in current if (p.get("spec") or {}).get("nodeName"))
    if running == js.replicas:
        st["phase"] = "Running"
        st["reason"], st["message"] = "AllWorkersRunning", f"{_all_workers(js.replicas)} running"
        st["startTime"] = st.get("startTime") or rfc3339(obs.now)
    elif bound:
        st["phase"] = (
            "Scheduling" if phase != "Restarting" or bound == js.replicas else "Restarting"
        )
        st["reason"], st["message"] = "Starting", f"{running} of {js.replicas} workers running"
    else:
        waiting = _scheduler_reason(current)
        st["phase"] = "Restarting" if phase == "Restarting" else "Pending"
        st["reason"] = "Unschedulable" if waiting else "Waiting"
        st["message"] = waiting or (
            f"waiting for {_all_workers(js.replicas)} to be scheduled as one gang"
            if js.replicas > 1
            else "waiting for its worker to be scheduled"
        )
        last = (st.get("history") or [{}])[-1]
        if last.get("reason") == "Preempted" and last.get("generation") == gen - 1:
            # Preempted and waiting to come back: a waiting phase that says so.
            st["reason"] = "Preempted"
            st["message"] = f"{last.get('cause')}; waiting: {st['message']}"
        if obs.never:
            st["reason"], st["message"] = "CanNeverFit", obs.never
            if old.get("reason") != "CanNeverFit" or old.get("message") != obs.never:
                act.events.append(("Warning", "CanNeverFit", obs.never))
            # Every waiting worker says so too (the controller tells each pod once).
            act.pod_events.extend(
                (o.name_of(p), "Warning", "CanNeverFit", obs.never) for p in current
            )
    return _with_status(act, old, st, obs, current)


def _all_workers(n: int) -> str:
    return "its worker" if n == 1 else f"all {n} workers"


def _remember(st: dict[str, Any], obs: Observed, gen: int, reason: str, cause: str) -> None:
    """Keep the gang's end in status.history: when, which gang, why (the newest last)."""
    entry = {
        "time": rfc3339(obs.now),
        "generation": gen,
        "reason": reason,
        "cause": cause,
    }
    st["history"] = [*(st.get("history") or []), entry][-HISTORY_LIMIT:]


def _force(pod: dict[str, Any], obs: Observed) -> bool:
    node = (pod.get("spec") or {}).get("nodeName")
    return bool(node) and not obs.node_ready(str(node))


def _with_status(
    act: Actions,
    old: dict[str, Any],
    st: dict[str, Any],
    obs: Observed,
    current: list[dict[str, Any]],
) -> Actions:
    if st["phase"] not in ("Restarting",) and current:
        st["runningWorkers"] = sum(
            1 for p in current if (p.get("status") or {}).get("phase") == "Running"
        )
        st["readyWorkers"] = sum(
            1
            for p in current
            if o.condition_true(p, "Ready") and (p.get("status") or {}).get("phase") == "Running"
        )
    st.setdefault("runningWorkers", 0)
    st.setdefault("readyWorkers", 0)
    conds = st.get("conditions")
    conds, _ = o.set_condition(
        conds,
        "Scheduled",
        "True" if st["phase"] in ("Running", "Succeeded") or st.get("runningWorkers") else "False",
        st.get("reason", ""),
        st.get("message", ""),
        now=rfc3339(obs.now),
    )
    conds, _ = o.set_condition(
        conds,
        "Complete" if st["phase"] != "Failed" else "Failed",
        "True" if st["phase"] in ("Succeeded", "Failed") else "False",
        st.get("reason", ""),
        st.get("message", ""),
        now=rfc3339(obs.now),
    )
    st["conditions"] = conds
    st["observedGeneration"] = (obs.job.get("metadata") or {}).get("generation", 0)
    if st != old:
        act.status = st
    return act
