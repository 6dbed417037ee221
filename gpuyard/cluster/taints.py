"""The taint manager of the embedded cluster (what kube-controller-manager's taint
eviction controller does on a real one): pods on a node with a NoExecute taint leave it.

For every NoExecute taint on a node, whoever set it (a person with kubectl taint, the
health controller, the node lifecycle controller):

- a pod that does not tolerate it is deleted at once;
- a pod that tolerates it with tolerationSeconds N (the least N of the tolerations
  that match, over all the node's NoExecute taints) is deleted N seconds after the
  taint was seen on its node (the taint's timeAdded when it has one), unless the taint
  is gone by then;
- a pod that tolerates it without tolerationSeconds stays.

Before the delete the pod gets the DisruptionTarget condition (reason
DeletionByTaintManager) and an Event TaintManagerEviction says why, as on Kubernetes.
Terminal pods and pods already being deleted are left alone. `plan` is the pure part
(pods, nodes and a clock in, due evictions and the next deadline out); `TaintManager`
feeds it from the shared node and pod informers and applies what it returns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gpuyard.k8s.disruption import DELETION_BY_TAINT_MANAGER, status_patch
from gpuyard.kube import objects as o
from gpuyard.kube.errors import NotFound
from gpuyard.kube.events import EventRecorder
from gpuyard.kube.informer import Informer
from gpuyard.kube.resources import PODS

log = logging.getLogger("gpuyard.cluster.taints")

Obj = dict[str, Any]


def no_execute(node: Mapping[str, Any]) -> list[Obj]:
    return [
        t for t in (node.get("spec") or {}).get("taints") or () if t.get("effect") == o.NO_EXECUTE
    ]


def _taint_id(t: Mapping[str, Any]) -> tuple[str, str]:
    return (str(t.get("key") or ""), str(t.get("value") or ""))


def tolerated_for(pod: Mapping[str, Any], taints: Iterable[Mapping[str, Any]]) -> float | None:
    """How long the pod may stay: None if a taint is not tolerated (leave now), inf if
    tolerated forever, else the least tolerationSeconds of the matching tolerations."""
    tols = (pod.get("spec") or {}).get("tolerations") or ()
    least = float("inf")
    for t in taints:
        matching = [x for x in tols if o.toleration_matches(x, t)]
        if not matching:
            return None
        for x in matching:
            secs = x.get("tolerationSeconds")
            if secs is not None:
                least = min(least, max(0.0, float(secs)))
    return least


@dataclass
class Plan:
    due: list[tuple[Obj, str]] = field(default_factory=list)  # (pod, why)
    next_at: float | None = None  # the next deadline (wall clock), if any


def plan(
    nodes: Mapping[str, Obj],
    pods_on: Mapping[str, list[Obj]],
    seen: dict[tuple[str, str, str], float],
    now: float,
) -> Plan:
    """The evictions due now. `seen` ((node, key, value) -> wall time the taint was
    first seen there) is kept by the caller across calls; taints gone are dropped."""
    out = Plan()
    live: set[tuple[str, str, str]] = set()
    for name, node in nodes.items():
        taints = no_execute(node)
        if not taints:
            continue
        since = 0.0
        for t in taints:
            tid = (name, *_taint_id(t))
            live.add(tid)
            if tid not in seen:
                added = o.parse_time(t.get("timeAdded"))
                seen[tid] = min(now, added.timestamp()) if added else now
            since = max(since, seen[tid])
        for pod in pods_on.get(name, ()):
            md = pod.get("metadata") or {}
            if md.get("deletionTimestamp") or o.is_pod_terminal(pod):
                continue
            secs = tolerated_for(pod, taints)
            shown = ", ".join(o.taint_str(t) for t in taints)
            if secs is None:
                out.due.append((pod, f"node {name} has the taint {shown}, not tolerated"))
            elif secs != float("inf"):
                at = since + secs
                if at <= now:
                    out.due.append(
                        (pod, f"node {name} has the taint {shown}, tolerated for {secs:g}s")
                    )
                elif out.next_at is None or at < out.next_at:
                    out.next_at = at
    for tid in [k for k in seen if k not in live]:
        del seen[tid]
    return out


class TaintManager:
    """Evicts pods from nodes with NoExecute taints (see the module docstring)."""

    def __init__(self, client: Any, nodes: Informer, pods: Informer, period: float = 1.0) -> None:
        self.client = client
        self.nodes = nodes
        self.pods = pods
        self.period = period
        self.seen: dict[tuple[str, str, str], float] = {}
        self.recorder = EventRecorder(client, "taint-eviction-controller")
        self.evicted = 0
        self._asked: set[str] = set()  # pods deleted and not yet seen deleting

    async def run(self, stop: asyncio.Event) -> None:
        await self.nodes.wait_synced()
        await self.pods.wait_synced()
        while not stop.is_set():
            wait = self.period
            try:
                p = self.tick(time.time())
                for pod, why in p.due:
                    await self._evict(pod, why)
                if p.next_at is not None:
                    wait = max(0.05, min(wait, p.next_at - time.time()))
            except Exception as exc:  # keep the loop alive; the next tick retries
                log.warning("taint manager: %s", exc)
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except TimeoutError:
                pass

    def tick(self, now: float) -> Plan:
        nodes = {n: obj for n, obj in self.nodes.cache.items() if no_execute(obj)}
        pods_on = {n: self.pods.by_node(n) for n in nodes}
        p = plan(nodes, pods_on, self.seen, now)
        self._asked &= {o.key_of(pod) for pod, _ in p.due}
        p.due = [(pod, why) for pod, why in p.due if o.key_of(pod) not in self._asked]
        return p

    async def _evict(self, pod: Obj, why: str) -> None:
        md = pod.get("metadata") or {}
        name, ns = md.get("name", ""), md.get("namespace")
        try:
            await self.client.patch_status(
                PODS, name, status_patch(DELETION_BY_TAINT_MANAGER, why), ns, patch_type="strategic"
            )
            await self.client.delete(PODS, name, ns)
        except NotFound:
            return
        self._asked.add(o.key_of(pod))
        self.evicted += 1
        log.info("evicted %s/%s: %s", ns, name, why)
        await self.recorder.record(
            pod, "Normal", "TaintManagerEviction", f"Marking for deletion: {why}"
        )
