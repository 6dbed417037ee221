"""The ResourceClaim controller (kube-controller-manager's `resourceclaim`): claims made
from templates for pods, and claims given back when their pods end.

- A pod whose `spec.resourceClaims[]` names a ResourceClaimTemplate gets a claim made
  from it, named `<pod>-<claim name>-<5 random characters>` (generateName), carrying
  the annotation `resource.kubernetes.io/pod-claim-name` and a controller owner
  reference to the pod; its name goes to the pod's `status.resourceClaimStatuses`.
  A claim already made for that pod and claim name is reused, never made twice.
- A claim a pod shares with its gang (a `spec.resourceClaims[]` entry equal to one of
  its scheduling.k8s.io PodGroup's `spec.resourceClaims[]` naming a template) is made
  once for the PodGroup, owned by it, named `<podgroup>-<claim name>-<random>`, kept in
  the PodGroup's `status.resourceClaimStatuses`, and named in every member's status.
- When a pod ends (Succeeded, Failed, or deleted), it leaves the `status.reservedFor`
  of every claim that names it; a claim no one holds any more loses its allocation
  (its devices are free again), and a claim made for the pod is deleted.

Level-triggered on pods and claims: a restart finds what is left to do in the caches.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gpuyard.cluster.workloads.loop import Controller
from gpuyard.kube import objects as o
from gpuyard.kube.errors import AlreadyExists, NotFound
from gpuyard.kube.informer import InformerFactory, informer_maker
from gpuyard.kube.resources import PODS, RESOURCE_CLAIM_TEMPLATES, RESOURCE_CLAIMS
from gpuyard.scheduling.upstream import UPSTREAM_POD_GROUPS

log = logging.getLogger("gpuyard.cluster.workloads")

POD_CLAIM_NAME = "resource.kubernetes.io/pod-claim-name"


def _owner_pod(claim: dict[str, Any]) -> str | None:
    for ref in (claim.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("kind") == "Pod" and ref.get("controller"):
            return f"{o.namespace_of(claim)}/{ref.get('name')}"
    return None


def _reserved_pods(claim: dict[str, Any]) -> list[str]:
    ns = o.namespace_of(claim)
    return [
        f"{ns}/{r.get('name')}"
        for r in (claim.get("status") or {}).get("reservedFor") or ()
        if r.get("resource") == "pods"
    ]


def _done(pod: dict[str, Any] | None) -> bool:
    return pod is None or o.is_pod_terminal(pod)


class ResourceClaimController(Controller):
    what = "resourceclaim"

    def __init__(self, client: Any, informers: InformerFactory | None = None) -> None:
        super().__init__()
        self.client = client
        mk = informer_maker(client, informers)
        self.pods = mk(PODS, name="workloads-claims-pods")
        self.claims = mk(RESOURCE_CLAIMS, name="workloads-resourceclaims")
        self.templates = mk(RESOURCE_CLAIM_TEMPLATES, name="workloads-resourceclaimtemplates")
        self.groups = mk(UPSTREAM_POD_GROUPS, name="workloads-claims-podgroups")
        self.claims.add_index("owner", lambda c: _owner_pod(c))
        self.claims.add_index("reserved", lambda c: _reserved_pods(c) or None)
        self._made: dict[tuple[str, str], str] = {}  # (owner uid, claim name) -> claim made
        # one maker at a time of a PodGroup's claim (its members are reconciled together)
        self._group_locks: dict[tuple[str, str], asyncio.Lock] = {}

    def informers(self) -> tuple[Any, ...]:
        return (self.pods, self.claims, self.templates)

    async def run(self, stop: Any) -> None:
        # PodGroups are read when there (not waited for: a cluster may not serve them)
        self.groups.start()
        try:
            await super().run(stop)
        finally:
            await self.groups.stop()

    def _wire(self) -> None:
        def pod_event(pod: dict[str, Any]) -> None:
            if (pod.get("spec") or {}).get("resourceClaims") or self.claims.by_index(
                "reserved", o.key_of(pod)
            ):
                self.enqueue("pod " + o.key_of(pod))

        self.pods.add_handler(pod_event, lambda old, new: pod_event(new), pod_event)

        def claim_event(claim: dict[str, Any]) -> None:
            self.enqueue("claim " + o.key_of(claim))

        self.claims.add_handler(claim_event, lambda old, new: claim_event(new), None)

        def template_event(t: dict[str, Any]) -> None:
            for pod in self.pods.by_namespace(o.namespace_of(t)):
                if any(
                    e.get("resourceClaimTemplateName") == o.name_of(t)
                    for e in (pod.get("spec") or {}).get("resourceClaims") or ()
                ):
                    self.enqueue("pod " + o.key_of(pod))

        self.templates.add_handler(template_event, lambda old, new: template_event(new), None)

    async def reconcile(self, key: str) -> None:
        kind, _, k = key.partition(" ")
        if kind == "claim":
            claim = self.claims.cache.get(k)
            if claim is not None:
                await self._release(claim)
            return
        ns, name = k.split("/", 1)
        pod = self.pods.get(name, ns)
        for claim in self.claims.by_index("reserved", k):
            await self._release(claim)
        if _done(pod):
            for claim in self.claims.by_index("owner", k):
                if claim.get("metadata", {}).get("deletionTimestamp"):
                    continue
                if _done(pod) and not _reserved_pods(claim):
                    try:
                        await self._write(self.client.delete(RESOURCE_CLAIMS, o.name_of(claim), ns))
                    except NotFound:
                        pass
            return
        assert pod is not None
        if not pod.get("metadata", {}).get("deletionTimestamp"):
            await self._make_claims(pod)

    async def _release(self, claim: dict[str, Any]) -> None:
        """Drop the reservedFor entries of pods that ended; unallocate when none is left."""
        ns = o.namespace_of(claim)
        st = claim.get("status") or {}
        reserved = st.get("reservedFor") or []
        keep = []
        for r in reserved:
            pod = self.pods.get(str(r.get("name")), ns) if r.get("resource") == "pods" else None
            if r.get("resource") != "pods" or (
                not _done(pod) and (pod or {}).get("metadata", {}).get("uid") == r.get("uid")
            ):
                keep.append(r)
        if len(keep) == len(reserved):
            return  # no pod left it (a claim never reserved is not this controller's)
        status: dict[str, Any] = {"reservedFor": keep or None}
        if not keep:
            # The scheduler writes reservedFor before it binds: a claim no pod holds can
            # have no pod still to start, so its devices go back.
            status["allocation"] = None
        try:
            await self._write(
                self.client.patch_status(RESOURCE_CLAIMS, o.name_of(claim), {"status": status}, ns)
            )
        except NotFound:
            pass

    async def _make_claims(self, pod: dict[str, Any]) -> None:
        md = pod["metadata"]
        ns, name, uid = md.get("namespace") or "", md["name"], md.get("uid") or ""
        statuses = list((pod.get("status") or {}).get("resourceClaimStatuses") or [])
        have = {s.get("name") for s in statuses}
        owned = {
            (c["metadata"].get("annotations") or {}).get(POD_CLAIM_NAME): o.name_of(c)
            for c in self.claims.by_index("owner", o.key_of(pod))
            if any(r.get("uid") == uid for r in c["metadata"].get("ownerReferences") or ())
        }
        added = False
        for e in (pod.get("spec") or {}).get("resourceClaims") or ():
            tname = e.get("resourceClaimTemplateName")
            cname = e.get("name")
            if not tname or cname in have:
                continue
            made = owned.get(cname) or self._made.get((uid, cname))
            if made is None and self._group_entry(pod, e) is not None:
                made = await self._group_claim(pod, e)
                if made is None:
                    continue
            if made is None:
                t = self.templates.get(tname, ns)
                if t is None:
                    continue  # made once the template exists
                tmd = (t.get("spec") or {}).get("metadata") or {}
                obj = {
                    "apiVersion": "resource.k8s.io/v1",
                    "kind": "ResourceClaim",
                    "metadata": {
                        "generateName": f"{name}-{cname}-",
                        "namespace": ns,
                        "labels": dict(tmd.get("labels") or {}),
                        "annotations": {**(tmd.get("annotations") or {}), POD_CLAIM_NAME: cname},
                        "ownerReferences": [
                            {
                                "apiVersion": "v1",
                                "kind": "Pod",
                                "name": name,
                                "uid": uid,
                                "controller": True,
                                "blockOwnerDeletion": True,
                            }
                        ],
                    },
                    "spec": dict((t.get("spec") or {}).get("spec") or {}),
                }
                try:
                    got = await self._write(self.client.create(obj))
                except AlreadyExists:
                    continue
                made = o.name_of(got)
                self._made[(uid, cname)] = made
            statuses.append({"name": cname, "resourceClaimName": made})
            added = True
        if added:
            statuses.sort(key=lambda x: str(x.get("name")))
            try:
                await self._write(
                    self.client.patch_status(
                        PODS, name, {"status": {"resourceClaimStatuses": statuses}}, ns
                    )
                )
            except NotFound:
                pass

    def _group_entry(self, pod: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any] | None:
        """The PodGroup (scheduling.k8s.io) of the pod when it shares this claim: its
        spec.resourceClaims has the same entry."""
        sg = (pod.get("spec") or {}).get("schedulingGroup") or {}
        name = sg.get("podGroupName")
        if not name:
            return None
        pg = self.groups.get(name, o.namespace_of(pod))
        if pg is None:
            return None
        for g in (pg.get("spec") or {}).get("resourceClaims") or ():
            if g == entry:
                return pg
        return None

    async def _group_claim(self, pod: dict[str, Any], entry: dict[str, Any]) -> str | None:
        """The claim made once for the PodGroup from the entry's template (made now when
        it is not there yet); None while its template is missing."""
        pg = self._group_entry(pod, entry)
        assert pg is not None
        key = ((pg.get("metadata") or {}).get("uid") or "", str(entry.get("name")))
        lock = self._group_locks.setdefault(key, asyncio.Lock())
        async with lock:
            return await self._group_claim_locked(pg, entry)

    async def _group_claim_locked(self, pg: dict[str, Any], entry: dict[str, Any]) -> str | None:
        ns, gname, cname = o.namespace_of(pg), o.name_of(pg), str(entry.get("name"))
        for st in (pg.get("status") or {}).get("resourceClaimStatuses") or ():
            if st.get("name") == cname and st.get("resourceClaimName"):
                return str(st["resourceClaimName"])
        uid = (pg.get("metadata") or {}).get("uid") or ""
        made = self._made.get((uid, cname))
        if made is None:
            for c in self.claims.by_namespace(ns):
                md = c.get("metadata") or {}
                if (md.get("annotations") or {}).get(POD_CLAIM_NAME) == cname and any(
                    r.get("uid") == uid and r.get("controller")
                    for r in md.get("ownerReferences") or ()
                ):
                    made = o.name_of(c)
        if made is None:
            t = self.templates.get(str(entry.get("resourceClaimTemplateName")), ns)
            if t is None:
                return None
            tmd = (t.get("spec") or {}).get("metadata") or {}
            got = await self._write(
                self.client.create(
                    {
                        "apiVersion": "resource.k8s.io/v1",
                        "kind": "ResourceClaim",
                        "metadata": {
                            "generateName": f"{gname}-{cname}-",
                            "namespace": ns,
                            "labels": dict(tmd.get("labels") or {}),
                            "annotations": {
                                **(tmd.get("annotations") or {}),
                                POD_CLAIM_NAME: cname,
                            },
                            "ownerReferences": [
                                {
                                    "apiVersion": UPSTREAM_POD_GROUPS.api_version,
                                    "kind": "PodGroup",
                                    "name": gname,
                                    "uid": uid,
                                    "controller": True,
                                    "blockOwnerDeletion": True,
                                }
                            ],
                        },
                        "spec": dict((t.get("spec") or {}).get("spec") or {}),
                    }
                )
            )
            made = o.name_of(got)
            self._made[(uid, cname)] = made
        statuses = [
            st
            for st in (pg.get("status") or {}).get("resourceClaimStatuses") or ()
            if st.get("name") != cname
        ]
        statuses.append({"name": cname, "resourceClaimName": made})
        try:
            await self._write(
                self.client.patch_status(
                    UPSTREAM_POD_GROUPS, gname, {"status": {"resourceClaimStatuses": statuses}}, ns
                )
            )
        except NotFound:
            pass
        return made
