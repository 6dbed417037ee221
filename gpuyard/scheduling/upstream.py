"""The upstream gang API, `scheduling.k8s.io/v1beta1` PodGroup, in the scheduler's one
group model.

A pod joins an upstream PodGroup by `spec.schedulingGroup.podGroupName` (the API server
refuses a pod that also carries the scheduler-plugins label). The group is all or
nothing by `spec.schedulingPolicy.gang.minCount` (mutable: a new value counts from the
next pass); a `basic` policy is a group of one. `priority` / `priorityClassName` order
the gang in the queue; `schedulingConstraints.topology[].key` are required topology
levels (gpuyard.scheduling.topology). A PodGroup made from a Workload's template
(spec.workloadRef) takes the template's constraints and priority where it says none. Its status carries the conditions `PodGroupInitiallyScheduled`
(True once minCount members were bound; False with reason Unschedulable or
SchedulerError while it waits) and `DisruptionTarget` (reason PreemptionByScheduler
when the scheduler evicts members).

Pure translations; the live scheduler feeds them its informers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gpuyard import names
from gpuyard.kube import objects as o
from gpuyard.kube.resources import Res
from gpuyard.scheduling.dialects import upstream_request

if TYPE_CHECKING:
    from gpuyard.scheduling.state import GroupInfo

UPSTREAM_POD_GROUPS = Res("scheduling.k8s.io", "v1beta1", "podgroups", True, "PodGroup")
WORKLOADS = Res("scheduling.k8s.io", "v1beta1", "workloads", True, "Workload")

INITIALLY_SCHEDULED = "PodGroupInitiallyScheduled"
DISRUPTION_TARGET = "DisruptionTarget"
UNSCHEDULABLE = "Unschedulable"
SCHEDULER_ERROR = "SchedulerError"
PREEMPTION_BY_SCHEDULER = "PreemptionByScheduler"


VOLCANO_GROUP_ANNOTATION = "scheduling.k8s.io/group-name"  # Volcano's (volcano.py)


def group_name(md: Mapping[str, Any], spec: Mapping[str, Any]) -> str | None:
    """The name of the group a pod names: the scheduler-plugins label, else
    spec.schedulingGroup.podGroupName, else Volcano's annotation."""
    label = (md.get("labels") or {}).get(names.POD_GROUP_LABEL)
    if label:
        return str(label)
    sg = spec.get("schedulingGroup")
    name = sg.get("podGroupName") if isinstance(sg, Mapping) else None
    if isinstance(name, str) and name:
        return name
    ann = (md.get("annotations") or {}).get(VOLCANO_GROUP_ANNOTATION)
    return ann if isinstance(ann, str) and ann else None


def group_key(pod: Mapping[str, Any]) -> str | None:
    """namespace/group of a pod's gang, whichever way it names it."""
    name = group_name(pod.get("metadata") or {}, pod.get("spec") or {})
    return f"{o.namespace_of(pod)}/{name}" if name else None


def min_count(pg: Mapping[str, Any]) -> int:
    """The members that must be placed together: gang.minCount (at least 1); 1 for a
    basic policy or none."""
    gang = ((pg.get("spec") or {}).get("schedulingPolicy") or {}).get("gang")
    n = gang.get("minCount") if isinstance(gang, Mapping) else None
    return max(1, n) if isinstance(n, int) and not isinstance(n, bool) else 1


def disrupts_all(pg: Mapping[str, Any]) -> bool:
    """disruptionMode `all`: the members may only be disrupted together."""
    mode = (pg.get("spec") or {}).get("disruptionMode")
    return isinstance(mode, Mapping) and mode.get("all") is not None


def priority_of(pg: Mapping[str, Any], classes: Mapping[str, int]) -> int | None:
    spec = pg.get("spec") or {}
    p = spec.get("priority")
    if isinstance(p, int) and not isinstance(p, bool):
        return p
    pc = spec.get("priorityClassName")
    return classes.get(pc) if isinstance(pc, str) and pc else None


def workload_ref(pg: Mapping[str, Any]) -> tuple[str, str] | None:
    """The (Workload, template) a PodGroup was made from (spec.workloadRef), or None."""
    ref = (pg.get("spec") or {}).get("workloadRef")
    if not isinstance(ref, Mapping):
        return None
    w, t = ref.get("workloadName"), ref.get("templateName")
    return (w, t) if isinstance(w, str) and w and isinstance(t, str) and t else None


def template_of(workload: Mapping[str, Any] | None, name: str) -> Mapping[str, Any] | None:
    for t in ((workload or {}).get("spec") or {}).get("podGroupTemplates") or ():
        if isinstance(t, Mapping) and t.get("name") == name:
            return t
    return None


def group_info(
    pg: Mapping[str, Any], classes: Mapping[str, int], workload: Mapping[str, Any] | None = None
) -> GroupInfo:
    """The group of an upstream PodGroup; what it does not say itself (its
    schedulingConstraints, priority) it takes from the template of the Workload it was
    made from (`workload`, named by spec.workloadRef)."""
    from gpuyard.scheduling.state import GroupInfo  # state imports group_name from here

    created = o.parse_time((pg.get("metadata") or {}).get("creationTimestamp"))
    ref = workload_ref(pg)
    tpl = template_of(workload, ref[1]) if ref else None
    topology = upstream_request(pg)
    priority = priority_of(pg, classes)
    if tpl is not None:
        inherited = upstream_request({"spec": tpl})
        if inherited and not (topology and topology.required):
            topology = inherited.merged(topology)
        if priority is None:
            priority = priority_of({"spec": tpl}, classes)
    return GroupInfo(
        key=o.key_of(pg),
        min_member=min_count(pg),
        created=created.timestamp() if created else 0.0,
        priority=priority,
        obj=dict(pg),
        topology=topology,
        parent=_parent(pg),
    )


def _parent(pg: Mapping[str, Any]) -> str | None:
    p = (pg.get("spec") or {}).get("parentCompositePodGroupName")
    return p if isinstance(p, str) and p else None


def conditions(
    pg: Mapping[str, Any],
    bound: int,
    reason: str | None,
    preempted: str | None = None,
    error: str | None = None,
    disruption_reason: str = PREEMPTION_BY_SCHEDULER,
    kind: str = INITIALLY_SCHEDULED,
    need: int | None = None,
    waiting_reason: str = UNSCHEDULABLE,
) -> tuple[list[dict[str, Any]], bool]:
    """The PodGroup's conditions after a pass: `bound` members are on nodes (not
    terminating), `reason` says why the rest wait (None: nothing to say), `preempted`
    why members were just evicted (DisruptionTarget with `disruption_reason`), `error` a
    scheduler error. Returns (conditions,
    changed); `PodGroupInitiallyScheduled` stays True once it was. A CompositePodGroup's
    are the same with its condition type (`kind`), the pods its gang needs (`need`) and
    the reason it waits with (`waiting_reason`: Invalid for a layout not followed)."""
    conds = list((pg.get("status") or {}).get("conditions") or [])
    changed = False
    was = next((c for c in conds if c.get("type") == kind), None)
    if need is None:
        need = min_count(pg)
    if was is not None and was.get("status") == "True":
        pass
    elif bound >= need:
        conds, changed = o.set_condition(
            conds, kind, "True", "Scheduled", f"{bound} of {need} pods placed"
        )
    elif error:
        conds, changed = o.set_condition(conds, kind, "False", SCHEDULER_ERROR, error)
    elif reason:
        conds, changed = o.set_condition(conds, kind, "False", waiting_reason, reason)
    if preempted:
        conds, ch = o.set_condition(conds, DISRUPTION_TARGET, "True", disruption_reason, preempted)
        changed = changed or ch
    return conds, changed
