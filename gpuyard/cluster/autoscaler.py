"""A simulated cluster-autoscaler for the embedded cluster.

It follows the real cluster-autoscaler's rules, with its flag names and defaults where
it has them, so that balloons tested against it behave as they would on a real cluster:

- Node groups have a min and a max size and a template (the node shape a new node gets).
  A node belongs to the group named by its `gpuyard.io/node-group` label, else to the
  group of its pool (`gpuyard.io/pool`).
- Scale-up: pods that the scheduler marked unschedulable (PodScheduled=False, reason
  Unschedulable), not nominated to a node, and not *expendable* (priority below
  `expendable_pods_priority_cutoff`, default -10) are packed first-fit-decreasing onto
  the nodes already coming (asked for, or registered and still empty: behind a startup
  taint such as gpuyard.io/preflight, or not yet given pods) and then onto new template nodes of the first group
  whose template fits them (nodeSelector, required node affinity, taints, resources;
  a pod with required anti-affinity on the hostname takes a node of its own). The
  group grows by the new nodes it needs, up to its max; and to its min at least.
- Scale-down: a node is unneeded when its utilization (requests of its pods, except
  DaemonSet, mirror and expendable pods, over allocatable; GPU nodes by GPUs, others by
  the larger of cpu and memory) is below `scale_down_utilization_threshold` (0.5) and
  no pod except those would have to move. It is removed after `scale_down_unneeded_time`
  (after its expendable pods are deleted), never below the group's min, not within
  `scale_down_delay_after_add` of the group's last scale-up, at most
  `max_empty_bulk_delete` (10) a pass, and never a node annotated
  `cluster-autoscaler.kubernetes.io/scale-down-disabled: "true"`. Unlike the real one it
  never moves running pods to empty a node: training pods cannot be restarted for free
  (on a real cluster they carry `cluster-autoscaler.kubernetes.io/safe-to-evict: "false"`).
  A balloon pod (gpuyard-balloon, priority -5, above the cutoff) fills a node, so a node
  it holds is not unneeded: that is how balloons keep warm capacity.
- Remediation: a node tainted gpuyard.io/unhealthy for `remediate_after` seconds with
  no workload left on it, or not Ready for `scale_down_unready_time`, is removed and a
  new node of its group replaces it.
- New nodes join with the gpuyard.io/preflight taint (the health controller's active
  tests remove it), released at `join_rate` nodes per second (node-join smoothing; 0
  releases them all at once).

Its status goes where the real one puts it: the ConfigMap
kube-system/cluster-autoscaler-status (YAML, nodeGroups with minSize/maxSize and node
counts), written only when it changes; Events TriggeredScaleUp (on pods),
ScaleDown and RemediateNode (on nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

from gpuyard import names
from gpuyard.cluster.shapes import MAX_NODES, NodeShape, default_shapes
from gpuyard.kube import objects as o
from gpuyard.kube.errors import AlreadyExists, ApiError
from gpuyard.kube.resources import CONFIGMAPS

log = logging.getLogger("gpuyard.cluster.autoscaler")

LABEL_NODE_GROUP = "gpuyard.io/node-group"
ANN_SCALE_DOWN_DISABLED = "cluster-autoscaler.kubernetes.io/scale-down-disabled"
STARTUP_TAINTS = (names.TAINT_PREFLIGHT,)
STATUS_NS = "kube-system"
STATUS_NAME = "cluster-autoscaler-status"
SCALED = ("cpu", "memory", names.RESOURCE_GPU)


class NodeGroupError(ValueError):
    """A node-group spec that cannot be used."""


@dataclass
class NodeGroup:
    name: str
    pool: str
    template: NodeShape
    min_size: int
    max_size: int
    # New nodes are named like the pool's first ones: <prefix>-<4 digits>, numbered on
    # from the highest number in use (gpu-node-0016 after gpu-node-0015).
    prefix: str = ""


@dataclass
class AutoscalerConfig:
    scan_interval: float = 10.0
    scale_down_unneeded_time: float = 600.0
    scale_down_delay_after_add: float = 600.0
    scale_down_unready_time: float = 1200.0
    scale_down_utilization_threshold: float = 0.5
    expendable_pods_priority_cutoff: int = -10
    max_empty_bulk_delete: int = 10
    remediate_after: float = 30.0
    join_rate: float = 0.0  # nodes per second; 0: all at once
    preflight: bool = True


def parse_groups(spec: str, shapes: Iterable[NodeShape]) -> dict[str, NodeGroup]:
    """`gpu=0:64,cpu=0:8`: a group per pool with min:max; the template is the pool's
    first node shape, or gpuyard's default node of that pool."""
    shapes = list(shapes)
    out: dict[str, NodeGroup] = {}
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        name, sep, rng = part.partition("=")
        lo, sep2, hi = rng.partition(":")
        if not sep or not sep2 or not name:
            raise NodeGroupError(f"node group {part!r}: want POOL=MIN:MAX, such as gpu=0:64")
        try:
            mn, mx = int(lo), int(hi)
        except ValueError:
            raise NodeGroupError(f"node group {part!r}: MIN and MAX must be integers") from None
        if mn < 0 or mx < mn:
            raise NodeGroupError(f"node group {part!r}: want 0 <= MIN <= MAX")
        if mx > MAX_NODES:
            raise NodeGroupError(f"node group {part!r}: MAX is at most {MAX_NODES} nodes")
        if name in out:
            raise NodeGroupError(f"node group {name!r} given twice")
        base = next((s for s in shapes if s.pool == name), None)
        if base is None:
            if name == "gpu":
                base = default_shapes(1)[0]
            elif name == "cpu":
                base = default_shapes(0, 1)[0]
            else:
                raise NodeGroupError(
                    f"node group {name!r}: no node of pool {name!r} to take a template from"
                )
        tmpl = replace(
            base,
            name=name,
            rack="",
            zone="",
            block="",
            clique="",
            count=1,
            taints=list(base.taints),
        )
        tmpl.labels = {**base.labels}
        prefix = re.sub(r"-\d+$", "", base.name) if re.search(r"-\d+$", base.name) else base.name
        out[name] = NodeGroup(name, base.pool, tmpl, mn, mx, prefix)
    if not out:
        raise NodeGroupError("no node groups given")
    return out


# ---------------------------------------------------------------------- pure decisions


def group_of(node: Mapping[str, Any], groups: Mapping[str, NodeGroup]) -> str | None:
    labels = o.labels_of(node)
    g = labels.get(LABEL_NODE_GROUP)
    if g in groups:
        return g
    pool = labels.get(names.LABEL_POOL)
    for name, grp in groups.items():
        if grp.pool == pool:
            return name
    return None


def pod_priority(pod: Mapping[str, Any]) -> int:
    p = (pod.get("spec") or {}).get("priority")
    return p if isinstance(p, int) else 0


def is_expendable(pod: Mapping[str, Any], cutoff: int) -> bool:
    return pod_priority(pod) < cutoff


def is_unschedulable(pod: Mapping[str, Any]) -> bool:
    """Pending, marked Unschedulable by the scheduler, not waiting for a nominated node."""
    spec = pod.get("spec") or {}
    st = pod.get("status") or {}
    if spec.get("nodeName") or o.is_pod_terminal(pod) or st.get("nominatedNodeName"):
        return False
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    c = o.get_condition(pod, "PodScheduled")
    return bool(c and c.get("status") == "False" and c.get("reason") == "Unschedulable")


def template_node(g: NodeGroup) -> dict[str, Any]:
    s = g.template
    labels = {
        names.LABEL_POOL: s.pool,
        LABEL_NODE_GROUP: g.name,
        names.LABEL_HOSTNAME: f"{g.name}-template",
        **s.labels,
    }
    if s.gpus:
        labels[names.LABEL_GPU_PRODUCT] = s.gpu_product
    return {
        "metadata": {"name": f"{g.name}-template", "labels": labels},
        "spec": {"taints": [dict(t) for t in s.taints if t.get("key") not in STARTUP_TAINTS]},
    }


def template_room(g: NodeGroup) -> dict[str, int]:
    s = g.template
    return {"cpu": s.cpu_milli, "memory": s.memory_bytes, names.RESOURCE_GPU: s.gpus, "pods": 110}


def _has_hostname_anti_affinity(pod: Mapping[str, Any]) -> bool:
    terms = (((pod.get("spec") or {}).get("affinity") or {}).get("podAntiAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or []
    return any(t.get("topologyKey") == names.LABEL_HOSTNAME for t in terms)


def _fits(req: Mapping[str, int], room: Mapping[str, int]) -> bool:
    return all(v <= room.get(r, 0) for r, v in req.items() if v)


def template_fits(pod: Mapping[str, Any], g: NodeGroup) -> bool:
    node = template_node(g)
    if not o.node_matches_pod(pod, node):
        return False
    if o.untolerated_taints(node, (pod.get("spec") or {}).get("tolerations")):
        return False
    req = {r: v for r, v in o.pod_requests(pod).items() if r in SCALED}
    return _fits({**req, "pods": 1}, template_room(g))


def nodes_needed(
    pods: Iterable[Mapping[str, Any]], g: NodeGroup, upcoming: int
) -> tuple[int, list[Mapping[str, Any]]]:
    """New template nodes that the pods need after filling `upcoming` coming nodes
    (first fit decreasing), and the pods they would hold."""
    room_of = template_room(g)
    # (room left, taken, exclusive): a pod with hostname anti-affinity takes a node alone.
    bins: list[list[Any]] = [[dict(room_of), False, False] for _ in range(upcoming)]
    items = []
    for p in pods:
        req = {r: v for r, v in o.pod_requests(p).items() if r in SCALED and v}
        req["pods"] = 1
        items.append((req, _has_hostname_anti_affinity(p), p))
    items.sort(key=lambda x: tuple(-x[0].get(r, 0) for r in (names.RESOURCE_GPU, "cpu", "memory")))
    helped = []
    for req, alone, p in items:
        if not _fits(req, room_of):
            continue
        for b in bins:
            if b[2] or (alone and b[1]) or not _fits(req, b[0]):
                continue
            break
        else:
            b = [dict(room_of), False, False]
            bins.append(b)
        for r, v in req.items():
            b[0][r] -= v
        b[1], b[2] = True, alone
        helped.append(p)
    return max(0, len(bins) - upcoming), helped


def utilization(
    node: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], cutoff: int
) -> tuple[float, list[Mapping[str, Any]]]:
    """(utilization, pods that would have to move) as the scale-down check counts them."""
    alloc = o.node_allocatable(node)
    used: dict[str, int] = {}
    movable = []
    for p in pods:
        if o.is_pod_terminal(p) or o.is_daemonset_pod(p) or o.is_mirror_pod(p):
            continue
        if is_expendable(p, cutoff):
            continue
        movable.append(p)
        for r, v in o.pod_requests(p).items():
            used[r] = used.get(r, 0) + v
    gpus = alloc.get(names.RESOURCE_GPU, 0)
    if gpus:
        return used.get(names.RESOURCE_GPU, 0) / gpus, movable
    fr = [used.get(r, 0) / alloc[r] for r in ("cpu", "memory") if alloc.get(r)]
    return (max(fr) if fr else 0.0), movable


def is_starting(node: Mapping[str, Any]) -> bool:
    """Registered but still behind a startup taint (such as the preflight gate)."""
    return any(o.find_taint(node, k) for k in STARTUP_TAINTS)


# ---------------------------------------------------------------------- live


@dataclass
class _GroupState:
    last_scale_up: float = -1e18
    asked: int = 0  # asked for, not yet registered
    target: int = 0


@dataclass
class Autoscaler:
    """Runs in the embedded cluster beside the simulated nodes (`sim`)."""

    client: Any
    sim: Any
    groups: dict[str, NodeGroup]
    nodes: Any  # Informer of Nodes
    pods: Any  # Informer of Pods (with the by-node index)
    config: AutoscalerConfig = field(default_factory=AutoscalerConfig)
    recorder: Any = None

    def __post_init__(self) -> None:
        self.state = {g: _GroupState() for g in self.groups}
        self.unneeded_since: dict[str, float] = {}
        self.unhealthy_since: dict[str, float] = {}
        self.unready_since: dict[str, float] = {}
        self.removing: set[str] = set()
        self.joins: asyncio.Queue[str] = asyncio.Queue()
        self.joined: list[tuple[float, str]] = []  # (monotonic time, node name)
        self.removed: list[tuple[float, str, str]] = []  # (time, node, reason)
        self.scale_ups = 0
        self._status = ""
        self._tasks: list[asyncio.Task[Any]] = []
        if self.recorder is None:
            from gpuyard.kube.events import EventRecorder

            self.recorder = EventRecorder(self.client, "cluster-autoscaler")

    # ------------------------------------------------------------ helpers

    def members(self) -> dict[str, list[dict[str, Any]]]:
        """Each group's nodes, without those being removed or just removed."""
        self.removing = {n for n in self.removing if self.nodes.get(n) is not None}
        out: dict[str, list[dict[str, Any]]] = {g: [] for g in self.groups}
        for n in self.nodes.list():
            g = group_of(n, self.groups)
            if g is not None and o.name_of(n) not in self.removing:
                out[g].append(n)
        return out

    async def adopt(self) -> None:
        """After a restart: simulate again the nodes this autoscaler had added."""
        for n in self.nodes.list():
            name = o.name_of(n)
            g = o.labels_of(n).get(LABEL_NODE_GROUP)
            if g not in self.groups or name in self.sim.nodes:
                continue
            labels = o.labels_of(n)
            shape = replace(
                self.groups[g].template,
                name=name,
                rack=labels.get(names.LABEL_RACK, ""),
                zone=labels.get(names.LABEL_ZONE, ""),
                block=labels.get(names.LABEL_BLOCK, ""),
                clique=labels.get(names.LABEL_CLIQUE, ""),
                taints=[],
                labels={LABEL_NODE_GROUP: g},
            )
            await self.sim.add_node(shape, register=False)

    # ------------------------------------------------------------ loop

    async def run(self, stop: asyncio.Event) -> None:
        await self.nodes.wait_synced()
        await self.pods.wait_synced()
        await self.adopt()
        self._tasks.append(asyncio.create_task(self._join_loop(), name="autoscaler-joins"))
        try:
            while not stop.is_set():
                try:
                    await self.scan(time.monotonic())
                except (ApiError, OSError) as exc:
                    log.warning("autoscaler pass failed: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.config.scan_interval)
        finally:
            for t in self._tasks:
                t.cancel()
            for t in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def scan(self, now: float) -> None:
        members = self.members()
        await self._remediate(members, now)
        members = self.members()
        self._scale_up(members, now)
        await self._scale_down(members, now)
        await self._write_status(self.members())

    # ------------------------------------------------------------ scale-up

    def _scale_up(self, members: dict[str, list[dict[str, Any]]], now: float) -> None:
        cutoff = self.config.expendable_pods_priority_cutoff
        pending = [
            p for p in self.pods.list() if is_unschedulable(p) and not is_expendable(p, cutoff)
        ]
        left = pending
        for name, g in self.groups.items():
            st = self.state[name]
            size = len(members[name]) + st.asked
            want = max(0, g.min_size - size)
            fit = [p for p in left if template_fits(p, g)]
            if fit:
                # Nodes asked for, and nodes registered but empty (still behind a
                # startup taint, or not yet given their pods by the scheduler): the
                # pending pods go there first, as the real one's "filter out
                # schedulable pods" step finds.
                coming = st.asked + sum(
                    1
                    for n in members[name]
                    if not o.find_taint(n, names.TAINT_UNHEALTHY) and not self._holds_work(n)
                )
                need, helped = nodes_needed(fit, g, coming)
                want = max(want, need)
                helped_keys = {o.key_of(p) for p in helped}
                left = [p for p in left if o.key_of(p) not in helped_keys]
            add = min(want, g.max_size - size)
            if add <= 0:
                if fit and size >= g.max_size:
                    for p in fit[:5]:
                        self.recorder.emit(
                            p,
                            "Normal",
                            "NotTriggerScaleUp",
                            f"pod didn't trigger scale-up: node group {name} is at its "
                            f"max size {g.max_size}",
                        )
                continue
            st.asked += add
            st.last_scale_up = now
            self.scale_ups += 1
            for _ in range(add):
                self.joins.put_nowait(name)
            log.info("scale-up: node group %s %d -> %d", name, size, size + add)
            for p in fit[:5]:
                self.recorder.emit(
                    p,
                    "Normal",
                    "TriggeredScaleUp",
                    f"pod triggered scale-up: [{{{name} {size}->{size + add} (max: {g.max_size})}}]",
                )

    def _holds_work(self, node: Mapping[str, Any]) -> bool:
        cutoff = self.config.expendable_pods_priority_cutoff
        return bool(utilization(node, self.pods.by_node(o.name_of(node)), cutoff)[1])

    async def _join_loop(self) -> None:
        """Node-join smoothing: release asked-for nodes at `join_rate` per second."""
        rate = self.config.join_rate
        next_at = 0.0
        pending: set[asyncio.Task[Any]] = set()
        while True:
            group = await self.joins.get()
            if rate > 0:
                now = time.monotonic()
                next_at = max(next_at, now)
                await asyncio.sleep(next_at - now)
                next_at += 1.0 / rate
            t = asyncio.create_task(self._join(group))
            pending.add(t)
            t.add_done_callback(pending.discard)

    def _new_name(self, g: NodeGroup) -> str:
        """The next name in the pool's style, never one a node has had (a removed node's
        host directory stays, so its name is not given again)."""
        prefix = g.prefix or g.name
        pat = re.compile(re.escape(prefix) + r"-(\d+)$")
        used = set(self.sim.nodes) | {r[1] for r in self.removed}
        hosts = getattr(self.sim, "hosts_dir", None)
        if hosts is not None and hosts.is_dir():
            used |= {p.name for p in hosts.iterdir()}
        top = max((int(m.group(1)) for u in used if (m := pat.match(u))), default=-1)
        return f"{prefix}-{top + 1:04d}"

    async def _join(self, group: str) -> None:
        g = self.groups[group]
        name = self._new_name(g)
        shape = replace(g.template, name=name, rack="", zone="", taints=list(g.template.taints))
        taints, labels = [], {LABEL_NODE_GROUP: group}
        if self.config.preflight:
            taints = [{"key": names.TAINT_PREFLIGHT, "effect": "NoSchedule"}]
            labels[names.LABEL_PREFLIGHT] = "pending"
        try:
            await self.sim.add_node(shape, taints=taints, labels=labels)
            self.joined.append((time.monotonic(), name))
        except Exception as exc:
            log.warning("node %s could not join: %s", name, exc)
        finally:
            self.state[group].asked = max(0, self.state[group].asked - 1)

    # ------------------------------------------------------------ scale-down

    async def _scale_down(self, members: dict[str, list[dict[str, Any]]], now: float) -> None:
        cfg = self.config
        seen: set[str] = set()
        victims: list[tuple[str, dict[str, Any]]] = []
        for name, g in self.groups.items():
            st = self.state[name]
            size = len(members[name]) + st.asked
            for n in members[name]:
                node = o.name_of(n)
                seen.add(node)
                ann = (n.get("metadata") or {}).get("annotations") or {}
                if ann.get(ANN_SCALE_DOWN_DISABLED) == "true" or is_starting(n):
                    self.unneeded_since.pop(node, None)
                    continue
                if not o.is_node_ready(n):
                    continue
                u, movable = utilization(
                    n, self.pods.by_node(node), cfg.expendable_pods_priority_cutoff
                )
                if u >= cfg.scale_down_utilization_threshold or movable:
                    self.unneeded_since.pop(node, None)
                    continue
                since = self.unneeded_since.setdefault(node, now)
                if now - since < cfg.scale_down_unneeded_time:
                    continue
                if now - st.last_scale_up < cfg.scale_down_delay_after_add:
                    continue
                if size <= g.min_size or len(victims) >= cfg.max_empty_bulk_delete:
                    continue
                size -= 1
                victims.append((name, n))
        for node in list(self.unneeded_since):
            if node not in seen:
                del self.unneeded_since[node]
        await asyncio.gather(*(self._remove(n, "ScaleDown", replace_it=None) for _, n in victims))

    # ------------------------------------------------------------ remediation

    async def _remediate(self, members: dict[str, list[dict[str, Any]]], now: float) -> None:
        cfg = self.config
        todo = []
        seen: set[str] = set()
        for name, nodes in members.items():
            for n in nodes:
                node = o.name_of(n)
                seen.add(node)
                if o.find_taint(n, names.TAINT_UNHEALTHY):
                    since = self.unhealthy_since.setdefault(node, now)
                    if now - since >= cfg.remediate_after and not self._holds_work(n):
                        todo.append((name, n))
                        continue
                else:
                    self.unhealthy_since.pop(node, None)
                if o.is_node_ready(n) or is_starting(n):
                    self.unready_since.pop(node, None)
                    continue
                since = self.unready_since.setdefault(node, now)
                if now - since >= cfg.scale_down_unready_time:
                    todo.append((name, n))
        for d in (self.unhealthy_since, self.unready_since):
            for node in list(d):
                if node not in seen:
                    del d[node]
        await asyncio.gather(*(self._remove(n, "RemediateNode", replace_it=g) for g, n in todo))

    async def _remove(self, node: dict[str, Any], reason: str, replace_it: str | None) -> None:
        name = o.name_of(node)
        self.removing.add(name)
        try:
            if reason == "ScaleDown":
                msg = "node removed by cluster autoscaler: unneeded"
            else:
                taint = o.find_taint(node, names.TAINT_UNHEALTHY)
                why = (taint or {}).get("value") or "not Ready"
                msg = f"node removed for repair ({why}); a new node of its group replaces it"
            await self.recorder.record(node, "Normal", reason, msg)
            log.info("%s: %s", name, msg)
            # Expendable and DaemonSet pods go with the node (pod garbage collection).
            with contextlib.suppress(KeyError):
                await self.sim.remove_node(name)
            self.removed.append((time.monotonic(), name, reason))
            self.unneeded_since.pop(name, None)
            if replace_it is not None:
                self.state[replace_it].asked += 1
                self.joins.put_nowait(replace_it)
        except BaseException:
            self.removing.discard(name)
            raise
        # On success it stays in `removing` until the node informer has seen it go
        # (members() prunes it then), so a removed node is never counted as a member.

    # ------------------------------------------------------------ status

    def status_doc(self, members: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
        groups = []
        total = ready = starting = 0
        for name, g in self.groups.items():
            ns = members[name]
            r = sum(1 for n in ns if o.is_node_ready(n) and not is_starting(n))
            s = sum(1 for n in ns if is_starting(n))
            total += len(ns)
            ready += r
            starting += s
            groups.append(
                {
                    "name": name,
                    "health": {
                        "status": "Healthy",
                        "nodeCounts": {
                            "registered": {"total": len(ns), "ready": r, "notStarted": s},
                        },
                        "cloudProviderTarget": len(ns) + self.state[name].asked,
                        "minSize": g.min_size,
                        "maxSize": g.max_size,
                    },
                }
            )
        return {
            "autoscalerStatus": "Running",
            "clusterWide": {
                "health": {
                    "status": "Healthy",
                    "nodeCounts": {
                        "registered": {"total": total, "ready": ready, "notStarted": starting}
                    },
                }
            },
            "nodeGroups": groups,
        }

    async def _write_status(self, members: dict[str, list[dict[str, Any]]]) -> None:
        text = yaml.safe_dump(self.status_doc(members), sort_keys=False)
        if text == self._status:
            return
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": STATUS_NAME, "namespace": STATUS_NS},
            "data": {"status": text},
        }
        try:
            await self.client.create(cm)
        except AlreadyExists:
            await self.client.patch(CONFIGMAPS, STATUS_NAME, {"data": {"status": text}}, STATUS_NS)
        self._status = text
