"""Why a worker is gone, and whether it counts as a restart. Pure: plain objects in,
one line of text out.

The one rule (README, "Training jobs"): when any worker of the running gang fails or is
lost, every worker is replaced by a new gang. That is a *restart*, counted in
`status.restarts` against `backoffLimit`, whatever took the worker: its container
failed, its node was lost or turned unhealthy (a fatal Xid taints it NoExecute), it was
evicted (`kubectl drain`) or deleted. The one exception is preemption: a worker the
scheduler preempted (its DisruptionTarget condition says PreemptionByScheduler) was
taken for higher-priority work, not lost to a fault, so the new gang is not charged a
restart; the job waits in phase Pending, reason Preempted, and `status.preemptions`
counts it. Either way the cause is recorded in `status.history` and the job's Event.

Whoever takes a pod away says why on the pod first, in the Kubernetes way: a
`DisruptionTarget` condition (reason PreemptionByScheduler, DeletionByTaintManager,
EvictionByEvictionAPI, DeletionByPodGC) with a message; what the pod does not say, the
node does (its unhealthy taint and health conditions, its Ready condition).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gpuyard import names
from gpuyard.k8s.disruption import DISRUPTION_TARGET
from gpuyard.k8s.disruption import EVICTION_BY_EVICTION_API as EVICTED
from gpuyard.k8s.disruption import PREEMPTION_BY_SCHEDULER as PREEMPTED
from gpuyard.kube import objects as o

# Node conditions that explain an unhealthy taint (the health agents' areas).
_HEALTH_CONDITIONS = ("GPUHealthy", "DiskHealthy", "NetworkHealthy", "GPUTestPassed")


@dataclass(frozen=True)
class Cause:
    """Why a worker is gone: one line naming the worker, and whether it is charged as
    a restart (False only for preemption)."""

    text: str
    counts: bool = True
    # What took the worker, for metrics: failure, node-unhealthy, node-lost, eviction,
    # deletion or preemption.
    kind: str = "deletion"


def node_trouble(name: str, node: Mapping[str, Any] | None) -> str | None:
    """What is wrong with a node, in a few words (None: nothing)."""
    if node is None:
        return f"node {name} no longer exists"
    taint = o.find_taint(node, names.TAINT_UNHEALTHY)
    if taint is not None:
        conds = {c.get("type"): c for c in (node.get("status") or {}).get("conditions") or []}
        detail = next(
            (
                str(c.get("message") or c.get("reason") or "").removeprefix("fatal: ")
                for t in _HEALTH_CONDITIONS
                if (c := conds.get(t)) and c.get("status") == "False"
            ),
            "",
        )
        what = f"{o.taint_str(taint)}"
        return f"node {name} is unhealthy ({what}{': ' + detail if detail else ''})"
    ready = o.get_condition(node, "Ready") or {}
    if ready.get("status") != "True" or o.find_taint(node, names.TAINT_UNREACHABLE):
        why = ready.get("message") or ready.get("reason") or "not Ready"
        return f"node {name} was lost (Ready={ready.get('status', 'Unknown')}: {why})"
    for t in (node.get("spec") or {}).get("taints") or []:
        if t.get("effect") == o.NO_EXECUTE:
            return f"node {name} has the taint {o.taint_str(t)}"
    return None


def _disruption(pod: Mapping[str, Any]) -> dict[str, Any] | None:
    c = o.get_condition(pod, DISRUPTION_TARGET)
    return c if c and c.get("status") == "True" else None


def worker_cause(
    pod: Mapping[str, Any],
    node_of: Callable[[str], Mapping[str, Any] | None],
    node_ready: Callable[[str], bool],
    gone: bool = False,
) -> Cause | None:
    """Why this worker is failed or lost (None: it is fine). `gone`: it was deleted
    and this is the last state seen of it."""
    st = pod.get("status") or {}
    name = o.name_of(pod)
    node = (pod.get("spec") or {}).get("nodeName") or ""
    disrupted = _disruption(pod)
    if disrupted is not None and disrupted.get("reason") == PREEMPTED:
        msg = disrupted.get("message") or "preempted by the scheduler"
        return Cause(f"{name} was {msg}", counts=False, kind="preemption")
    if st.get("phase") == "Failed" and not _stopped_by_its_deletion(pod):
        code = None
        for cs in st.get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term.get("exitCode") is not None:
                code = term["exitCode"]
        why = st.get("reason") or (f"exit code {code}" if code is not None else "failed")
        trouble = node_trouble(node, node_of(node)) if node else None
        return Cause(
            f"{name} failed on {node or 'no node'} ({why})" + (f": {trouble}" if trouble else ""),
            kind=_trouble_kind(trouble) if trouble else "failure",
        )
    deleting = gone or bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    if not deleting and (not node or node_ready(node)):
        return None
    trouble = node_trouble(node, node_of(node)) if node else None
    kind = "deletion"
    if trouble:
        what = ("evicted: " if deleting else "lost: ") + trouble
        kind = _trouble_kind(trouble)
    elif disrupted is not None and disrupted.get("reason") == EVICTED:
        kind = "eviction"
        cordoned = bool(((node_of(node) or {}).get("spec") or {}).get("unschedulable"))
        where = f" from node {node}" if node else ""
        what = f"evicted{where} by the Eviction API" + (" (drain)" if cordoned else "")
    elif disrupted is not None and disrupted.get("message"):
        what = f"evicted: {disrupted['message']}"
        kind = "eviction"
    else:
        what = f"deleted from node {node}" if node else "deleted"
    return Cause(f"{name} {what}", kind=kind)


def _stopped_by_its_deletion(pod: Mapping[str, Any]) -> bool:
    """Failed only because it was deleted: every container stopped once the deletion
    began (deletionTimestamp less deletionGracePeriodSeconds), as a kubelet stops a
    deleted pod (SIGTERM, exit 143; 137 when the grace ends). Its cause is the deletion
    (or eviction), not its exit code, whichever state of it the controller saw first."""
    md = pod.get("metadata") or {}
    deleted = o.parse_time(md.get("deletionTimestamp"))
    if deleted is None:
        return False
    began = deleted.timestamp() - float(md.get("deletionGracePeriodSeconds") or 0)
    ends = [
        o.parse_time(term.get("finishedAt"))
        for cs in (pod.get("status") or {}).get("containerStatuses") or []
        if (term := (cs.get("state") or {}).get("terminated"))
    ]
    return bool(ends) and all(e is not None and e.timestamp() >= began for e in ends)


def _trouble_kind(trouble: str) -> str:
    """node_trouble's words as a cause kind."""
    if " is unhealthy " in trouble:
        return "node-unhealthy"
    if " was lost " in trouble or trouble.endswith(" no longer exists"):
        return "node-lost"
    return "eviction"  # another NoExecute taint: the taint manager's eviction
