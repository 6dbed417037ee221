"""Volcano's gang API, `scheduling.volcano.sh/v1beta1` PodGroup, in the scheduler's one
group model, for clusters moving from Volcano (its CRD installed, its scheduler not).

A pod joins a Volcano PodGroup by the annotation `scheduling.k8s.io/group-name`. The
group is all or nothing by `spec.minMember`; `spec.minResources` must be free in the
cluster; `spec.priorityClassName` orders it; `spec.networkTopology` ({mode: hard|soft,
highestTierAllowed}) is its topology request (dialects.volcano_request). Its status
is written as Volcano's: phase Pending, Inqueue (members placed, not all running),
Running (minMember running) or Completed, with the running, succeeded and failed
counts.

Pure translations; the live scheduler feeds them its informer (not waited for: a
cluster without the CRD has no such groups).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gpuyard.kube import objects as o
from gpuyard.kube.resources import Res
from gpuyard.scheduling.dialects import pod_request, volcano_request

if TYPE_CHECKING:
    from gpuyard.scheduling.state import GroupInfo

VOLCANO_POD_GROUPS = Res("scheduling.volcano.sh", "v1beta1", "podgroups", True, "PodGroup")


def group_info(pg: Mapping[str, Any], classes: Mapping[str, int]) -> GroupInfo:
    from gpuyard.scheduling.state import GroupInfo, vector  # state reads group names here

    spec = pg.get("spec") or {}
    created = o.parse_time((pg.get("metadata") or {}).get("creationTimestamp"))
    mm = spec.get("minMember")
    mr = spec.get("minResources")
    pc = spec.get("priorityClassName")
    topo = volcano_request(spec)
    own = pod_request(pg.get("metadata") or {})
    return GroupInfo(
        key=o.key_of(pg),
        min_member=max(1, mm) if isinstance(mm, int) and not isinstance(mm, bool) else 1,
        min_resources=vector(o.resource_list(mr)) if isinstance(mr, Mapping) and mr else None,
        created=created.timestamp() if created else 0.0,
        priority=classes.get(pc) if isinstance(pc, str) and pc else None,
        obj=dict(pg),
        topology=topo.merged(own) if topo else own,
    )


def status(
    min_member: int, scheduled: int, running: int, succeeded: int, failed: int
) -> dict[str, Any]:
    """The PodGroup's status from its members' counts, in Volcano's phases."""
    if succeeded >= min_member:
        phase = "Completed"
    elif running >= min_member:
        phase = "Running"
    elif scheduled >= min_member:
        phase = "Inqueue"
    else:
        phase = "Pending"
    return {"phase": phase, "running": running, "succeeded": succeeded, "failed": failed}
