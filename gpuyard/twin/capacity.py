"""Team capacity and balloons in the twin, through the live system's own pure code.

- Teams: Team objects (the same YAML `kubectl apply` takes) are parsed by
  `gpuyard.teams.assign.parse_team` and the nodes carved by `gpuyard.teams.assign.plan`,
  so the twin's team nodes carry exactly the label and NoSchedule taint the team
  manager would write. A job's team is its namespace; its pods are built as the
  TrainingJob controller builds them and mutated by `gpuyard.teams.admission.mutate_pod`
  (team toleration, affinity to the team's nodes or the shared pool, gpuyard-normal by
  default, the "any team" toleration for gpuyard-low pods of a team that borrows), then
  enter the scheduling state through `ClusterState.add_pod`, the live scheduler's path.
- Balloons: one per node of a pool, built by `gpuyard.balloons.sizing.balloon_pod`
  (PriorityClass gpuyard-balloon, hostname anti-affinity); the policy places them and
  evicts them first, and an evicted balloon is put back Pending, as the controller does.

Pure: no I/O except reading the teams file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpuyard import names
from gpuyard.balloons import sizing
from gpuyard.cluster.shapes import NodeShape
from gpuyard.jobs.reconcile import worker_pod
from gpuyard.jobs.spec import JobSpec
from gpuyard.k8s.decode import DecodeError, loads_yaml_all
from gpuyard.kube import objects as o
from gpuyard.teams import admission, assign

NAMESPACE_OF_BALLOONS = sizing.NAMESPACE


class TeamsFileError(ValueError):
    """A teams file that cannot be used; the message names the file and the Team."""


def load_teams(path: str | Path) -> list[assign.TeamSpec]:
    """Team objects from a YAML file (several documents, a list, or a v1 List)."""
    p = Path(path)
    try:
        docs = loads_yaml_all(p.read_bytes())
    except OSError as exc:
        raise TeamsFileError(f"{p}: cannot read: {exc.strerror or exc}") from None
    except DecodeError as exc:
        raise TeamsFileError(f"{p}: {exc.message}") from None
    except yaml.YAMLError as exc:
        raise TeamsFileError(f"{p}: not YAML: {exc}") from None
    objs: list[Any] = []
    for d in docs:
        if d is None:
            continue
        if isinstance(d, list):
            objs.extend(d)
        elif isinstance(d, dict) and d.get("kind") == "List":
            objs.extend(d.get("items") or [])
        else:
            objs.append(d)
    teams = []
    for i, obj in enumerate(objs):
        if not isinstance(obj, dict) or obj.get("kind") != "Team":
            raise TeamsFileError(f"{p}: object {i + 1} is not a Team")
        try:
            teams.append(assign.parse_team(obj))
        except assign.TeamSpecError as exc:
            name = (obj.get("metadata") or {}).get("name") or f"#{i + 1}"
            raise TeamsFileError(f"{p}: Team {name}: {exc}") from None
    if not teams:
        raise TeamsFileError(f"{p}: no Team objects")
    return teams


def shape_labels(s: NodeShape) -> dict[str, str]:
    labels = {
        **s.topology_labels(),
        names.LABEL_POOL: s.pool,
        names.LABEL_HOSTNAME: s.name,
        **s.labels,
    }
    if s.gpu_product:
        labels[names.LABEL_GPU_PRODUCT] = s.gpu_product
    return labels


def carve(teams: Iterable[assign.TeamSpec], shapes: Iterable[NodeShape]) -> assign.Plan:
    """The team manager's assignment of fresh, healthy, idle nodes."""
    views = [assign.NodeView(s.name, shape_labels(s), True, None, None) for s in shapes]
    return assign.plan(teams, views)


def team_decoration(team: str | None) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """The label and taint the team manager puts on a fresh node it gives to `team`
    (None or "": the shared pool), from the manager's own node patch."""
    patch = assign.node_patch({}, team or None)
    labels = {k: v for k, v in patch["metadata"]["labels"].items() if v is not None}
    return labels, list(patch["spec"]["taints"] or [])


def priority_class_for(priority: int) -> str:
    """The gpuyard PriorityClass of that value ('' when none has it)."""
    for name, value in names.PRIORITY_CLASSES.items():
        if value == priority:
            return name
    return ""


def training_job(
    ns: str, name: str, replicas: int, requests: Mapping[str, int], priority: int, gpu_model: str
) -> dict[str, Any]:
    """The TrainingJob a trace's job stands for: `replicas` workers asking for
    `requests` (scheduler units; GPUs as gpusPerReplica), of the PriorityClass with the
    job's priority, on nodes of its GPU model."""
    res = {r: o.format_quantity(v, r) for r, v in requests.items() if v and r != names.RESOURCE_GPU}
    pod_spec: dict[str, Any] = {
        "containers": [
            {"name": "worker", "image": "trainer", "resources": {"requests": res} if res else {}}
        ]
    }
    if gpu_model:
        pod_spec["nodeSelector"] = {names.LABEL_GPU_PRODUCT: gpu_model}
    spec: dict[str, Any] = {
        "replicas": replicas,
        "gpusPerReplica": int(requests.get(names.RESOURCE_GPU, 0)),
        "template": {"spec": pod_spec},
    }
    pc = priority_class_for(priority)
    if pc:
        spec["priorityClassName"] = pc
    return {
        "apiVersion": names.API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": ns, "uid": f"twin-{ns}-{name}"},
        "spec": spec,
    }


def job_pod(
    key: str,
    requests: Mapping[str, int],
    priority: int,
    group: str | None,
    gpu_model: str = "",
    index: int = 0,
    generation: int = 0,
    replicas: int = 1,
) -> dict[str, Any]:
    """Worker `index` of a trace's job, made by the TrainingJob controller's own builder
    (`gpuyard.jobs.reconcile.worker_pod`) from the job's TrainingJob. What the twin
    changes, and why: the pod is named by the twin's key (it keeps each generation's
    pods apart: `<job>-g<gen>-<i>`, not `<job>-worker-<i>`); a job of one replica
    (`group` None) is a bare pod, as in the twin's fast path, without the PodGroup
    label; a priority no gpuyard PriorityClass has is set as spec.priority instead."""
    ns, pod_name = key.split("/", 1)
    job_name = group.split("/", 1)[1] if group else pod_name
    job = training_job(ns, job_name, replicas, requests, priority, gpu_model)
    pod = worker_pod(job, JobSpec.of(job), index, generation)
    pod["metadata"]["name"] = pod_name
    if group is None:
        pod["metadata"]["labels"].pop(names.POD_GROUP_LABEL, None)
    if not priority_class_for(priority):
        pod["spec"].pop("priorityClassName", None)
        pod["spec"]["priority"] = priority
    return pod


@dataclass
class Teams:
    """Admission for the twin's pods: namespace -> team, as the webhook sees it."""

    specs: list[assign.TeamSpec]
    by_ns: dict[str, admission.TeamInfo] = field(default_factory=dict)
    refused: int = 0

    def __post_init__(self) -> None:
        for t in self.specs:
            for ns in (*t.namespaces, t.name):
                self.by_ns.setdefault(ns, admission.TeamInfo(t.name, t.borrow))

    def admit(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        """The pod as the webhook lets it in (`pod` itself, patched in place: callers
        hand in a pod of their own, such as `job_pod`'s), or None when it is refused."""
        ns = o.namespace_of(pod)
        d = admission.mutate_pod(pod, self.by_ns.get(ns), ns)
        if not d.allowed:
            self.refused += 1
            return None
        return admission.apply_json_patch(pod, d.patch, in_place=True) if d.patch else pod


def balloons_for(shapes: Iterable[NodeShape]) -> list[dict[str, Any]]:
    """A balloon per node of each pool, sized to the pool's smallest node (the twin's
    nodes run no DaemonSet pods)."""
    pools: dict[str, list[NodeShape]] = {}
    for s in shapes:
        pools.setdefault(s.pool, []).append(s)
    out: list[dict[str, Any]] = []
    for pool, members in sorted(pools.items()):
        req = sizing.least_room(
            {"cpu": s.cpu_milli, "memory": s.memory_bytes, names.RESOURCE_GPU: s.gpus}
            for s in members
        )
        out.extend(balloon_pods(pool, len(members), req or {}))
    return out


def balloon_pods(pool: str, count: int, requests: Mapping[str, int]) -> list[dict[str, Any]]:
    """`count` balloon pods of a pool, as the balloon controller makes them."""
    owner = {
        "apiVersion": names.API_VERSION,
        "kind": "BalloonPool",
        "metadata": {"name": pool, "uid": f"twin-{pool}"},
        "spec": {"pool": pool},
    }
    return [sizing.balloon_pod(owner, i, requests) for i in range(count)]


def is_balloon_key(key: str) -> bool:
    return key.startswith(f"{NAMESPACE_OF_BALLOONS}/balloon-")
