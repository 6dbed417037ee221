"""The scheduler's incremental snapshot of a cluster: compact node and pod records.

`ClusterState` is fed one change at a time (a node or pod added, updated, removed; a
PodGroup or PriorityClass set) by whichever driver runs the policy: the live
scheduler from its informers, the digital twin from a trace in virtual time. Nothing
is rebuilt per decision. Resources are small integer vectors in the order of
`RESOURCES`: milli-cpu, memory bytes, GPUs, pod slots.

This is the snapshot and nothing else: nodes, pods, PodGroups, PriorityClasses and
the change logs the policy's memory reads (gpuyard.scheduling.memory).

The twin, which creates hundreds of thousands of pods, uses `add_node_fast` and
`add_pod_fast` to skip building Kubernetes dicts; live drivers pass real objects (so
does the twin for team and balloon pods, which pass the live webhook's mutation). The
fast records are the records the objects give (tests/scheduling/test_state.py) except
for what the fast path cannot say: no object is kept (`obj` is None), no required node
affinity, no preemptionPolicy, no nominated node, and the creation time is a number.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

from gpuyard import names
from gpuyard.k8s.durations import parse_duration
from gpuyard.kube import objects as o
from gpuyard.scheduling import dra
from gpuyard.scheduling.affinity import Constraints, parse
from gpuyard.scheduling.dialects import pod_request
from gpuyard.scheduling.topology import DEFAULT_LEVELS, Request
from gpuyard.scheduling.upstream import group_name

RESOURCES = ("cpu", "memory", names.RESOURCE_GPU, "pods")
GPU = 2
NRES = len(RESOURCES)
FREED_TERMINATING = 1 << 62  # freed_log key of room terminating pods freed
FREED_LOG_MAX = 1 << 16


def vector(amounts: Mapping[str, int]) -> list[int]:
    return [int(amounts.get(r, 0)) for r in RESOURCES]


def extras(amounts: Mapping[str, int]) -> dict[str, int]:
    """The amounts of every resource outside `RESOURCES` (extended resources such as
    nvidia.com/mig-1g.10gb or rdma/hca, hugepages-*, ephemeral-storage), zeros left out."""
    return {r: int(v) for r, v in amounts.items() if v and r not in _BASE}


_BASE = frozenset(RESOURCES)


def host_ports(spec: Mapping[str, Any]) -> tuple[tuple[str, str, int], ...]:
    """The (hostIP, protocol, hostPort) triples a pod's containers bind on their node,
    sorted (an empty hostIP is every address, 0.0.0.0; the protocol defaults to TCP)."""
    got = set()
    for c in spec.get("containers") or ():
        for port in c.get("ports") or ():
            hp = port.get("hostPort")
            if hp:
                got.add((port.get("hostIP") or "0.0.0.0", port.get("protocol") or "TCP", int(hp)))
    return tuple(sorted(got))


def runtime_of(md: Mapping[str, Any], spec: Mapping[str, Any]) -> float | None:
    """How long a pod runs at most once started, in seconds, or None when nothing says:
    the shorter of spec.activeDeadlineSeconds and the `gpuyard.io/expected-runtime`
    annotation (an annotation that is not a duration says nothing)."""
    got: list[float] = []
    ads = spec.get("activeDeadlineSeconds")
    if isinstance(ads, int) and not isinstance(ads, bool) and ads > 0:
        got.append(float(ads))
    ann = (md.get("annotations") or {}).get(names.ANN_EXPECTED_RUNTIME)
    if isinstance(ann, str):
        try:
            got.append(parse_duration(ann))
        except ValueError:
            pass
    return min(got) if got else None


def checkpoint_of(md: Mapping[str, Any]) -> float | None:
    """When the pod last checkpointed (the `gpuyard.io/last-checkpoint` annotation, RFC
    3339; a time without a zone is UTC), in seconds since the epoch, or None when it does
    not say (an annotation that is not a time says nothing)."""
    ann = (md.get("annotations") or {}).get(names.ANN_LAST_CHECKPOINT)
    if not isinstance(ann, str):
        return None
    t = o.parse_time(ann.strip())
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def add_extras(n: NodeInfo, xreq: tuple[tuple[str, int], ...], sign: int) -> None:
    """Count (sign 1) or uncount (-1) a pod's requests outside RESOURCES on its node."""
    xu = n.xused
    for r, v in xreq:
        left = xu.get(r, 0) + sign * v
        if left:
            xu[r] = left
        else:
            xu.pop(r, None)


@dataclass(eq=False)
class NodeInfo:
    name: str
    alloc: list[int]
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, Any]] = field(default_factory=list)  # NoSchedule / NoExecute only
    ready: bool = True
    unschedulable: bool = False
    used: list[int] = field(default_factory=lambda: [0] * NRES)
    pods: dict[str, PodInfo] = field(default_factory=dict)
    obj: dict[str, Any] | None = None
    # resources outside RESOURCES: allocatable, and what bound pods request of them
    xalloc: dict[str, int] = field(default_factory=dict)
    xused: dict[str, int] = field(default_factory=dict)
    # PreferNoSchedule taints: never a filter, a score (affinity.Topology.scores)
    prefer_taints: list[dict[str, Any]] = field(default_factory=list)
    # GPUs allocated to device claims here, counted in used's nvidia.com/gpu (dra.py)
    dra_gpus: int = 0

    @property
    def rack(self) -> str:
        return self.labels.get(names.LABEL_RACK, "")

    @property
    def zone(self) -> str:
        return self.labels.get(names.LABEL_ZONE, "")

    def free(self) -> list[int]:
        return [a - u for a, u in zip(self.alloc, self.used, strict=True)]


@dataclass(eq=False)
class PodInfo:
    key: str  # namespace/name
    req: list[int]
    priority: int = 0
    seq: int = 0  # creation order (ties broken by it)
    created: float = 0.0
    group: str | None = None  # namespace/podgroup
    # the PodGroup it names when its gang is that group's CompositePodGroup's (`group`)
    sub: str | None = None
    node: str | None = None  # bound node
    nominated: str | None = None
    tolerations: tuple[dict[str, Any], ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()
    affinity: Any = None  # required node affinity (nodeSelectorTerms), or None
    anti_affinity: tuple[Any, ...] = ()  # label selectors, topology kubernetes.io/hostname
    labels: dict[str, str] = field(default_factory=dict)
    priority_class: str = ""
    preemption_never: bool = False
    terminating: bool = False
    scheduler: str = names.SCHEDULER_NAME
    obj: dict[str, Any] | None = None
    # requests of resources outside RESOURCES, sorted by name (empty for most pods)
    xreq: tuple[tuple[str, int], ...] = ()
    # host ports the pod's containers bind: (hostIP, protocol, hostPort)
    host_ports: tuple[tuple[str, str, int], ...] = ()
    # pod affinity, anti-affinity off the hostname fast path, topology spread,
    # preferred node affinity (gpuyard.scheduling.affinity); None for most pods
    constraints: Constraints | None = None
    # how long it runs at most once started (seconds; None: unknown), and when it
    # started (status.startTime, or when the policy bound it)
    runtime: float | None = None
    started: float | None = None
    # when it last checkpointed (gpuyard.io/last-checkpoint; None: it does not say)
    checkpoint: float | None = None
    # its team, when the state divides shared capacity between teams (set_teams)
    team: str | None = None
    # what its gang needs of the topology, said on the pod (Kueue's, KAI's
    # annotations); None for most pods
    topology: Request | None = None
    # the keys of the ResourceClaims it uses, why it must wait for them (a claim not
    # made from its template yet), the state's devices, the GPU devices of its own
    # unallocated claims counted in req, and what of its claims static filters read
    claims: tuple[str, ...] = ()
    claim_wait: str | None = None
    dra: Any = None
    dra_demand: int = 0
    dra_sig: tuple[Any, ...] = ()
    _ck: tuple[Any, ...] | None = field(default=None, init=False, repr=False)

    @property
    def name(self) -> str:
        return self.key.split("/", 1)[-1]

    def class_key(self) -> tuple[Any, ...]:
        """Pods with equal class keys pass the same static node filters."""
        ck = self._ck
        if ck is None:
            ck = self._ck = (
                repr(self.tolerations),
                self.node_selector,
                repr(self.affinity),
                repr(self.anti_affinity),
            )
            if self.xreq or self.host_ports:
                ck = self._ck = (*ck, self.xreq, self.host_ports)
            if self.constraints is not None:
                ck = self._ck = (*ck, repr(self.constraints))
            if self.claims or self.claim_wait:
                ck = self._ck = (*ck, self.claim_wait, self.dra_sig)
        return ck


@dataclass
class GroupInfo:
    key: str
    min_member: int = 1
    min_resources: list[int] | None = None
    timeout: float | None = None
    created: float = 0.0
    priority: int | None = None
    obj: dict[str, Any] | None = None
    # what the gang needs of the topology (gpuyard.scheduling.topology), None: nothing
    topology: Request | None = None
    # an upstream PodGroup's spec.parentCompositePodGroupName; a CompositePodGroup's
    # gang (gpuyard.scheduling.composite): every pod of its children placed together,
    # and why it waits whatever its pods (None: it does not)
    parent: str | None = None
    composite: bool = False
    wait: str | None = None


class ClusterState:
    """Nodes, pods, PodGroups and PriorityClasses, kept current by a driver."""

    def __init__(
        self, scheduler_name: str = names.SCHEDULER_NAME, also: Iterable[str] = ()
    ) -> None:
        self.scheduler_name = scheduler_name
        # every schedulerName this scheduler answers for: its own, and in the embedded
        # cluster also default-scheduler (gpuyard up's default scheduler)
        self.scheduler_names = frozenset((scheduler_name, *also))
        self.nodes: dict[str, NodeInfo] = {}
        self.pods: dict[str, PodInfo] = {}
        self.pending: dict[str, PodInfo] = {}  # ours, unbound, not terminating
        self.groups: dict[str, GroupInfo] = {}
        self.members: dict[str, dict[str, PodInfo]] = {}  # group -> pods
        # CompositePodGroups (namespace -> name -> object), and the upstream PodGroups
        # whose gang is a composite's (PodGroup key -> the composite gang's key)
        self.composites: dict[str, dict[str, dict[str, Any]]] = {}
        self.group_alias: dict[str, str] = {}
        self.priority_classes: dict[str, int] = dict(names.PRIORITY_CLASSES)
        self.preempt_never: set[str] = {names.PRIORITY_BALLOON}
        self.group_first_seen: dict[str, float] = {}
        self.backoff_until: dict[str, float] = {}
        self._seq = 0
        self.generation = 0  # bumps on every change; drivers use it to skip idle cycles
        # Change logs, read (and emptied) by the policy's memory (see memory.Memory):
        self.node_gen = 0  # nodes added, removed, relabelled, retainted, ready or not
        self.freed_gen = 0  # capacity freed somewhere (a pod left, a node came)
        self.dirty_nodes: set[str] = set()  # nodes whose use changed since the last pass
        # nodes whose use, allocatable or readiness changed since a driver last read
        # this log (None: not kept; the twin keeps it for its samples)
        self.node_log: set[str] | None = None
        # bound pods (those counted on their nodes), by priority: preemption looks
        # only at pods below the preemptor's priority
        self.bound_by_prio: dict[int, dict[str, PodInfo]] = {}
        # bound pods whose record or binding changed since the policy last looked
        # (key -> group; kept only once the policy has its index of victims, which
        # sets log_bound and brings itself up to date on every pass)
        self.bound_log: dict[str, str | None] = {}
        self.log_bound = False
        # Nodes where room was freed, logged by the priority that decides who could
        # already have preempted it: the pod's own priority, or its gang's highest (a
        # gang is evicted whole); a terminating pod's room (never preemptable) under
        # FREED_TERMINATING. A log past FREED_LOG_MAX starts over in a new epoch.
        self.freed_log: dict[int, list[str]] = {}
        self.freed_epoch = 0
        self.group_prio: dict[str, int] = {}  # group -> highest priority of a member seen
        # required pod anti-affinity selectors of bound pods: repr -> [count, selector]
        self.anti_bound: dict[str, list[Any]] = {}
        # bound pods with required anti-affinity outside the hostname fast path
        self.anti_wide: dict[str, PodInfo] = {}
        # bound pods whose preferred pod (anti-)affinity or required pod affinity terms
        # score the nodes for other pods (kube's InterPodAffinity symmetry)
        self.soft_wide: dict[str, PodInfo] = {}
        # PreferNoSchedule taints on nodes: (key, value) -> [nodes with it, the taint]
        self.prefer_taints: dict[tuple[str, str], list[Any]] = {}
        # namespace -> its labels, for namespaceSelectors of pod affinity terms (kept
        # by drivers that watch namespaces; unknown namespaces have no labels)
        self.namespace_labels: dict[str, dict[str, str]] = {}
        # What changed for the policy's queue since its last pass: pods (with their
        # group) and groups.
        self.queue_pods: dict[str, str | None] = {}
        self.queue_groups: set[str] = set()
        # Fair sharing (set_teams): each team's weight, the team of each namespace, and
        # the GPUs each team's bound pods use on nodes that are not its own (the shared
        # pool, borrowed nodes). teams_gen bumps when the teams change.
        self.team_weights: dict[str, float] = {}
        self.team_of_ns: dict[str, str] = {}
        self.team_outside: dict[str, int] = {}
        self.teams_gen = 0
        # the topology's levels: node label keys, broadest first (topology.py)
        self.topology_levels: tuple[str, ...] = DEFAULT_LEVELS
        # Device claims (dra.py): slices, classes, claims, allocations; and the pods
        # that use each claim (their records change with the claim)
        self.dra = dra.Devices()
        self.claim_pods: dict[str, set[str]] = {}

    def set_topology_levels(self, levels: Iterable[str]) -> None:
        """The node label keys that make the topology's levels, broadest first."""
        lv = tuple(levels)
        if lv != self.topology_levels:
            self.topology_levels = lv
            self.generation += 1
            self.node_gen += 1  # domains are made again

    # ------------------------------------------------------------------ teams

    def set_teams(self, weights: Mapping[str, float], team_of_ns: Mapping[str, str]) -> None:
        """The teams that divide shared capacity by weight, and which namespace is whose
        (a namespace named like a team is that team's unless mapped otherwise)."""
        w, m = dict(weights), dict(team_of_ns)
        if w == self.team_weights and m == self.team_of_ns:
            return
        self.team_weights, self.team_of_ns = w, m
        self.teams_gen += 1
        self.generation += 1
        self.team_outside = {}
        for p in self.pods.values():
            p.team = self.team_of(p.key)
            n = self.nodes.get(p.node or "")
            if n is not None and p.key in n.pods:
                self._outside(p, n, 1)

    def team_of(self, pod_key: str) -> str | None:
        if not self.team_weights:
            return None
        ns = pod_key.split("/", 1)[0]
        team = self.team_of_ns.get(ns, ns)
        return team if team in self.team_weights else None

    def _outside(self, p: PodInfo, n: NodeInfo, sign: int) -> None:
        if p.team is not None and p.req[GPU] and n.labels.get(names.LABEL_TEAM) != p.team:
            self.team_outside[p.team] = self.team_outside.get(p.team, 0) + sign * p.req[GPU]

    # ------------------------------------------------------------------ nodes

    def add_node(self, node: Mapping[str, Any]) -> NodeInfo:
        spec = node.get("spec") or {}
        alloc = o.node_allocatable(node)
        info = NodeInfo(
            name=o.name_of(node),
            alloc=vector(alloc),
            labels=dict(o.labels_of(node)),
            taints=[
                t
                for t in spec.get("taints") or []
                if t.get("effect") in (o.NO_SCHEDULE, o.NO_EXECUTE)
            ],
            ready=o.is_node_ready(node),
            unschedulable=bool(spec.get("unschedulable")),
            obj=dict(node),
            xalloc=extras(alloc),
            prefer_taints=[
                t for t in spec.get("taints") or [] if t.get("effect") == o.PREFER_NO_SCHEDULE
            ],
        )
        return self._put_node(info)

    update_node = add_node

    def add_node_fast(
        self,
        name: str,
        allocatable: Mapping[str, int],
        labels: Mapping[str, str] | None = None,
        taints: Iterable[Mapping[str, Any]] = (),
        ready: bool = True,
    ) -> NodeInfo:
        """allocatable in scheduler units: {"cpu": milli, "memory": bytes, ...}."""
        alloc = dict(allocatable)
        alloc.setdefault("pods", 110)
        hard = [dict(t) for t in taints if t.get("effect") != o.PREFER_NO_SCHEDULE]
        info = NodeInfo(name, vector(alloc), dict(labels or {}), hard, ready)
        info.prefer_taints = [dict(t) for t in taints if t.get("effect") == o.PREFER_NO_SCHEDULE]
        info.xalloc = extras(alloc)
        return self._put_node(info)

    def _put_node(self, info: NodeInfo) -> NodeInfo:
        old = self.nodes.get(info.name)
        if old is not None:
            info.used, info.pods, info.xused = old.used, old.pods, old.xused
            info.dra_gpus = old.dra_gpus
            if self.team_outside:  # its team label may have changed
                for p in old.pods.values():
                    self._outside(p, old, -1)
                    self._outside(p, info, 1)
        dra.sync_node(self.dra, info)
        if old is not None and old.prefer_taints:
            self._count_prefer(old, -1)
        if info.prefer_taints:
            self._count_prefer(info, 1)
        self.nodes[info.name] = info
        self.generation += 1
        self.node_gen += 1
        self.freed_gen += 1
        self.dirty_nodes.add(info.name)
        if self.node_log is not None:
            self.node_log.add(info.name)
        return info

    def _count_prefer(self, n: NodeInfo, sign: int) -> None:
        pt = self.prefer_taints
        for t in n.prefer_taints:
            k = (str(t.get("key") or ""), str(t.get("value") or ""))
            got = pt.get(k)
            if got is None:
                got = pt[k] = [0, t]
            got[0] += sign
            if got[0] <= 0:
                del pt[k]

    def remove_node(self, name: str) -> None:
        old = self.nodes.pop(name, None)
        if old is not None:
            if old.prefer_taints:
                self._count_prefer(old, -1)
            if self.node_log is not None:
                self.node_log.add(name)
            if self.team_outside:
                for p in old.pods.values():
                    self._outside(p, old, -1)
            self.generation += 1
            self.node_gen += 1

    def set_node_ready(self, name: str, ready: bool) -> None:
        n = self.nodes.get(name)
        if n is not None and n.ready != ready:
            n.ready = ready
            if self.node_log is not None:
                self.node_log.add(name)
            self.generation += 1
            self.node_gen += 1
            self.freed_gen += 1

    # ------------------------------------------------------------------ pods

    def pod_priority(self, spec: Mapping[str, Any]) -> int:
        if spec.get("priority") is not None:
            return int(spec["priority"])
        return self.priority_classes.get(spec.get("priorityClassName") or "", 0)

    def add_pod(self, pod: Mapping[str, Any]) -> PodInfo | None:
        """Add or update a pod from its object. Terminal pods are removed."""
        key = o.key_of(pod)
        if o.is_pod_terminal(pod):
            self.remove_pod(key)
            return None
        md = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        affinity = spec.get("affinity") or {}
        required = (affinity.get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        ) or {}
        anti = tuple(
            t.get("labelSelector") or {}
            for t in (affinity.get("podAntiAffinity") or {}).get(
                "requiredDuringSchedulingIgnoredDuringExecution"
            )
            or []
            if t.get("topologyKey") == names.LABEL_HOSTNAME
        )
        labels = dict(md.get("labels") or {})
        gname = group_name(md, spec)  # the label, or spec.schedulingGroup.podGroupName
        raw = f"{md.get('namespace', '')}/{gname}" if gname else None
        constraints = parse(spec, str(md.get("namespace") or ""), labels)
        if constraints is not None and constraints.anti:
            anti = ()  # every required anti-affinity term is in the constraints
        old = self.pods.get(key)
        created = o.parse_time(md.get("creationTimestamp"))
        requests = o.pod_requests(pod)
        claims, claim_wait = dra.pod_claim_keys(pod) if spec.get("resourceClaims") else ((), None)
        demand = dra.demand(self.dra, key, claims) if claims else 0
        if demand:
            requests = {
                **requests,
                names.RESOURCE_GPU: requests.get(names.RESOURCE_GPU, 0) + demand,
            }
        node = spec.get("nodeName") or None
        start = o.parse_time((pod.get("status") or {}).get("startTime"))
        started = start.timestamp() if start else None
        if started is None and old is not None and node and old.node == node:
            started = old.started
        info = PodInfo(
            key=key,
            req=vector({**requests, "pods": 1}),
            priority=self.pod_priority(spec),
            seq=old.seq if old else self._next_seq(),
            created=created.timestamp() if created else 0.0,
            group=self.group_alias.get(raw, raw) if raw else None,
            sub=raw if raw and raw in self.group_alias else None,
            node=node,
            nominated=(pod.get("status") or {}).get("nominatedNodeName")
            or (old.nominated if old else None),
            tolerations=tuple(spec.get("tolerations") or ()),
            node_selector=tuple(sorted((spec.get("nodeSelector") or {}).items())),
            affinity=required.get("nodeSelectorTerms"),
            anti_affinity=anti,
            labels=labels,
            priority_class=spec.get("priorityClassName") or "",
            preemption_never=spec.get("preemptionPolicy") == "Never",
            terminating=bool(md.get("deletionTimestamp")),
            scheduler=spec.get("schedulerName") or "default-scheduler",
            obj=dict(pod),
            xreq=tuple(sorted(extras(requests).items())),
            host_ports=host_ports(spec),
            constraints=constraints,
            runtime=runtime_of(md, spec),
            started=started,
            checkpoint=checkpoint_of(md),
            topology=pod_request(md),
        )
        if claims or claim_wait:
            info.claims, info.claim_wait, info.dra = claims, claim_wait, self.dra
            info.dra_demand = demand
            info.dra_sig = dra.signature(self.dra, claims)
        self._put_pod(info)
        return info

    update_pod = add_pod

    def add_pod_fast(
        self,
        key: str,
        requests: Mapping[str, int],
        priority: int = 0,
        group: str | None = None,
        node: str | None = None,
        created: float = 0.0,
        labels: Mapping[str, str] | None = None,
        tolerations: Iterable[Mapping[str, Any]] = (),
        node_selector: Mapping[str, str] | None = None,
        anti_affinity: Iterable[Mapping[str, Any]] = (),
        priority_class: str = "",
        runtime: float | None = None,
        checkpoint: float | None = None,
    ) -> PodInfo:
        """A pod from its scheduling facts (requests in scheduler units; runtime: how
        long it runs at most once started, in seconds; checkpoint: when it last
        checkpointed, seconds since the epoch)."""
        info = PodInfo(
            key=key,
            req=vector({**requests, "pods": 1}),
            priority=priority,
            seq=self._next_seq(),
            created=created,
            group=self.group_alias.get(group, group) if group else None,
            sub=group if group and group in self.group_alias else None,
            node=node,
            tolerations=tuple(dict(t) for t in tolerations),
            node_selector=tuple(sorted((node_selector or {}).items())),
            anti_affinity=tuple(anti_affinity),
            labels=dict(labels or {}),
            priority_class=priority_class,
            scheduler=self.scheduler_name,
            xreq=tuple(sorted(extras(requests).items())),
            runtime=runtime,
            checkpoint=checkpoint,
        )
        self._put_pod(info)
        return info

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _put_pod(self, info: PodInfo) -> None:
        old = self.pods.get(info.key)
        if (old is not None and old.claims) or info.claims:
            for k in old.claims if old is not None else ():
                self.claim_pods.get(k, set()).discard(info.key)
            for k in info.claims:
                self.claim_pods.setdefault(k, set()).add(info.key)
        if old is not None:
            n = self.nodes.get(old.node or "")
            if (
                n is not None
                and info.node == old.node
                and info.req == old.req
                and info.xreq == old.xreq
                and old.key in n.pods
            ):
                # Same node, same requests (a status update, say): swap the record in
                # place; nothing was freed, so the policy's caches stay valid.
                n.pods[info.key] = info
                if self.anti_wide.pop(old.key, None) is not None or (
                    info.constraints is not None and info.constraints.anti
                ):
                    if info.constraints is not None and info.constraints.anti:
                        self.anti_wide[info.key] = info
                self.soft_wide.pop(old.key, None)
                if info.constraints is not None and info.constraints.symmetric:
                    self.soft_wide[info.key] = info
                self.bound_by_prio.get(old.priority, {}).pop(old.key, None)
                self.bound_by_prio.setdefault(info.priority, {})[info.key] = info
                if self.log_bound:
                    self.bound_log[info.key] = info.group
            else:
                self._unaccount(old)
            if old.group:
                self.members.get(old.group, {}).pop(old.key, None)
                self.queue_groups.add(old.group)
        if self.team_weights:
            info.team = self.team_of(info.key)
        self.pods[info.key] = info
        self.queue_pods[info.key] = info.group
        self.pending.pop(info.key, None)
        if info.node:
            self._account(info)
        elif not info.terminating and info.scheduler in self.scheduler_names:
            self.pending[info.key] = info
        if info.group:
            self.members.setdefault(info.group, {})[info.key] = info
            self.group_first_seen.setdefault(info.group, info.created)
            if info.priority > self.group_prio.get(info.group, info.priority - 1):
                self.group_prio[info.group] = info.priority
        self.generation += 1

    def remove_pod(self, key: str) -> None:
        info = self.pods.pop(key, None)
        if info is None:
            return
        for k in info.claims:
            self.claim_pods.get(k, set()).discard(key)
        self.dra.last_held.pop(key, None)
        self._unaccount(info)
        self.pending.pop(key, None)
        self.queue_pods[key] = info.group
        if info.group:
            m = self.members.get(info.group)
            if m is not None:
                m.pop(key, None)
                if not m and info.group not in self.groups:
                    del self.members[info.group]
                    self.group_prio.pop(info.group, None)
        self.generation += 1

    def _account(self, p: PodInfo) -> None:
        n = self.nodes.get(p.node or "")
        if n is None or p.key in n.pods:
            return
        n.pods[p.key] = p
        for i in range(NRES):
            n.used[i] += p.req[i]
        if p.team is not None:
            self._outside(p, n, 1)
        if p.xreq:
            add_extras(n, p.xreq, 1)
        self.bound_by_prio.setdefault(p.priority, {})[p.key] = p
        if self.log_bound:
            self.bound_log[p.key] = p.group
        self.dirty_nodes.add(n.name)
        if self.node_log is not None:
            self.node_log.add(n.name)
        if p.constraints is not None:
            if p.constraints.anti:
                self.anti_wide[p.key] = p
            if p.constraints.symmetric:
                self.soft_wide[p.key] = p
        for sel in p.anti_affinity:
            k = repr(sel)
            got = self.anti_bound.get(k)
            if got is None:
                self.anti_bound[k] = [1, sel]
            else:
                got[0] += 1

    def _unaccount(self, p: PodInfo) -> None:
        n = self.nodes.get(p.node or "")
        if n is None:
            return
        q = n.pods.pop(p.key, None)
        if q is None:
            return
        if self.log_bound:
            self.bound_log[q.key] = q.group
        bp = self.bound_by_prio.get(q.priority)
        if bp is not None:
            bp.pop(q.key, None)
            if not bp:
                del self.bound_by_prio[q.priority]
        for i in range(NRES):
            n.used[i] -= p.req[i]
        if q.team is not None:
            self._outside(q, n, -1)
        if q.xreq:
            add_extras(n, q.xreq, -1)
        self.dirty_nodes.add(n.name)
        if self.node_log is not None:
            self.node_log.add(n.name)
        self.freed_gen += 1
        if self.anti_wide.get(q.key) is q:
            del self.anti_wide[q.key]
        if self.soft_wide.get(q.key) is q:
            del self.soft_wide[q.key]
        for sel in q.anti_affinity:
            k = repr(sel)
            got = self.anti_bound.get(k)
            if got is not None:
                got[0] -= 1
                if not got[0]:
                    del self.anti_bound[k]
        if q.terminating:
            prio = FREED_TERMINATING
        else:
            prio = q.priority
            if q.group:
                prio = max(prio, self.group_prio.get(q.group, prio))
        self._log_freed(prio, n.name)

    def _log_freed(self, prio: int, node: str) -> None:
        log = self.freed_log.get(prio)
        if log is None:
            log = self.freed_log[prio] = []
        elif len(log) >= FREED_LOG_MAX:
            log.clear()
            self.freed_epoch += 1
        log.append(node)

    def set_checkpoint(self, key: str, when: float | None) -> None:
        """The pod's trainer says it last checkpointed at `when` (seconds since the
        epoch), as a new `gpuyard.io/last-checkpoint` annotation read by add_pod says it;
        the record is changed in place (the twin's trainers checkpoint often, and
        nothing else of the pod changes). Preemption's victim index sees the change."""
        p = self.pods.get(key)
        if p is None or p.checkpoint == when:
            return
        p.checkpoint = when
        if self.log_bound and p.node:
            self.bound_log[key] = p.group
        self.generation += 1

    def bind(self, key: str, node: str) -> None:
        """Record a binding (the policy does this for the bindings it decides)."""
        p = self.pods[key]
        self._unaccount(p)
        p.node = node
        p.nominated = None
        self.pending.pop(key, None)
        self.queue_pods[key] = p.group
        self._account(p)
        self.generation += 1

    def unbind(self, key: str) -> None:
        """A binding the driver could not make: the pod is pending again."""
        p = self.pods.get(key)
        if p is None or p.node is None:
            return
        self._unaccount(p)
        p.node = None
        if not p.terminating:
            self.pending[key] = p
        self.queue_pods[key] = p.group
        self.generation += 1

    # ------------------------------------------------------------------ groups, classes

    def set_pod_group(self, pg: Mapping[str, Any]) -> GroupInfo:
        spec = pg.get("spec") or {}
        created = o.parse_time((pg.get("metadata") or {}).get("creationTimestamp"))
        mr = spec.get("minResources")
        info = GroupInfo(
            key=o.key_of(pg),
            min_member=max(1, int(spec.get("minMember") or 1)),
            min_resources=vector(o.resource_list(mr)) if mr else None,
            timeout=float(spec["scheduleTimeoutSeconds"])
            if spec.get("scheduleTimeoutSeconds")
            else None,
            created=created.timestamp() if created else 0.0,
            obj=dict(pg),
            topology=pod_request(pg.get("metadata") or {}),
        )
        return self.set_group(info)

    def set_group(self, info: GroupInfo) -> GroupInfo:
        self.groups[info.key] = info
        self.members.setdefault(info.key, {})
        self.queue_groups.add(info.key)
        self.generation += 1
        if info.parent or info.key in self.group_alias:
            self._relayout(info.key.split("/", 1)[0])
        return info

    def remove_pod_group(self, key: str) -> None:
        if self.groups.pop(key, None) is not None:
            self.queue_groups.add(key)
            self.generation += 1
            if key in self.group_alias:
                self._relayout(key.split("/", 1)[0])

    def set_composite(self, obj: Mapping[str, Any]) -> None:
        """A CompositePodGroup added or changed (gpuyard.scheduling.composite)."""
        ns = o.namespace_of(obj)
        self.composites.setdefault(ns, {})[o.name_of(obj)] = dict(obj)
        self._relayout(ns)

    def remove_composite(self, key: str) -> None:
        ns, _, name = key.partition("/")
        mine = self.composites.get(ns)
        if mine is not None and mine.pop(name, None) is not None:
            if not mine:
                del self.composites[ns]
            self._relayout(ns)

    def _relayout(self, ns: str) -> None:
        """The namespace's composite gangs made again from its PodGroups and
        CompositePodGroups; the pods of PodGroups whose gang changed are recorded
        again under their new one."""
        from gpuyard.scheduling import composite

        prefix = ns + "/"
        mine = {
            k: g
            for k, g in self.groups.items()
            if k.startswith(prefix) and not g.composite and (g.parent or k in self.group_alias)
        }
        alias, roots = composite.layout(
            ns, mine, self.composites.get(ns, {}), self.priority_classes
        )
        old_alias = {k: v for k, v in self.group_alias.items() if k.startswith(prefix)}
        for k, g in list(self.groups.items()):
            if k.startswith(prefix) and g.composite and k not in roots:
                del self.groups[k]
                self.queue_groups.add(k)
        for k, g in roots.items():
            self.groups[k] = g
            self.members.setdefault(k, {})
            self.queue_groups.add(k)
        moved = {k for k in old_alias.keys() | alias.keys() if old_alias.get(k) != alias.get(k)}
        for k in old_alias:
            del self.group_alias[k]
        self.group_alias.update(alias)
        for child in sorted(moved):
            before = old_alias.get(child, child)
            for p in list(self.members.get(before, {}).values()):
                if (p.sub or p.group) == child and p.obj is not None:
                    self.add_pod(p.obj)
        self.generation += 1

    def set_priority_class(self, name: str, value: int, preempt_never: bool = False) -> None:
        self.priority_classes[name] = int(value)
        if preempt_never:
            self.preempt_never.add(name)
        else:
            self.preempt_never.discard(name)
        self.generation += 1

    # ------------------------------------------------------------------ device claims

    def set_resource_slice(self, obj: Mapping[str, Any]) -> None:
        self._devices_changed(self.dra.set_slice(obj))

    def remove_resource_slice(self, name: str) -> None:
        self._devices_changed(self.dra.remove_slice(name))

    def set_device_class(self, obj: Mapping[str, Any]) -> None:
        self.dra.set_class(obj)
        self._claims_changed(set(self.claim_pods), set())

    def remove_device_class(self, name: str) -> None:
        self.dra.remove_class(name)
        self._claims_changed(set(self.claim_pods), set())

    def set_resource_claim(self, obj: Mapping[str, Any]) -> None:
        key = o.key_of(obj)
        old = self.dra.claims.get(key)
        before = None if old is None else (old.error, old.spec is None, old.owner_pod)
        nodes, moved = self.dra.set_claim(obj)
        c = self.dra.claims[key]
        if moved or before != (c.error, c.spec is None, c.owner_pod):
            self._claims_changed({key}, nodes)

    def undo_allocation(self, key: str) -> None:
        """An allocation the policy recorded (dra.commit) that the API did not take, or
        that was given back: the claim is unallocated again, its devices free."""
        c = self.dra.claims.get(key)
        if c is None or c.results is None:
            return
        node = c.node
        self.dra.forget(key, (None, None))
        self._claims_changed({key}, {node} if node else set())

    def remove_resource_claim(self, key: str) -> None:
        self._claims_changed({key}, self.dra.remove_claim(key))

    def _devices_changed(self, nodes: set[str]) -> None:
        if nodes:
            self.generation += 1
            self.node_gen += 1
            self.freed_gen += 1

    def _claims_changed(self, claims: set[str], nodes: set[str]) -> None:
        """Claims changed (made, allocated, released): the GPU devices they hold count in
        their nodes' used GPUs (freed room is logged like a pod's), and the records of the pods that use them are made again."""
        for name in nodes:
            n = self.nodes.get(name)
            if n is None:
                continue
            if dra.sync_node(self.dra, n) < 0:
                self._log_freed(FREED_TERMINATING, name)  # room anyone may use
                self.freed_gen += 1
            self.dirty_nodes.add(name)
        for key in claims:
            for pk in sorted(self.claim_pods.get(key, ())):
                p = self.pods.get(pk)
                # pending pods only: a bound pod's record counts what it took when bound
                if p is not None and p.obj is not None and p.node is None:
                    self.add_pod(p.obj)
        self.generation += 1
