"""The disruption controller: keeps every PodDisruptionBudget's status, which the
Eviction API reads (and decrements) to allow or refuse an eviction.

For each budget it takes the pods of its namespace that its selector matches (policy/v1:
an empty selector matches every pod, none matches none) and writes, on change:
expectedPods (the pods themselves for an integer minAvailable, else the replicas their
controllers ask for: ReplicaSet, or its Deployment, ReplicationController,
StatefulSet), desiredHealthy (minAvailable, or expected minus maxUnavailable; a
percentage rounds up), currentHealthy (Ready pods not being deleted and not just
evicted), disruptionsAllowed, the DisruptionAllowed condition (SufficientPods,
InsufficientPods, or SyncFailed when a pod has no controller to count), observedGeneration
and disruptedPods (the Eviction API's record of pods it evicted, dropped once the pod
is going or after two minutes if it never went).
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime, timedelta
from typing import Any

from gpuyard.cluster.workloads.loop import Controller
from gpuyard.cluster.workloads.replicasets import REPLICA_SETS, controller_of, pod_ready
from gpuyard.kube import objects as o
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.resources import BUILTIN, PDBS, PODS

DEPLOYMENTS = BUILTIN[("apps/v1", "Deployment")]
STATEFUL_SETS = BUILTIN[("apps/v1", "StatefulSet")]
RCS = BUILTIN[("v1", "ReplicationController")]
DELETION_TIMEOUT = timedelta(minutes=2)  # how long an evicted pod may take to go


def int_or_percent(value: Any, total: int) -> int:
    """minAvailable or maxUnavailable against `total` (a percentage rounds up)."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(float(value[:-1]) * total / 100)
    return int(value)


def selects(pdb: dict[str, Any], labels: dict[str, str]) -> bool:
    sel = (pdb.get("spec") or {}).get("selector")
    if sel is None:
        return False
    return o.selector_matches(sel, labels) if sel else True


def budget_status(
    pdb: dict[str, Any],
    pods: list[dict[str, Any]],
    scale_of: Any,
    now: datetime,
) -> tuple[dict[str, Any], datetime | None]:
    """The status the budget should have, and when to look again (a disrupted pod's
    record expiring). `scale_of(pod)` is the replicas its controller wants, or None."""
    spec, cur = pdb.get("spec") or {}, pdb.get("status") or {}
    by_name = {o.name_of(p): p for p in pods}
    disrupted: dict[str, str] = {}
    wake: datetime | None = None
    for name, ts in (cur.get("disruptedPods") or {}).items():
        p = by_name.get(name)
        t = o.parse_time(ts)
        if p is None or o.meta(p).get("deletionTimestamp") or t is None:
            continue
        if t + DELETION_TIMEOUT <= now:
            continue  # evicted but never went: it counts again
        disrupted[name] = ts
        wake = min(wake or t + DELETION_TIMEOUT, t + DELETION_TIMEOUT)
    healthy = sum(
        1
        for p in pods
        if not o.meta(p).get("deletionTimestamp") and o.name_of(p) not in disrupted and pod_ready(p)
    )
    error = ""
    min_avail, max_unavail = spec.get("minAvailable"), spec.get("maxUnavailable")
    if min_avail is not None and not isinstance(min_avail, str):
        expected, desired = len(pods), int(min_avail)
    else:
        expected = 0
        seen: set[str] = set()
        for p in pods:
            got = scale_of(p)
            if got is None:
                error = f'found no controllers for pod "{o.name_of(p)}"'
                break
            ctrl, replicas = got
            if ctrl not in seen:
                seen.add(ctrl)
                expected += replicas
        if max_unavail is not None:
            desired = max(0, expected - int_or_percent(max_unavail, expected))
        else:
            desired = int_or_percent(min_avail, expected) if min_avail is not None else 0
    allowed = healthy - desired if expected > 0 and not error else 0
    allowed = max(0, allowed)
    if error:
        cond = ("False", "SyncFailed", error)
        expected = desired = 0
    elif allowed > 0:
        cond = ("True", "SufficientPods", "")
    else:
        cond = ("False", "InsufficientPods", "")
    gen = int(o.meta(pdb).get("generation") or 0)
    old = next(
        (c for c in cur.get("conditions") or [] if c.get("type") == "DisruptionAllowed"), None
    )
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    same = (
        old is not None and (old.get("status"), old.get("reason"), old.get("message", "")) == cond
    )
    condition = {
        "type": "DisruptionAllowed",
        "status": cond[0],
        "reason": cond[1],
        "message": cond[2],
        "observedGeneration": gen,
        "lastTransitionTime": old.get("lastTransitionTime") if same and old else stamp,
    }
    status = {
        "observedGeneration": gen,
        "disruptedPods": disrupted or None,
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "conditions": [condition],
    }
    return status, wake


class DisruptionController(Controller):
    what = "poddisruptionbudget"

    def __init__(self, client: Any, informers: InformerFactory | None = None) -> None:
        super().__init__()
        self.client = client
        mk = informer_maker(client, informers)
        self.pdbs = mk(PDBS, name="workloads-pdbs")
        self.pods = mk(PODS, name="workloads-pdb-pods")
        self.rs = mk(REPLICA_SETS, name="workloads-replicasets")
        self.deploys = mk(DEPLOYMENTS, name="workloads-deployments")
        self.sts = mk(STATEFUL_SETS, name="workloads-statefulsets")
        self.rcs = mk(RCS, name="workloads-replicationcontrollers")
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def informers(self) -> tuple[Any, ...]:
        return (self.pods, self.rs, self.deploys, self.sts, self.rcs, self.pdbs)

    def _wire(self) -> None:
        def pdb_ev(pdb: dict[str, Any]) -> None:
            self.enqueue(o.key_of(pdb))

        def pdb_gone(pdb: dict[str, Any]) -> None:
            h = self._timers.pop(o.key_of(pdb), None)
            if h is not None:
                h.cancel()

        self.pdbs.add_handler(pdb_ev, lambda old, new: pdb_ev(new), pdb_gone)

        def pod_ev(pod: dict[str, Any]) -> None:
            labels = o.labels_of(pod)
            for pdb in self.pdbs.by_namespace(o.namespace_of(pod)):
                if selects(pdb, labels):
                    self.enqueue(o.key_of(pdb))

        def pod_update(old: dict[str, Any], new: dict[str, Any]) -> None:
            pod_ev(new)
            if o.labels_of(old) != o.labels_of(new):
                pod_ev(old)

        self.pods.add_handler(pod_ev, pod_update, pod_ev)

    def _scale_of(self, pod: dict[str, Any]) -> tuple[str, int] | None:
        """(controller uid, replicas it wants) of the pod's controller."""
        ref = controller_of(pod)
        if ref is None:
            return None
        ns = o.namespace_of(pod)
        kind = ref.get("kind")
        cache = {
            "ReplicaSet": self.rs,
            "StatefulSet": self.sts,
            "ReplicationController": self.rcs,
            "Deployment": self.deploys,
        }.get(str(kind))
        if cache is None or ref.get("apiVersion") not in ("apps/v1", "v1"):
            return None
        obj = cache.get(str(ref.get("name")), ns)
        if obj is None or o.meta(obj).get("uid") != ref.get("uid"):
            return None
        if kind == "ReplicaSet":
            up = controller_of(obj)
            if up is not None and up.get("kind") == "Deployment":
                d = self.deploys.get(str(up.get("name")), ns)
                if d is not None and o.meta(d).get("uid") == up.get("uid"):
                    obj = d
        return str(o.meta(obj).get("uid")), int((obj.get("spec") or {}).get("replicas", 1))

    async def reconcile(self, key: str) -> None:
        ns, name = key.split("/", 1)
        pdb = self.pdbs.get(name, ns)
        if pdb is None or o.meta(pdb).get("deletionTimestamp"):
            return
        pods = [p for p in self.pods.by_namespace(ns) if selects(pdb, o.labels_of(p))]
        now = datetime.now(UTC)
        want, wake = budget_status(pdb, pods, self._scale_of, now)
        if wake is not None:
            h = self._timers.pop(key, None)
            if h is not None:
                h.cancel()
            delay = (wake - now).total_seconds() + 0.05
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self.enqueue, key)
        cur = pdb.get("status") or {}
        if all((cur.get(k) or None) == (v or None) for k, v in want.items() if k != "conditions"):
            if _same_conditions(cur.get("conditions"), want["conditions"]):
                return
        # a merge patch drops a map's keys only when told: null the pods that left it
        gone = {
            n: None
            for n in cur.get("disruptedPods") or {}
            if n not in (want["disruptedPods"] or {})
        }
        if gone and want["disruptedPods"]:
            want["disruptedPods"] = {**gone, **want["disruptedPods"]}
        # the resourceVersion read: an eviction that decremented the budget since wins
        md = {"resourceVersion": o.meta(pdb).get("resourceVersion")}
        await self._write(
            self.client.patch_status(PDBS, name, {"metadata": md, "status": want}, ns)
        )


def _same_conditions(a: Any, b: list[dict[str, Any]]) -> bool:
    return list(a or []) == b
