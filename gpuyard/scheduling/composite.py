"""CompositePodGroup (`scheduling.k8s.io/v1alpha3`): PodGroups scheduled together.

A workload controller (LeaderWorkerSet, JobSet, ...) makes a CompositePodGroup from a
Workload's `compositePodGroupTemplates` and names it in its PodGroups'
`spec.parentCompositePodGroupName` (a CompositePodGroup may itself name a parent, in
the same namespace). `spec.schedulingPolicy` is `gang` (`minGroupCount`: that many
child groups must be placed at the same time, all or nothing) or `basic` (the
children are scheduled on their own). `schedulingConstraints.topology[].key` keeps
the whole subtree inside one domain of that level. Its status carries the condition
`CompositePodGroupInitiallyScheduled` (True once its gang was placed; False with
reason Unschedulable while it waits, or Invalid for a layout the scheduler cannot
follow: a cycle, more than 4 levels).

In the scheduler's one group model the topmost gang CompositePodGroup above a PodGroup
is the gang (`layout`): the pods of every PodGroup below it are one unit, keyed
`namespace/CompositePodGroup:<name>`, placed together or not at all. Each child keeps
its own PodGroup (its conditions say how its pods fare). The unit waits until at least
`minGroupCount` child groups exist, each with its `minCount` pods, and then places every
pod of the children present together (stricter than needed when more children than
`minGroupCount` exist: they are all placed or none). A PodGroup whose parent is not
known waits for it with that reason rather than being scheduled alone.

Pure: groups and objects in, the layout out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from gpuyard.kube import objects as o
from gpuyard.kube.resources import Res
from gpuyard.scheduling.dialects import upstream_request
from gpuyard.scheduling.upstream import priority_of

if TYPE_CHECKING:
    from gpuyard.scheduling.state import GroupInfo

COMPOSITE_POD_GROUPS = Res(
    "scheduling.k8s.io", "v1alpha3", "compositepodgroups", True, "CompositePodGroup"
)
PREFIX = "CompositePodGroup:"  # a composite gang's key: namespace/CompositePodGroup:<name>
MAX_DEPTH = 4  # levels of a workload's hierarchy, its PodGroups included
INITIALLY_SCHEDULED = "CompositePodGroupInitiallyScheduled"
INVALID = "Invalid"


def key_of(ns: str, name: str) -> str:
    return f"{ns}/{PREFIX}{name}"


def name_of(key: str) -> str | None:
    """The CompositePodGroup a group key names (None: not a composite's)."""
    name = key.split("/", 1)[-1]
    return name[len(PREFIX) :] if name.startswith(PREFIX) else None


def parent_name(obj: Mapping[str, Any] | None) -> str | None:
    """spec.parentCompositePodGroupName of a PodGroup or CompositePodGroup."""
    p = ((obj or {}).get("spec") or {}).get("parentCompositePodGroupName")
    return p if isinstance(p, str) and p else None


def min_groups(obj: Mapping[str, Any]) -> int | None:
    """A gang policy's minGroupCount (at least 1); None for basic (or none)."""
    gang = ((obj.get("spec") or {}).get("schedulingPolicy") or {}).get("gang")
    if not isinstance(gang, Mapping):
        return None
    n = gang.get("minGroupCount")
    return max(1, n) if isinstance(n, int) and not isinstance(n, bool) else 1


def layout(
    ns: str,
    groups: Mapping[str, GroupInfo],
    composites: Mapping[str, Mapping[str, Any]],
    classes: Mapping[str, int],
) -> tuple[dict[str, str], dict[str, GroupInfo]]:
    """For one namespace's upstream PodGroups (`groups`, by key, each with its
    `parent`) and CompositePodGroups (by name): the PodGroups whose gang is a
    composite's (PodGroup key -> the composite gang's key), and those gangs."""
    from gpuyard.scheduling.state import GroupInfo

    alias: dict[str, str] = {}
    children: dict[str, list[str]] = {}
    why: dict[str, str] = {}
    for key, g in sorted(groups.items()):
        name = g.parent
        if not name:
            continue
        chain: list[str] = []
        root: str | None = None
        bad: str | None = None
        while name:
            if name in chain:
                bad = f"{INVALID}: CompositePodGroup {name} is its own ancestor"
                break
            chain.append(name)
            if len(chain) + 1 > MAX_DEPTH:
                bad = f"{INVALID}: the groups above PodGroup {key.split('/', 1)[1]} are more than {MAX_DEPTH} levels deep"
                break
            c = composites.get(name)
            if c is None:
                bad = f"CompositePodGroup {name} not found"
                break
            if min_groups(c) is not None:
                root = name
            name = parent_name(c)
        if bad is not None:
            root = chain[-1]
            why.setdefault(key_of(ns, root), bad)
        elif root is None:
            continue  # basic all the way up: scheduled on its own
        rk = key_of(ns, root)
        alias[key] = rk
        children.setdefault(rk, []).append(key)
    out: dict[str, GroupInfo] = {}
    for rk, kids in children.items():
        name = rk.split("/", 1)[1][len(PREFIX) :]
        c = composites.get(name)
        wait = why.get(rk)
        if wait is None and c is not None:
            need = min_groups(c) or 1
            have = sum(1 for g in groups.values() if g.parent == name) + sum(
                1 for x in composites.values() if parent_name(x) == name
            )
            if have < need:
                wait = f"waits for groups: {have} of minGroupCount {need} exist"
        prio = priority_of(c, classes) if c is not None else None
        if prio is None:
            own = [p for k in kids if (p := groups[k].priority) is not None]
            prio = max(own) if own else None
        created = o.parse_time(((c or {}).get("metadata") or {}).get("creationTimestamp"))
        out[rk] = GroupInfo(
            key=rk,
            min_member=sum(groups[k].min_member for k in kids),
            created=created.timestamp() if created else 0.0,
            priority=prio,
            obj=dict(c) if c is not None else None,
            topology=upstream_request(c) if c is not None else None,
            composite=True,
            wait=wait,
        )
    return alias, out
