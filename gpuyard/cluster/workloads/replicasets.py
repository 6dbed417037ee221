"""The ReplicaSet controller: keeps spec.replicas pods of the template, level-triggered
(and, with a map for a selector, the ReplicationController controller).

Informers on ReplicaSets and pods; every change queues the ReplicaSet concerned and a
worker reconciles each queued key against the caches (no polling). Pods it creates
carry a controller owner reference; orphan pods matching the selector are adopted.
Creations and deletions it made that the pod watch has not shown yet are remembered
(as kube-controller-manager's expectations), so a lagging cache never makes it create
twice. Status (replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
observedGeneration) is written only when it changes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gpuyard.cluster.workloads.loop import Controller
from gpuyard.kube import objects as o
from gpuyard.kube.errors import ApiError, NotFound
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.resources import BUILTIN, PODS

log = logging.getLogger("gpuyard.cluster.workloads")

REPLICA_SETS = BUILTIN[("apps/v1", "ReplicaSet")]


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def pod_ready(pod: dict[str, Any]) -> bool:
    return o.condition_true(pod, "Ready")


def pod_active(pod: dict[str, Any]) -> bool:
    return not o.is_pod_terminal(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp")


def _delete_order(pod: dict[str, Any]) -> tuple[Any, ...]:
    """Which pods go first on a scale down: unbound, then not running, then not ready,
    then the newest."""
    st = pod.get("status") or {}
    created = (pod.get("metadata") or {}).get("creationTimestamp") or ""
    return (
        bool((pod.get("spec") or {}).get("nodeName")),
        st.get("phase") == "Running",
        pod_ready(pod),
        "".join(chr(0x10FFFF - ord(c)) for c in created),  # newest first
    )


class ReplicaSetController(Controller):
    what = "replicaset"
    res = REPLICA_SETS
    kind = "ReplicaSet"
    pods_informer = "workloads-pods"

    def __init__(self, client: Any, informers: InformerFactory | None = None) -> None:
        super().__init__()
        self.client = client
        mk = informer_maker(client, informers)
        self.sets = mk(self.res, name=f"workloads-{self.res.plural}")
        self.pods = mk(PODS, name=self.pods_informer)
        self.pods.add_index("rs-owner", self._owner_index)
        # rs key -> pod names created / deleted that the pod cache has not shown yet
        self._adds: dict[str, set[str]] = {}
        self._status: dict[str, dict[str, Any]] = {}
        # ReplicaSets to look for orphans for: new or changed ones, and those an orphan
        # pod's event named (not every reconcile: that would walk the namespace's pods)
        self._scan: set[str] = set()

    @staticmethod
    def selector_of(obj: dict[str, Any]) -> dict[str, Any]:
        """The object's label selector (a ReplicationController's is a plain map)."""
        return (obj.get("spec") or {}).get("selector") or {}

    def _owner_index(self, pod: dict[str, Any]) -> str | None:
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != self.kind:
            return None
        return f"{o.namespace_of(pod)}/{ref.get('name')}"

    def informers(self) -> tuple[Any, ...]:
        return (self.pods, self.sets)

    def _wire(self) -> None:
        def rs_ev(rs: dict[str, Any]) -> None:
            self.enqueue(o.key_of(rs))

        def rs_set(rs: dict[str, Any]) -> None:
            self._scan.add(o.key_of(rs))
            rs_ev(rs)

        def rs_update(old: dict[str, Any], new: dict[str, Any]) -> None:
            if self.selector_of(old) != self.selector_of(new):
                self._scan.add(o.key_of(new))
            rs_ev(new)

        self.sets.add_handler(rs_set, rs_update, rs_ev)

        def pod_ev(pod: dict[str, Any]) -> None:
            owner = self._owner_index(pod)
            if owner is not None:
                self.enqueue(owner)
            elif controller_of(pod) is None and pod_active(pod):
                # an orphan: the ReplicaSets of its namespace whose selector takes it
                labels = o.labels_of(pod)
                for rs in self.sets.by_namespace(o.namespace_of(pod)):
                    sel = self.selector_of(rs)
                    if sel and o.selector_matches(sel, labels):
                        self._scan.add(o.key_of(rs))
                        self.enqueue(o.key_of(rs))

        def pod_update(old: dict[str, Any], new: dict[str, Any]) -> None:
            pod_ev(new)
            if self._owner_index(old) != self._owner_index(new):
                pod_ev(old)

        self.pods.add_handler(pod_ev, pod_update, pod_ev)

    async def reconcile(self, key: str) -> None:
        ns, name = key.split("/", 1)
        rs = self.sets.get(name, ns)
        if rs is None:
            for d in (self._adds, self._dels, self._status):
                d.pop(key, None)
            self._scan.discard(key)
            return
        md = rs["metadata"]
        spec = rs.get("spec") or {}
        selector = self.selector_of(rs)
        uid = md.get("uid")
        owned = [p for p in self.pods.by_index("rs-owner", key) if controller_of(p)["uid"] == uid]  # type: ignore[index]
        if key in self._scan:
            self._scan.discard(key)
            if not md.get("deletionTimestamp") and selector:
                owned += await self._adopt(rs, ns, selector)
        names = {o.name_of(p) for p in owned}
        adds = self._adds.setdefault(key, set())
        adds -= names  # seen now
        dels = self._dels.setdefault(key, set())
        dels &= {o.name_of(p) for p in owned if pod_active(p)}  # still not gone
        active = [p for p in owned if pod_active(p) and o.name_of(p) not in dels]
        if not md.get("deletionTimestamp"):
            want = int(spec.get("replicas", 1))
            diff = want - len(active) - len(adds)
            if diff > 0:
                await self._create(rs, key, diff)
            elif diff < 0 and not adds:
                victims = sorted(active, key=_delete_order)[:-diff]
                await self._delete_pods(key, ns, victims)
                active = [p for p in active if p not in victims]
        await self._write_status(rs, key, active, selector)

    async def _adopt(
        self, rs: dict[str, Any], ns: str, selector: dict[str, Any]
    ) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        for pod in self.pods.by_namespace(ns):
            if controller_of(pod) is not None or not pod_active(pod):
                continue
            if not o.selector_matches(selector, o.labels_of(pod)):
                continue
            refs = [*((pod["metadata"].get("ownerReferences")) or []), o.owner_reference(rs)]
            patch = {"metadata": {"ownerReferences": refs}}
            try:
                async with self._sem:
                    got.append(await self.client.patch(PODS, o.name_of(pod), patch, ns))
                self.writes += 1
            except (NotFound, ApiError) as exc:
                log.debug("adopting %s/%s: %s", ns, o.name_of(pod), exc)
        return got

    async def _create(self, rs: dict[str, Any], key: str, n: int) -> None:
        tmpl = (rs.get("spec") or {}).get("template") or {}
        tmd = tmpl.get("metadata") or {}
        ns = o.namespace_of(rs)
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{o.name_of(rs)}-",
                "namespace": ns,
                "labels": dict(tmd.get("labels") or {}),
                "annotations": dict(tmd.get("annotations") or {}),
                "ownerReferences": [o.owner_reference(rs)],
            },
            "spec": tmpl.get("spec") or {},
        }

        async def one() -> None:
            async with self._sem:
                made = await self.client.create(body, ns)
            self.writes += 1
            self._adds.setdefault(key, set()).add(o.name_of(made))

        results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]

    async def _write_status(
        self, rs: dict[str, Any], key: str, active: list[dict[str, Any]], selector: dict[str, Any]
    ) -> None:
        tlabels = ((rs.get("spec") or {}).get("template") or {}).get("metadata") or {}
        want_labels = tlabels.get("labels") or {}
        ready = sum(1 for p in active if pod_ready(p))
        status: dict[str, Any] = {
            "replicas": len(active),
            "fullyLabeledReplicas": sum(
                1 for p in active if all(o.labels_of(p).get(k) == v for k, v in want_labels.items())
            ),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "observedGeneration": int(rs["metadata"].get("generation") or 0),
        }
        cur = rs.get("status") or {}
        have = {k: cur.get(k, 0) for k in status}
        if have == status:
            return
        ns, name = key.split("/", 1)
        async with self._sem:
            await self.client.patch_status(self.res, name, {"status": status}, ns)
        self.writes += 1
        self._status[key] = status


class ReplicationControllerController(ReplicaSetController):
    """v1 ReplicationControllers: a ReplicaSet with an equality-only selector (a map)."""

    what = "replicationcontroller"
    res = BUILTIN[("v1", "ReplicationController")]
    kind = "ReplicationController"
    pods_informer = "workloads-rc-pods"

    @staticmethod
    def selector_of(obj: dict[str, Any]) -> dict[str, Any]:
        sel = (obj.get("spec") or {}).get("selector") or {}
        return {"matchLabels": dict(sel)} if sel else {}
