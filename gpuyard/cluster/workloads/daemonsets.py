"""The DaemonSet controller: one pod per node that the template's nodeSelector and
required node affinity match and whose NoSchedule/NoExecute taints it tolerates,
level-triggered on DaemonSet, node and pod informers.

Its pods get the tolerations Kubernetes gives DaemonSet pods (not-ready and unreachable
NoExecute without tolerationSeconds; disk-, memory- and pid-pressure and unschedulable
NoSchedule; network-unavailable NoSchedule with hostNetwork), so they stay on nodes
that are unhealthy or cordoned. Each pod is bound to its node by spec.nodeName (the
simulated kubelet admits it as a real one would). A node that stops matching loses its
pod; a pod whose node is gone is deleted. Pods carry their template's hash
(controller-revision-hash) and each template is kept as a ControllerRevision
(gpuyard.cluster.workloads.revisions), so `kubectl rollout history/undo ds` work. A
changed template rolls out (RollingUpdate, the default): pods of older templates are
deleted, and made again from the new one, while no more than maxUnavailable (1) of the
nodes lack a ready daemon (unready old pods go at once); OnDelete waits for a pod to be
deleted. A failed daemon pod is deleted and made again after a back-off that doubles
per failure on that node (up to 15 min), so a node whose kubelet keeps refusing it (a
full node) is not flooded. Status says how many run the current template, so
`kubectl rollout status ds` ends.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from typing import Any

from gpuyard.cluster.workloads.deployments import resolve
from gpuyard.cluster.workloads.loop import Controller
from gpuyard.cluster.workloads.replicasets import controller_of, pod_active, pod_ready
from gpuyard.cluster.workloads.revisions import REVISIONS, Revisions
from gpuyard.cluster.workloads.statefulsets import REVISION_LABEL, revision_of
from gpuyard.kube import objects as o
from gpuyard.kube.errors import NotFound
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.resources import BUILTIN, NODES, PODS

log = logging.getLogger("gpuyard.cluster.workloads")

DAEMON_SETS = BUILTIN[("apps/v1", "DaemonSet")]
BACKOFF_MAX_S = 900.0

_ALWAYS = (
    ("node.kubernetes.io/not-ready", "NoExecute"),
    ("node.kubernetes.io/unreachable", "NoExecute"),
    ("node.kubernetes.io/disk-pressure", "NoSchedule"),
    ("node.kubernetes.io/memory-pressure", "NoSchedule"),
    ("node.kubernetes.io/pid-pressure", "NoSchedule"),
    ("node.kubernetes.io/unschedulable", "NoSchedule"),
)
_HOST_NETWORK = (("node.kubernetes.io/network-unavailable", "NoSchedule"),)


def daemon_tolerations(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The pod spec's tolerations plus those every DaemonSet pod gets."""
    tols = list(spec.get("tolerations") or [])
    extra = _ALWAYS + (_HOST_NETWORK if spec.get("hostNetwork") else ())
    for key, effect in extra:
        if not any(t.get("key") == key and t.get("effect") == effect for t in tols):
            tols.append({"key": key, "operator": "Exists", "effect": effect})
    return tols


def daemon_pod(template: dict[str, Any]) -> dict[str, Any]:
    """What placement looks at of the template's pod: its spec with the daemon's
    tolerations (made once per pass, not once per node)."""
    spec = dict(template.get("spec") or {})
    spec["tolerations"] = daemon_tolerations(spec)
    return {"spec": spec}


def runs_on(pod: dict[str, Any], node: dict[str, Any]) -> bool:
    """Whether the daemon pod (from daemon_pod) belongs on the node."""
    spec = pod["spec"]
    return o.node_matches_pod(pod, node) and not o.untolerated_taints(node, spec["tolerations"])


def should_run(template: dict[str, Any], node: dict[str, Any]) -> bool:
    return runs_on(daemon_pod(template), node)


class DaemonSetController(Controller):
    what = "daemonset"
    coalesce_s = 0.05

    def __init__(self, client: Any, informers: InformerFactory | None = None) -> None:
        super().__init__()
        self.client = client
        mk = informer_maker(client, informers)
        self.sets = mk(DAEMON_SETS, name="workloads-daemonsets")
        self.nodes = mk(NODES, name="workloads-nodes")
        self.pods = mk(PODS, name="workloads-daemon-pods")
        self.pods.add_index("ds-owner", self._owner_index)
        self.revision_cache = mk(REVISIONS, name="workloads-revisions")
        self.revisions = Revisions(self, self.revision_cache, "DaemonSet")
        self._adds: dict[str, set[str]] = {}  # ds uid -> nodes a pod was made for, unseen
        # (ds uid, node) -> (failures, monotonic time before which no new pod is made):
        # a daemon pod that keeps failing (a full node's kubelet refusing it) backs off
        self._backoff: dict[tuple[str, str], tuple[int, float]] = {}
        self._failed_seen: dict[str, set[str]] = {}  # ds uid -> failed pods counted
        # ds key -> (its revision, node -> (the Node object judged, whether the daemon
        # runs there)): a node is judged again only when its object or the template
        # changed, not at every pass over thousands of nodes
        self._placed: dict[str, tuple[str, dict[str, tuple[dict[str, Any], bool]]]] = {}

    @staticmethod
    def _owner_index(pod: dict[str, Any]) -> str | None:
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != "DaemonSet":
            return None
        return f"{o.namespace_of(pod)}/{ref.get('name')}"

    def informers(self) -> tuple[Any, ...]:
        return (self.nodes, self.pods, self.revision_cache, self.sets)

    def _wire(self) -> None:
        def ds_ev(ds: dict[str, Any]) -> None:
            self.enqueue(o.key_of(ds))

        self.sets.add_handler(ds_ev, lambda old, new: ds_ev(new), ds_ev)

        def pod_ev(pod: dict[str, Any]) -> None:
            owner = self._owner_index(pod)
            if owner is not None:
                self.enqueue(owner)

        self.pods.add_handler(pod_ev, lambda old, new: pod_ev(new), pod_ev)

        def node_ev(*_: Any) -> None:
            for ds in self.sets.list():
                self.enqueue(o.key_of(ds))

        def node_update(old: dict[str, Any], new: dict[str, Any]) -> None:
            # labels and taints decide where daemons run; readiness does not
            if (old.get("metadata") or {}).get("labels") != (new.get("metadata") or {}).get(
                "labels"
            ) or (old.get("spec") or {}).get("taints") != (new.get("spec") or {}).get("taints"):
                node_ev()

        self.nodes.add_handler(node_ev, node_update, node_ev)

    async def reconcile(self, key: str) -> None:
        ns, name = key.split("/", 1)
        ds = self.sets.get(name, ns)
        if ds is None or ds["metadata"].get("deletionTimestamp"):
            if ds is None:
                self.revisions.forget(key)
                self._placed.pop(key, None)
            return
        uid = ds["metadata"].get("uid") or ""
        tmpl = (ds.get("spec") or {}).get("template") or {}
        rev = revision_of(ds)
        hash_ = rev.rsplit("-", 1)[-1]
        await self.revisions.ensure(ds, rev, tmpl)
        pods = [p for p in self.pods.by_index("ds-owner", key) if controller_of(p)["uid"] == uid]  # type: ignore[index]
        active = [p for p in pods if pod_active(p)]
        by_node: dict[str, list[dict[str, Any]]] = {}
        for p in active:
            by_node.setdefault((p.get("spec") or {}).get("nodeName") or "", []).append(p)
        wanted = self._wanted(key, rev, tmpl)
        ready_pods = {id(p) for p in active if pod_ready(p)}
        adds = self._adds.setdefault(uid, set())
        adds -= set(by_node)
        # a failed daemon pod is replaced, as the kubelet will not restart it, after a
        # back-off that doubles with each failure on that node (1 s up to 15 min)
        failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
        now = time.monotonic()
        seen = self._failed_seen.setdefault(uid, set())
        seen &= {o.meta(p).get("uid") or "" for p in failed}  # forget the deleted ones
        for p in failed:
            puid = o.meta(p).get("uid") or ""
            if puid in seen:
                continue
            seen.add(puid)
            node = (p.get("spec") or {}).get("nodeName") or ""
            n, _ = self._backoff.get((uid, node), (0, 0.0))
            self._backoff[(uid, node)] = (n + 1, now + min(BACKOFF_MAX_S, 2.0**n))
        for node, ps in by_node.items():
            if any(id(p) in ready_pods for p in ps):
                self._backoff.pop((uid, node), None)
        waiting = {node for node in wanted if self._backoff.get((uid, node), (0, 0.0))[1] > now}
        if waiting:
            soonest = min(self._backoff[(uid, node)][1] for node in waiting)
            asyncio.get_running_loop().call_later(soonest - now + 0.05, self.enqueue, key)
        create = sorted(wanted - set(by_node) - adds - waiting)
        doomed = [p for node, ps in by_node.items() if node not in wanted for p in ps]
        doomed += [p for node, ps in by_node.items() if node in wanted for p in ps[1:]]
        on_wanted = [ps[0] for node, ps in by_node.items() if node in wanted]
        rolling = self._roll(ds, on_wanted, len(wanted), hash_)
        await asyncio.gather(
            *(self._create(ds, node, hash_) for node in create),
            *(self._delete(p) for p in [*doomed, *failed, *rolling]),
        )
        ready = sum(1 for p in on_wanted if id(p) in ready_pods)
        updated = [p for p in on_wanted if o.labels_of(p).get(REVISION_LABEL) == hash_]
        status = {
            "desiredNumberScheduled": len(wanted),
            "currentNumberScheduled": len(on_wanted),
            "numberMisscheduled": len([n for n in by_node if n not in wanted]),
            "numberReady": ready,
            "numberAvailable": ready,
            "numberUnavailable": len(wanted) - ready,
            "updatedNumberScheduled": len(updated),
            "observedGeneration": int(ds["metadata"].get("generation") or 0),
        }
        cur = ds.get("status") or {}
        if any(cur.get(k, 0) != v for k, v in status.items()):
            await self._write(self.client.patch_status(DAEMON_SETS, name, {"status": status}, ns))
        in_use = {rev} | {
            f"{name}-{o.labels_of(p).get(REVISION_LABEL)}"
            for p in active
            if o.labels_of(p).get(REVISION_LABEL)
        }
        await self.revisions.prune(ds, in_use)

    def _wanted(self, key: str, rev: str, tmpl: dict[str, Any]) -> set[str]:
        """The nodes the daemon of revision `rev` belongs on."""
        got = self._placed.get(key)
        memo = got[1] if got is not None and got[0] == rev else {}
        daemon: dict[str, Any] | None = None
        judged: dict[str, tuple[dict[str, Any], bool]] = {}
        out: set[str] = set()
        for n in self.nodes.list():
            name = o.name_of(n)
            m = memo.get(name)
            if m is not None and m[0] is n:
                runs = m[1]
            else:
                if daemon is None:
                    daemon = daemon_pod(tmpl)
                runs = runs_on(daemon, n)
            judged[name] = (n, runs)
            if runs:
                out.add(name)
        self._placed[key] = (rev, judged)  # nodes gone are forgotten
        return out

    @staticmethod
    def _roll(
        ds: dict[str, Any], on_wanted: list[dict[str, Any]], desired: int, hash_: str
    ) -> list[dict[str, Any]]:
        """The old-template pods a RollingUpdate deletes now: unready ones, and ready
        ones while fewer than maxUnavailable nodes lack a ready daemon."""
        strategy = (ds.get("spec") or {}).get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return []
        old = [p for p in on_wanted if o.labels_of(p).get(REVISION_LABEL) != hash_]
        if not old:
            return []
        max_unavailable = max(
            1,
            resolve((strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1), desired, True),
        )
        unavailable = desired - sum(1 for p in on_wanted if pod_ready(p))
        out = [p for p in old if not pod_ready(p)]
        room = max_unavailable - unavailable
        for p in old:
            if room <= 0:
                break
            if pod_ready(p):
                out.append(p)
                room -= 1
        return out

    async def _create(self, ds: dict[str, Any], node: str, hash_: str) -> None:
        tmpl = (ds.get("spec") or {}).get("template") or {}
        tmd = tmpl.get("metadata") or {}
        spec = copy.deepcopy(tmpl.get("spec") or {})
        spec["tolerations"] = daemon_tolerations(spec)
        spec["nodeName"] = node
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "generateName": f"{o.name_of(ds)}-",
                "namespace": o.namespace_of(ds),
                "labels": {**(tmd.get("labels") or {}), REVISION_LABEL: hash_},
                "annotations": dict(tmd.get("annotations") or {}),
                "ownerReferences": [o.owner_reference(ds)],
            },
            "spec": spec,
        }
        await self._write(self.client.create(body, o.namespace_of(ds)))
        self._adds.setdefault(ds["metadata"].get("uid") or "", set()).add(node)

    async def _delete(self, pod: dict[str, Any]) -> None:
        try:
            await self._write(self.client.delete(PODS, o.name_of(pod), o.namespace_of(pod)))
        except NotFound:
            pass
