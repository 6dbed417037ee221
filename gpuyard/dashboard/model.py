"""What the dashboard shows, as pure functions of Kubernetes objects: a node's state
and summary, a TrainingJob's or gang's row with why it waits, a Team's row, a health
event. No I/O; the hub feeds them from its watches."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from gpuyard import names
from gpuyard.health.verdict import TAINT_CONDITIONS
from gpuyard.kube import objects as o

Obj = Mapping[str, Any]

# Node states, most urgent first: a node is shown in the first that applies.
STATES = (
    "unhealthy",  # gpuyard.io/unhealthy taint, a health condition False, or not Ready
    "cordoned",  # spec.unschedulable
    "preflight",  # gpuyard.io/preflight or gpuyard.io/testing taint: not yet (re)tested
    "borrowed",  # a team's node running another team's (low-priority) pods
    "balloon",  # only warm-capacity balloon pods on it
    "full",  # every GPU allocated
    "partly used",  # some GPUs allocated
    "team",  # an idle node of a team
    "free",  # an idle node of the shared pool
)

LABEL_JOB = "gpuyard.io/job"
# Node conditions that are good when False (the kubelet's pressure conditions); every
# other (Ready, GPUHealthy, GPUTestPassed, ...) is good when True.
GOOD_WHEN_FALSE = ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")


def condition_ok(c: Obj) -> bool:
    good = "False" if c.get("type") in GOOD_WHEN_FALSE else "True"
    return c.get("status") == good


_PENDING_PHASES = ("Pending", "Scheduling", "Restarting", "")


def pod_team(pod: Obj, namespace_teams: Mapping[str, str]) -> str | None:
    """A pod's team: its namespace's gpuyard.io/team label, else its own label."""
    return namespace_teams.get(o.namespace_of(pod)) or o.labels_of(pod).get(names.LABEL_TEAM)


def node_team(node: Obj) -> str | None:
    t = o.find_taint(node, names.TAINT_TEAM)
    if t is not None and t.get("value"):
        return str(t["value"])
    return o.labels_of(node).get(names.LABEL_TEAM) or None


def _active(pods: Iterable[Obj]) -> list[Obj]:
    return [p for p in pods if not o.is_pod_terminal(p)]


def node_state(node: Obj, pods: Iterable[Obj], namespace_teams: Mapping[str, str]) -> str:
    """The one state a node is drawn in (see STATES)."""
    spec = node.get("spec") or {}
    if (
        o.find_taint(node, names.TAINT_UNHEALTHY) is not None
        or not o.is_node_ready(node)
        or unhealthy_condition(node) is not None
    ):
        return "unhealthy"
    if spec.get("unschedulable"):
        return "cordoned"
    if (
        o.find_taint(node, names.TAINT_PREFLIGHT) is not None
        or o.find_taint(node, names.TAINT_TESTING) is not None
    ):
        return "preflight"
    active = _active(pods)
    team = node_team(node)
    if team and any(
        (pt := pod_team(p, namespace_teams)) is not None and pt != team for p in active
    ):
        return "borrowed"
    if active and all(
        (p.get("spec") or {}).get("priorityClassName") == names.PRIORITY_BALLOON for p in active
    ):
        return "balloon"
    total = o.node_allocatable(node).get(names.RESOURCE_GPU, 0)
    used = gpus_used(active)
    if total and used >= total:
        return "full"
    if used:
        return "partly used"
    return "team" if team else "free"


def unhealthy_condition(node: Obj) -> Obj | None:
    """The first health condition (GPUHealthy, DiskHealthy, NetworkHealthy,
    GPUTestPassed) that is False: the node agent's verdict, shown even before the
    health controller taints the node, or while the brake holds its taint back."""
    for ctype in TAINT_CONDITIONS:
        c = o.get_condition(node, ctype)
        if c is not None and c.get("status") == "False":
            return c
    return None


def gpus_used(pods: Iterable[Obj]) -> int:
    return sum(o.pod_requests(p).get(names.RESOURCE_GPU, 0) for p in _active(pods))


def node_summary(
    node: Obj, pods: Sequence[Obj], namespace_teams: Mapping[str, str]
) -> dict[str, Any]:
    """The compact row the map draws and its tooltip reads: name, state, GPUs, used,
    team, rack, zone, pool, active pods."""
    labels = o.labels_of(node)
    active = _active(pods)
    return {
        "name": o.name_of(node),
        "state": node_state(node, active, namespace_teams),
        "gpus": o.node_allocatable(node).get(names.RESOURCE_GPU, 0),
        "used": gpus_used(active),
        "team": node_team(node) or "",
        "rack": labels.get(names.LABEL_RACK, ""),
        "zone": labels.get(names.LABEL_ZONE, ""),
        "pool": labels.get(names.LABEL_POOL, ""),
        "pods": len(active),
    }


def node_detail(
    node: Obj, pods: Sequence[Obj], namespace_teams: Mapping[str, str]
) -> dict[str, Any]:
    """What a click on a node shows: its summary, conditions, taints and pods."""
    st = node.get("status") or {}
    return {
        **node_summary(node, pods, namespace_teams),
        "conditions": [
            {
                "type": c.get("type", ""),
                "status": c.get("status", ""),
                "reason": c.get("reason", ""),
                "message": c.get("message", ""),
                "since": c.get("lastTransitionTime", ""),
                "ok": condition_ok(c),
            }
            for c in st.get("conditions") or []
        ],
        "taints": [o.taint_str(t) for t in (node.get("spec") or {}).get("taints") or []],
        "unschedulable": bool((node.get("spec") or {}).get("unschedulable")),
        "podList": [
            {
                "namespace": o.namespace_of(p),
                "name": o.name_of(p),
                "phase": (p.get("status") or {}).get("phase", "Pending"),
                "gpus": o.pod_requests(p).get(names.RESOURCE_GPU, 0),
                "priorityClass": (p.get("spec") or {}).get("priorityClassName", ""),
                "team": pod_team(p, namespace_teams) or "",
            }
            for p in sorted(pods, key=o.key_of)
        ],
    }


def pending_reason(pods: Iterable[Obj]) -> str:
    """Why pods wait: the scheduler's PodScheduled=False message of the first
    unscheduled pod that has one (pods sorted by name, for a stable answer)."""
    for p in sorted(pods, key=o.key_of):
        if (p.get("spec") or {}).get("nodeName") or o.is_pod_terminal(p):
            continue
        c = o.get_condition(p, "PodScheduled")
        if c is not None and c.get("status") == "False" and c.get("message"):
            return str(c["message"])
    return ""


def job_row(
    job: Obj, gang: Obj | None, pods: Sequence[Obj], namespace_teams: Mapping[str, str]
) -> dict[str, Any]:
    """A TrainingJob's row: phase, size, restarts, its gang's phase and why it waits."""
    st = job.get("status") or {}
    spec = job.get("spec") or {}
    phase = str(st.get("phase") or "Pending")
    why = ""
    if phase in _PENDING_PHASES or phase in ("Failed",):
        why = str(st.get("message") or "") or pending_reason(pods)
    gst = (gang or {}).get("status") or {}
    return {
        "kind": "TrainingJob",
        "namespace": o.namespace_of(job),
        "name": o.name_of(job),
        "team": spec.get("team") or namespace_teams.get(o.namespace_of(job), ""),
        "replicas": spec.get("replicas", 0),
        "gpusPerReplica": spec.get("gpusPerReplica", 8),
        "phase": phase,
        "gangPhase": gst.get("phase", "") if gang else "",
        "running": st.get("runningWorkers", 0),
        "restarts": st.get("restarts", 0),
        "why": why,
        "created": (job.get("metadata") or {}).get("creationTimestamp", ""),
    }


def gang_row(gang: Obj, pods: Sequence[Obj], namespace_teams: Mapping[str, str]) -> dict[str, Any]:
    """A PodGroup that no TrainingJob owns (a bare gang): phase, members, why it waits."""
    st = gang.get("status") or {}
    spec = gang.get("spec") or {}
    phase = str(st.get("phase") or "Pending")
    return {
        "kind": "PodGroup",
        "namespace": o.namespace_of(gang),
        "name": o.name_of(gang),
        "team": namespace_teams.get(o.namespace_of(gang), ""),
        "replicas": spec.get("minMember", 0),
        "gpusPerReplica": None,
        "phase": phase,
        "gangPhase": phase,
        "running": st.get("running", 0),
        "restarts": 0,
        "why": pending_reason(pods) if phase in _PENDING_PHASES else "",
        "created": (gang.get("metadata") or {}).get("creationTimestamp", ""),
    }


def owned_by_job(gang: Obj) -> bool:
    return any(
        r.get("kind") == "TrainingJob"
        for r in (gang.get("metadata") or {}).get("ownerReferences") or []
    )


def team_row(team: Obj) -> dict[str, Any]:
    """A Team's row from the status the teams controller writes: nodes, and the same
    figures in GPUs (`gpus`: assigned, inUse, lentOut, borrowedIn, shortfall)."""
    st = team.get("status") or {}
    spec = team.get("spec") or {}
    gpus = st.get("gpus") or {}
    return {
        "name": o.name_of(team),
        "namespaces": list(spec.get("namespaces") or []),
        "wanted": st.get("wanted", 0),
        "assigned": st.get("assigned", 0),
        "healthy": st.get("healthy", 0),
        "inUse": st.get("inUse", 0),
        "lentOut": st.get("lentOut", 0),
        "borrowedIn": st.get("borrowedIn", 0),
        "shortfall": st.get("shortfall", 0),
        "reason": st.get("reason", ""),
        "borrow": bool(spec.get("borrow", False)),
        "gpus": {
            k: int(gpus.get(k) or 0)
            for k in ("assigned", "inUse", "lentOut", "borrowedIn", "shortfall")
        },
    }


def is_node_event(event: Obj) -> bool:
    return (event.get("involvedObject") or {}).get("kind") == "Node"


def event_row(event: Obj) -> dict[str, Any]:
    """A Node's Event as the health list shows it."""
    inv = event.get("involvedObject") or {}
    src = event.get("source") or {}
    return {
        "node": inv.get("name", ""),
        "type": event.get("type", ""),
        "reason": event.get("reason", ""),
        "message": event.get("message", ""),
        "count": event.get("count", 1),
        "time": event.get("lastTimestamp") or event.get("eventTime") or "",
        "source": src.get("component") or event.get("reportingComponent") or "",
    }


def brake_row(cm: Obj | None) -> dict[str, Any]:
    """The health brake from its ConfigMap (gpuyard-system/gpuyard-health-brake)."""
    data = (cm or {}).get("data") or {}
    held = [n for n in str(data.get("held") or "").split(",") if n]
    return {
        "state": data.get("state", "ok" if cm else "unknown"),
        "message": data.get("message", ""),
        "trippedAt": data.get("trippedAt", ""),
        "held": len(held),
        "updatedAt": data.get("updatedAt", ""),
    }
