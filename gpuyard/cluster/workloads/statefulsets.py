"""The StatefulSet controller: pods with stable names <set>-<ordinal>, level-triggered.

Informers on StatefulSets and pods; every change queues the set concerned. With
podManagementPolicy OrderedReady (the default) pods are made one at a time in ordinal
order, the next only once every lower one is Running and Ready, and removed from the
highest ordinal down, one at a time; with Parallel all at once. A pod that failed or
succeeded is deleted and made again under the same name. The update revision is a hash
of the pod template (pods carry it as the controller-revision-hash label); a
RollingUpdate replaces pods at ordinals >= its partition from the highest down, one at
a time and only while every pod is Ready; OnDelete leaves them. Status (replicas,
readyReplicas, availableReplicas, currentReplicas, updatedReplicas, currentRevision,
updateRevision, observedGeneration) is written only when it changes, so `kubectl
rollout status sts` ends. Each template the set has had is kept as a ControllerRevision
(gpuyard.cluster.workloads.revisions), so `kubectl rollout history` and `rollout undo`
work. volumeClaimTemplates give each ordinal its PersistentVolumeClaims
<claim>-<set>-<ordinal> (labelled with the set's selector, mounted in place of the
template's volume of that name, kept across pod restarts and scale downs; owned by the
set, so deleted with it, when persistentVolumeClaimRetentionPolicy.whenDeleted is
Delete). The simulated cluster has no storage: claims stay Pending and pods run anyway.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import orjson

from gpuyard.cluster.workloads.loop import Controller
from gpuyard.cluster.workloads.replicasets import controller_of, pod_ready
from gpuyard.cluster.workloads.revisions import REVISIONS, Revisions
from gpuyard.kube import objects as o
from gpuyard.kube.errors import AlreadyExists
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.resources import BUILTIN, PODS

log = logging.getLogger("gpuyard.cluster.workloads")

STATEFUL_SETS = BUILTIN[("apps/v1", "StatefulSet")]
REVISION_LABEL = "controller-revision-hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def revision_of(sts: dict[str, Any]) -> str:
    """The update revision's name: <set>-<hash of the pod template>."""
    tmpl = (sts.get("spec") or {}).get("template") or {}
    digest = hashlib.sha256(orjson.dumps(tmpl, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"{o.name_of(sts)}-{digest[:10]}"


def ordinal_of(sts_name: str, pod: dict[str, Any]) -> int | None:
    name = o.name_of(pod)
    prefix = sts_name + "-"
    if not name.startswith(prefix):
        return None
    tail = name[len(prefix) :]
    return int(tail) if tail.isdigit() else None


def _healthy(pod: dict[str, Any]) -> bool:
    """Running and Ready, and not being deleted."""
    st = pod.get("status") or {}
    return (
        st.get("phase") == "Running"
        and pod_ready(pod)
        and not (pod.get("metadata") or {}).get("deletionTimestamp")
    )


class StatefulSetController(Controller):
    what = "statefulset"

    def __init__(self, client: Any, informers: InformerFactory | None = None) -> None:
        super().__init__()
        self.client = client
        mk = informer_maker(client, informers)
        self.sets = mk(STATEFUL_SETS, name="workloads-statefulsets")
        self.pods = mk(PODS, name="workloads-pods")
        self.pods.add_index("sts-owner", self._owner_index)
        self.revision_cache = mk(REVISIONS, name="workloads-revisions")
        self.revisions = Revisions(self, self.revision_cache, "StatefulSet")
        # set key -> pod names created / deleted that the pod cache has not shown yet
        self._adds: dict[str, set[str]] = {}

    @staticmethod
    def _owner_index(pod: dict[str, Any]) -> str | None:
        ref = controller_of(pod)
        if ref is None or ref.get("kind") != "StatefulSet":
            return None
        return f"{o.namespace_of(pod)}/{ref.get('name')}"

    def informers(self) -> tuple[Any, ...]:
        return (self.pods, self.revision_cache, self.sets)

    def _wire(self) -> None:
        def sts_ev(sts: dict[str, Any]) -> None:
            self.enqueue(o.key_of(sts))

        self.sets.add_handler(sts_ev, lambda _old, new: sts_ev(new), sts_ev)

        def pod_ev(pod: dict[str, Any]) -> None:
            owner = self._owner_index(pod)
            if owner is not None:
                self.enqueue(owner)

        self.pods.add_handler(pod_ev, lambda _old, new: pod_ev(new), pod_ev)

    async def reconcile(self, key: str) -> None:
        ns, name = key.split("/", 1)
        sts = self.sets.get(name, ns)
        if sts is None:
            self._adds.pop(key, None)
            self._dels.pop(key, None)
            self.revisions.forget(key)
            return
        md = sts["metadata"]
        uid = md.get("uid")
        owned = [p for p in self.pods.by_index("sts-owner", key) if controller_of(p)["uid"] == uid]  # type: ignore[index]
        by_ord: dict[int, dict[str, Any]] = {}
        for p in owned:
            i = ordinal_of(name, p)
            if i is not None:
                by_ord[i] = p
        adds = self._adds.setdefault(key, set())
        adds -= {o.name_of(p) for p in owned}
        dels = self._dels.setdefault(key, set())
        dels &= {o.name_of(p) for p in owned if not p["metadata"].get("deletionTimestamp")}
        update_rev = revision_of(sts)
        if not md.get("deletionTimestamp"):
            await self.revisions.ensure(
                sts, update_rev, (sts.get("spec") or {}).get("template") or {}
            )
            await self._converge(sts, key, ns, by_ord, adds, dels, update_rev)
        current_rev = await self._write_status(sts, key, by_ord, update_rev)
        if not md.get("deletionTimestamp"):
            in_use = {update_rev, current_rev}
            in_use |= {o.labels_of(p).get(REVISION_LABEL) or "" for p in by_ord.values()}
            await self.revisions.prune(sts, in_use)

    async def _converge(
        self,
        sts: dict[str, Any],
        key: str,
        ns: str,
        by_ord: dict[int, dict[str, Any]],
        adds: set[str],
        dels: set[str],
        update_rev: str,
    ) -> None:
        spec = sts.get("spec") or {}
        name = o.name_of(sts)
        want = int(spec.get("replicas", 1))
        parallel = spec.get("podManagementPolicy") == "Parallel"

        def pending(i: int) -> bool:  # being made or removed, not settled yet
            pn = f"{name}-{i}"
            p = by_ord.get(i)
            return (
                pn in adds
                or pn in dels
                or (p is not None and bool(p["metadata"].get("deletionTimestamp")))
            )

        # failed or finished pods are replaced under the same name
        for i, p in sorted(by_ord.items()):
            if o.is_pod_terminal(p) and not pending(i):
                await self._delete_pods(key, ns, [p])
        # make the missing ordinals
        for i in range(want):
            if i in by_ord or pending(i):
                if not parallel and not (i in by_ord and _healthy(by_ord[i])):
                    return
                continue
            await self._create(sts, key, i, update_rev)
            if not parallel:
                return
        # scale down from the highest ordinal
        extra = sorted((i for i in by_ord if i >= want), reverse=True)
        if extra:
            if parallel:
                await self._delete_pods(key, ns, [by_ord[i] for i in extra if not pending(i)])
            elif not any(pending(i) for i in by_ord) and all(
                _healthy(by_ord[i]) for i in by_ord if i < want
            ):
                await self._delete_pods(key, ns, [by_ord[extra[0]]])
            return
        # rolling update, from the highest ordinal down to the partition
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return
        partition = int((strategy.get("rollingUpdate") or {}).get("partition") or 0)
        if any(pending(i) or not _healthy(p) for i, p in by_ord.items()):
            return
        for i in sorted(by_ord, reverse=True):
            if i < partition:
                break
            if o.labels_of(by_ord[i]).get(REVISION_LABEL) != update_rev:
                await self._delete_pods(key, ns, [by_ord[i]])
                return

    async def _create(self, sts: dict[str, Any], key: str, i: int, rev: str) -> None:
        spec = sts.get("spec") or {}
        tmpl = spec.get("template") or {}
        tmd = tmpl.get("metadata") or {}
        ns = o.namespace_of(sts)
        pod_name = f"{o.name_of(sts)}-{i}"
        pod_spec = dict(tmpl.get("spec") or {})
        pod_spec.setdefault("hostname", pod_name)
        if spec.get("serviceName"):
            pod_spec.setdefault("subdomain", spec["serviceName"])
        labels = dict(tmd.get("labels") or {})
        labels.update({REVISION_LABEL: rev, POD_NAME_LABEL: pod_name, POD_INDEX_LABEL: str(i)})
        claims = await self._claims(sts, i)
        if claims:
            vols = [v for v in pod_spec.get("volumes") or [] if v.get("name") not in claims]
            pod_spec["volumes"] = vols + [
                {"name": t, "persistentVolumeClaim": {"claimName": c}} for t, c in claims.items()
            ]
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": ns,
                "labels": labels,
                "annotations": dict(tmd.get("annotations") or {}),
                "ownerReferences": [o.owner_reference(sts)],
            },
            "spec": pod_spec,
        }
        self._adds.setdefault(key, set()).add(pod_name)
        try:
            async with self._sem:
                await self.client.create(body, ns)
            self.writes += 1
        except AlreadyExists:
            pass  # the cache lags; the pod watch will show it
        except BaseException:
            self._adds[key].discard(pod_name)
            raise

    async def _claims(self, sts: dict[str, Any], i: int) -> dict[str, str]:
        """Make the ordinal's PersistentVolumeClaims that are missing; returns template
        name -> claim name."""
        spec = sts.get("spec") or {}
        ns = o.namespace_of(sts)
        policy = spec.get("persistentVolumeClaimRetentionPolicy") or {}
        match = (spec.get("selector") or {}).get("matchLabels") or {}
        out: dict[str, str] = {}
        for tmpl in spec.get("volumeClaimTemplates") or []:
            tname = (tmpl.get("metadata") or {}).get("name")
            if not tname:
                continue
            claim = f"{tname}-{o.name_of(sts)}-{i}"
            out[tname] = claim
            md: dict[str, Any] = {
                "name": claim,
                "namespace": ns,
                "labels": {**((tmpl.get("metadata") or {}).get("labels") or {}), **match},
            }
            if ann := (tmpl.get("metadata") or {}).get("annotations"):
                md["annotations"] = dict(ann)
            if policy.get("whenDeleted") == "Delete":
                md["ownerReferences"] = [o.owner_reference(sts, controller=False)]
            body = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": md,
                "spec": dict(tmpl.get("spec") or {}),
            }
            try:
                await self._write(self.client.create(body, ns))
            except AlreadyExists:
                pass  # kept from an earlier pod of this ordinal
        return out

    async def _write_status(
        self, sts: dict[str, Any], key: str, by_ord: dict[int, dict[str, Any]], update_rev: str
    ) -> str:
        """Write the status when it changed; returns the current revision."""
        cur = sts.get("status") or {}
        active = [
            p
            for p in by_ord.values()
            if not o.is_pod_terminal(p) and not p["metadata"].get("deletionTimestamp")
        ]
        want = int((sts.get("spec") or {}).get("replicas", 1))
        current_rev = cur.get("currentRevision") or update_rev
        updated = sum(1 for p in active if o.labels_of(p).get(REVISION_LABEL) == update_rev)
        if updated == want == len(active) and all(_healthy(p) for p in active):
            current_rev = update_rev
        ready = sum(1 for p in active if pod_ready(p))
        status: dict[str, Any] = {
            "replicas": len(active),
            "readyReplicas": ready,
            "availableReplicas": ready,
            "currentReplicas": sum(
                1 for p in active if o.labels_of(p).get(REVISION_LABEL) == current_rev
            ),
            "updatedReplicas": updated,
            "currentRevision": current_rev,
            "updateRevision": update_rev,
            "observedGeneration": int(sts["metadata"].get("generation") or 0),
            "collisionCount": int(cur.get("collisionCount") or 0),
        }
        if {k: cur.get(k, 0) for k in status} == status:
            return current_rev
        ns, name = key.split("/", 1)
        async with self._sem:
            await self.client.patch_status(STATEFUL_SETS, name, {"status": status}, ns)
        self.writes += 1
        return current_rev
